"""The memory policy: which models stay in memory, where new ones go, and what happens when memory runs out.

Model servers decide for their users which model leaves memory and when;
these modules do it for a notebook, each a small pure function of its inputs
where it can be, so that the manager's share stays small and every rule is
tested with data:

- :mod:`~nbmodels.core.policy.sizes`: ``"8GiB"``, ``0.8``, ``"30m"``, ``-1``;
- :mod:`~nbmodels.core.policy.budget`: budgets per device and the model count;
- :mod:`~nbmodels.core.policy.eviction`: who leaves to make room, in what order;
- :mod:`~nbmodels.core.policy.estimate`: a model's size before it loads;
- :mod:`~nbmodels.core.policy.placement`: ``device="auto"`` from device readings;
- :mod:`~nbmodels.core.policy.keepalive`: the one timer thread of idle unloads;
- :mod:`~nbmodels.core.policy.oom`: out of memory, and what holds the device.

The manager (:class:`nbmodels.core.ModelManager`) applies them under its
locks: it never holds its own lock while a model loads or is released, and one
decision about room is made at a time.
"""
