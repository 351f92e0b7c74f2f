"""The worker process: ``python -m nbmodels.core.runners.worker FD PARENT_PID``.

A fresh interpreter (spawned, never forked, so CUDA works in it) that imports this
module and never the kernel's ``__main__``. It talks to the kernel over the socket
``FD``; a receiving thread answers control requests (memory, ping, interrupt, stop)
at once and queues the rest for the main thread, which serves them in order.

It runs in a session of its own, so a Ctrl-C (or Jupyter's interrupt, sent to the
kernel's process group) reaches only the kernel; the kernel then forwards it as an
interrupt request for the call it was waiting on.

It never outlives the kernel: on Linux the parent-death signal (SIGKILL) is set
first thing, and on every system the receiving thread ends the process when the
kernel's end of the socket closes (which is what the kernel's death does).
"""

from __future__ import annotations

import ctypes
import faulthandler
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
from multiprocessing.connection import Connection
from typing import Any

from nbmodels.core.runners import protocol, transfer
from nbmodels.core.runners.host import ModelHost

_PR_SET_PDEATHSIG = 1
_EXIT_PARENT_GONE = 75


def die_with_parent(parent_pid: int) -> None:
    """Ask Linux to SIGKILL this process when its parent ends; exit now if it already has."""
    if sys.platform.startswith("linux"):
        try:
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass  # the socket watchdog still covers it
    if os.getppid() != parent_pid:  # the parent died before the signal was set
        os._exit(_EXIT_PARENT_GONE)


class Worker:
    """The serving loop of one worker process."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self.host = ModelHost()
        self.send_lock = threading.Lock()
        self.work: queue.SimpleQueue[tuple[int, str, bytes] | None] = queue.SimpleQueue()
        self.current: int | None = None  # the call id running on the main thread
        self.current_lock = threading.Lock()
        self.results_on_cpu = False

    def send(self, call_id: int, status: int, body: bytes) -> None:
        """Send one reply (two frames) whole: a forwarded interrupt waits until both are out."""
        blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
        try:
            with self.send_lock:
                self.conn.send_bytes(pickle.dumps((call_id, status)))
                self.conn.send_bytes(body)
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)

    def receive_forever(self) -> None:
        """The receiving thread: control requests now, the rest to the main thread; the kernel gone means exit."""
        while True:
            try:
                call_id, op = pickle.loads(self.conn.recv_bytes())
                body = self.conn.recv_bytes()
            except (EOFError, OSError):
                os._exit(_EXIT_PARENT_GONE)  # the kernel closed its end or died: never outlive it
            if op not in protocol.CONTROL:
                self.work.put((call_id, op, body))
            elif op == protocol.STOP:
                self.work.put(None)
            elif op == protocol.INTERRUPT:
                self.interrupt(pickle.loads(body))
            else:
                self.answer(call_id, op, body)

    def interrupt(self, call_id: int) -> None:
        """Raise KeyboardInterrupt in the main thread if it still runs ``call_id`` (the kernel was interrupted).

        A real SIGINT to the main thread, not ``_thread.interrupt_main()``: only a signal
        wakes a blocking call such as ``time.sleep`` or a read.
        """
        with self.current_lock:
            main = threading.main_thread().ident
            if self.current == call_id and main is not None:
                signal.pthread_kill(main, signal.SIGINT)

    def answer(self, call_id: int, op: str, body: bytes) -> None:
        try:
            value: Any = self.host.memory() if op == protocol.MEMORY else os.getpid()
            self.send(call_id, protocol.OK, transfer.dumps(value, refuse_main=False))
        except Exception as exc:
            self.send(call_id, protocol.ERROR, pickle.dumps(protocol.error_reply(exc)))

    def serve(self) -> None:
        """The main thread: run requests in order until a stop request or a poisoned process."""
        while True:
            try:
                item = self.work.get()
                if item is None:
                    break
                if not self.run(*item):
                    os._exit(protocol.EXIT_POISONED)
            except KeyboardInterrupt:
                continue  # an interrupt that arrived just after its call ended: nothing to stop
        self.host.release()

    def run(self, call_id: int, op: str, body: bytes) -> bool:
        """Serve one request and reply; False when the error poisoned this process."""
        with self.current_lock:
            self.current = call_id
        try:
            try:
                result = self.handle(op, transfer.loads(body))
            finally:
                with self.current_lock:
                    self.current = None
            try:
                reply = transfer.dumps(result, results_on_cpu=self.results_on_cpu, refuse_main=False)
            except transfer.NotTransferable as exc:
                if exc.__cause__ is not None and protocol.poisons_process(exc.__cause__):
                    raise exc.__cause__ from None  # a CUDA error that surfaced while sharing the result
                self.send(call_id, protocol.TRANSFER, pickle.dumps(protocol.TransferFailure(exc.what, exc.why)))
                return True
            del result
            self.send(call_id, protocol.OK, reply)
            return True
        except BaseException as exc:
            error = protocol.error_reply(exc)
            self.send(call_id, protocol.ERROR, pickle.dumps(error))
            return not error.fatal

    def handle(self, op: str, payload: Any) -> Any:
        if op == protocol.CALL:
            path, args, kwargs = payload
            return self.host.call(path, args, kwargs)
        if op == protocol.ATTRIBUTE:
            return self.host.attribute(payload)
        if op == protocol.LOAD:
            self.results_on_cpu = payload.results_on_cpu
            return self.host.load(payload)
        if op == protocol.MEASURE:
            return self.host.measure()
        raise ValueError(f"unknown request {op!r}")


def main(argv: list[str]) -> None:
    fd, parent_pid = int(argv[0]), int(argv[1])
    die_with_parent(parent_pid)
    faulthandler.enable()  # a segfault prints the Python stack, which the kernel quotes in WorkerDiedError
    conn = Connection(fd)
    multiprocessing.current_process().authkey = conn.recv_bytes()  # torch shares fds through an authed socket
    import torch  # what makes a started worker fast to load into
    import torch.multiprocessing  # noqa: F401  (registers torch's sharing reductions)

    # A kernel's interrupt reaches a call as a SIGINT to this main thread: Python's own handler, whatever the
    # kernel had (one started in the background or under nohup passes SIGINT on ignored, and nothing would stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    worker = Worker(conn)
    worker.send(0, protocol.OK, pickle.dumps(os.getpid()))
    threading.Thread(target=worker.receive_forever, name="nbmodels-worker-receiver", daemon=True).start()
    worker.serve()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # a polite stop: the model is released; skip the slow interpreter teardown


if __name__ == "__main__":
    main(sys.argv[1:])
