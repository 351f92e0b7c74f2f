"""Run as a script by ``test_ray_loopback.py``: a local Ray started by nbmodels, and where it listens."""

from __future__ import annotations

import json
import os
import warnings

import psutil
import torch

warnings.simplefilter("ignore")

from nbmodels.core import runners  # noqa: E402


def listening() -> list[str]:
    me = psutil.Process()
    pids = {me.pid} | {child.pid for child in me.children(recursive=True)}
    found = set()
    for connection in psutil.net_connections(kind="inet"):
        if connection.status == psutil.CONN_LISTEN and connection.pid in pids:
            found.add(connection.laddr.ip)
    return sorted(found)


remote = runners.start("ray", "mlp", "demo:mlp", kwargs={"hidden": 8})
works = tuple(remote(torch.ones(1, 64)).shape) == (1, 10)
addresses = listening()
remote.stop()
import ray  # noqa: E402

ray.shutdown()
token = os.path.expanduser(os.path.join("~", ".ray", "auth_token"))
mode = oct(os.stat(token).st_mode & 0o777) if os.path.exists(token) else None
print(json.dumps({"works": works, "listening": addresses, "token_mode": mode}))
