"""The real gunicorn, started as the Procfile starts it, on 127.0.0.1 and a free port.

Everything started here is stopped on the way out (SIGTERM, then SIGKILL to the process group),
and every wait is bounded. A worker's memory is read from /proc/<pid>/status (VmHWM, VmRSS).
"""
from __future__ import annotations

import os
import subprocess
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Mapping

import httpx

from tests.processes import free_port, stop

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"
PRODUCT_APP = "receiver:create_app()"
NAIVE_APP = "bench.naive:create_app()"


class ServerError(RuntimeError):
    """A server did not start; the message carries the end of its log."""


def web_command(app: str = PRODUCT_APP) -> list[str]:
    """The Procfile's `web:` command, with `app` in place of the product's app for the naive receiver."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        name, colon, command = line.partition(":")
        if colon and name.strip() == "web":
            return ["bash", "-c", "exec " + command.strip().replace(f"'{PRODUCT_APP}'", f"'{app}'")]
    raise ServerError("the Procfile has no web: line")


@dataclass
class Server:
    url: str
    popen: subprocess.Popen
    log_path: Path

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def worker_pids(self) -> list[int]:
        """The gunicorn master's children (the workers)."""
        master = self.popen.pid
        children = Path(f"/proc/{master}/task/{master}/children")
        if children.exists():
            return [int(pid) for pid in children.read_text().split()]
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    stat = (entry / "stat").read_text()
                except OSError:
                    continue
                if int(stat.rsplit(")", 1)[1].split()[1]) == master:
                    found.append(int(entry.name))
        return found

    def workers_cpu_seconds(self) -> float:
        """User + system CPU time used so far by the current workers (from /proc/<pid>/stat)."""
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of stat)
        return total / ticks

    def worker_memory_kib(self) -> dict[int, dict[str, int]]:
        """{pid: {"VmHWM": kib, "VmRSS": kib}} for every worker."""
        memory = {}
        for pid in self.worker_pids():
            try:
                lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            except OSError:
                continue
            memory[pid] = {name: int(value.split()[0]) for name, _, value in
                           (line.partition(":") for line in lines) if name in ("VmHWM", "VmRSS")}
        return memory


@contextmanager
def gunicorn(db_path: Path, env: Mapping[str, str] | None = None, *, app: str = PRODUCT_APP, workers: int = 2,
             extra_args: str = "", start_timeout: float = 30.0) -> Iterator[Server]:
    """The web process on `db_path`, as `WEB_CONCURRENCY=workers` and the Procfile run it.

    gunicorn.conf.py binds 0.0.0.0:$PORT; GUNICORN_CMD_ARGS (applied after the config file) binds
    127.0.0.1 instead and leaves gunicorn's shared control socket off.
    """
    port = free_port()
    server_env = {
        **os.environ,
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', os.defpath)}",
        "PYTHONUNBUFFERED": "1",
        "DATABASE_URL": f"sqlite:///{Path(db_path).resolve()}",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --no-control-socket {extra_args}".strip(),
        **(env or {}),
    }
    fd, log_name = tempfile.mkstemp(prefix="ens-status-bench-", suffix=".log")
    log_path = Path(log_name)
    with os.fdopen(fd, "wb") as log_file:
        popen = subprocess.Popen(web_command(app), cwd=ROOT, env=server_env, stdin=subprocess.DEVNULL,
                                 stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
    server = Server(f"http://127.0.0.1:{port}", popen, log_path)
    try:
        _wait_ready(server, workers, start_timeout)
        yield server
    finally:
        stop(popen)
        log_path.unlink(missing_ok=True)


def _wait_ready(server: Server, workers: int, timeout: float) -> None:
    """Until /healthz answers 200, every worker is forked, and the workers have gone idle.

    A worker loads the app after it is forked, and the first one to load answers /healthz while
    the others may still be importing: their CPU time stops growing once they are done.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.popen.poll() is not None:
            raise ServerError(f"gunicorn exited with {server.popen.returncode}:\n{server.log_tail()}")
        try:
            ready = httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
        if ready and len(server.worker_pids()) >= workers:
            before = server.workers_cpu_seconds()
            time.sleep(0.3)
            if server.workers_cpu_seconds() - before < 0.03:
                return
        else:
            time.sleep(0.1)
    raise ServerError(f"gunicorn not ready after {timeout} s:\n{server.log_tail()}")
