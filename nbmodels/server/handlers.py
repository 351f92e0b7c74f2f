"""The REST API under ``/nbmodels/api/``: this server's kernels with their models, and releasing them.

``GET  kernels``                  every kernel of this server, its models, and the GPUs
``POST kernels/<id>/unload``      ``{"name": ..., "force": false, "dry_run": false}``: release one model
``POST kernels/<id>/free``        ``{"force": false, "dry_run": false}``: release every model of a kernel

Every handler needs a logged-in user (``@authenticated``) and jupyter_server's
authorizer's consent on the ``kernels`` resource (reading for GET, writing
for POST: releasing models acts on a kernel as interrupting it does); POSTs
made with a login cookie need the XSRF token (APIHandler checks it). The
kernel is the server's own, named by its id: a request never names a pid, a
path or a socket. Requests to a kernel go through its owner-only control
socket (:mod:`nbmodels.machine.control`), on a thread, so a slow kernel never
holds up the server.
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from nbmodels.core.nvml import GpuReadings, read_gpus
from nbmodels.machine.control import send_request
from nbmodels.machine.errors import MachineError
from nbmodels.machine.state import VERSION, KernelState
from nbmodels.server.kernels import ServerKernel, listing, match, read_states, state_directories

log = logging.getLogger("nbmodels")

AUTH_RESOURCE = "kernels"
REQUEST_TIMEOUT = 30.0  # a free with a holder search on a large notebook takes seconds, not more


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE

    def initialize(self, runtime_dir: str | None = None, gpus: GpuReadings | None = None) -> None:
        self._runtime_dir = runtime_dir
        self._gpus = gpus  # recorded readings replace NVML's (tests, machines without a GPU driver)

    def server_kernels(self) -> list[ServerKernel]:
        kernels = []
        manager = self.kernel_manager
        for kernel_id in manager.list_kernel_ids():
            try:
                model = manager.kernel_model(kernel_id)  # type: ignore[no-untyped-call]
                connection = manager.get_kernel(kernel_id).connection_file
            except (KeyError, tornado.web.HTTPError):  # it ended meanwhile
                continue
            kernels.append(
                ServerKernel(
                    kernel_id=kernel_id,
                    connection_file=connection or None,
                    kernel_name=str(model.get("name", "")),
                    execution_state=str(model.get("execution_state", "")),
                )
            )
        return kernels

    def readings(self) -> GpuReadings:
        return self._gpus if self._gpus is not None else read_gpus()

    def fail(self, status: int, message: str) -> None:
        self.set_status(status)
        self.finish(json.dumps({"message": message}))


class KernelsHandler(_Base):
    @tornado.web.authenticated
    @authorized
    async def get(self) -> None:
        kernels = self.server_kernels()
        directories = state_directories(kernels, self._runtime_dir)
        body = await asyncio.get_running_loop().run_in_executor(
            None, lambda: listing(kernels, directories, self.readings())
        )
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(body))


class ReleaseHandler(_Base):
    """``unload`` (one model, ``name`` required) or ``free`` (every model), with ``force`` and ``dry_run``."""

    @tornado.web.authenticated
    @authorized
    async def post(self, kernel_id: str, action: str) -> None:
        try:
            body = self.get_json_body() or {}
        except tornado.web.HTTPError:
            return self.fail(400, "the request body is not JSON")
        if not isinstance(body, dict):
            return self.fail(400, "the request body must be a JSON object")
        name = body.get("name")
        force, dry_run = body.get("force", False), body.get("dry_run", False)
        if not isinstance(force, bool) or not isinstance(dry_run, bool):
            return self.fail(400, "force and dry_run must be true or false")
        if action == "unload" and (not isinstance(name, str) or not name):
            return self.fail(400, 'unload needs the model\'s name: {"name": "..."}')
        if action == "free":
            name = None
        kernel = next((k for k in self.server_kernels() if k.kernel_id == kernel_id), None)
        if kernel is None:
            return self.fail(404, f"no kernel with id {kernel_id!r} runs in this server (has it ended?)")
        directories = state_directories([kernel], self._runtime_dir)
        loop = asyncio.get_running_loop()
        state = await loop.run_in_executor(None, lambda: match([kernel], read_states(directories)).get(kernel_id))
        if state is None:
            return self.fail(409, f"kernel {kernel_id} has not loaded nbmodels (%load_ext nbmodels): no models to free")
        if state.socket is None:
            return self.fail(409, f"kernel {kernel_id} has no control socket (it could not make one); free it inside")
        request = {"request": "release", "version": VERSION, "name": name, "force": force, "dry_run": dry_run}
        try:
            reply = await loop.run_in_executor(None, lambda: _send(state, request))
        except MachineError as exc:
            return self.fail(502, f"kernel {kernel_id}: {exc}")
        if not reply.get("ok"):
            status = 404 if reply.get("not_found") else 409
            return self.fail(status, f"kernel {kernel_id}: {reply.get('error', 'refused, without a reason')}")
        log.info("nbmodels: %s %s in kernel %s%s", action, name or "every model", kernel_id, " (dry run)" * dry_run)
        self.finish(json.dumps({"kernel": kernel_id, "action": action, **reply}))


def _send(state: KernelState, request: dict[str, Any]) -> dict[str, Any]:
    assert state.socket is not None
    return send_request(Path(state.socket), state.pid, request, timeout=REQUEST_TIMEOUT)


__all__ = ["AUTH_RESOURCE", "KernelsHandler", "ReleaseHandler"]
