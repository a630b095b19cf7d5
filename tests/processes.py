"""Real processes for tests: the Procfile's own commands on 127.0.0.1, always stopped afterwards.

`run_process` starts any command in its own process group with its output in a log file;
`run_web` starts the Procfile's `web:` line (the real gunicorn) and waits for `/healthz`.
"""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Mapping, Sequence

import httpx
import pytest

ROOT = Path(__file__).resolve().parent.parent
VENV_BIN = ROOT / ".venv" / "bin"


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def procfile_command(name: str) -> str:
    """The command of the Procfile's `name:` line, exactly as written."""
    for line in (ROOT / "Procfile").read_text().splitlines():
        process, colon, command = line.partition(":")
        if colon and process.strip() == name:
            return command.strip()
    raise LookupError(f"the Procfile has no {name!r} process")


def process_env(env: Mapping[str, str]) -> dict[str, str]:
    """The (already cleaned) test environment plus `env`, with the venv's tools first on PATH."""
    merged = {**os.environ, **env}
    merged["PATH"] = f"{VENV_BIN}{os.pathsep}{merged.get('PATH', os.defpath)}"
    merged.setdefault("PYTHONUNBUFFERED", "1")
    return merged


class Process:
    """A started process: its pid, whether it still runs, and everything it wrote so far."""

    def __init__(self, popen: subprocess.Popen, log_path: Path):
        self.popen = popen
        self.log_path = log_path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll `ready` until it is true; fail the test with the process's log if it never is."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.running():
                pytest.fail(f"{what}: the process exited with {self.popen.returncode}; its log:\n{self.log()}")
            try:
                if ready():
                    return
            except (httpx.HTTPError, OSError):
                pass
            time.sleep(0.1)
        pytest.fail(f"{what}: not ready after {timeout} s; its log:\n{self.log()}")


@contextmanager
def run_process(cmd: str | Sequence[str], env: Mapping[str, str], *, cwd: Path = ROOT,
                stop_timeout: float = 10.0) -> Iterator[Process]:
    """Start `cmd` (a string runs through `bash -c`), yield it, and always stop it.

    Stopping sends SIGTERM and, after `stop_timeout`, SIGKILL to the whole process group (so a
    gunicorn master's workers go too).
    """
    argv = ["bash", "-c", f"exec {cmd}"] if isinstance(cmd, str) else list(cmd)
    fd, name = tempfile.mkstemp(prefix="ens-status-proc-", suffix=".log")
    log_path = Path(name)
    try:
        with os.fdopen(fd, "wb") as log_file:
            popen = subprocess.Popen(argv, cwd=cwd, env=process_env(env), stdin=subprocess.DEVNULL,
                                     stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield Process(popen, log_path)
        finally:
            stop(popen, stop_timeout)
    finally:
        log_path.unlink(missing_ok=True)


def stop(popen: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM, then after `timeout` SIGKILL to the whole process group (a gunicorn master's workers too)."""
    if popen.poll() is None:
        popen.send_signal(signal.SIGTERM)
        try:
            popen.wait(timeout)
            return
        except subprocess.TimeoutExpired:
            pass
    try:
        os.killpg(popen.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    popen.wait()


@contextmanager
def run_web(db_path: Path | str, env: Mapping[str, str], workers: int = 2,
            timeout: float = 20.0) -> Iterator[tuple[str, Callable[[], str]]]:
    """The Procfile's `web:` command on a free port of 127.0.0.1 and the SQLite file `db_path`.

    Yields (base_url, log) where `log()` returns everything the server wrote so far.
    gunicorn.conf.py binds 0.0.0.0:$PORT; GUNICORN_CMD_ARGS overrides that (gunicorn applies it
    after the config file), so the test server is reachable from this machine only. gunicorn's
    control socket is left off: its default path is shared by every gunicorn of the user.
    """
    port = free_port()
    web_env = {
        **env,
        "DATABASE_URL": f"sqlite:///{Path(db_path).resolve()}",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "GUNICORN_CMD_ARGS": f"--bind 127.0.0.1:{port} --no-control-socket",
    }
    base_url = f"http://127.0.0.1:{port}"
    with run_process(procfile_command("web"), web_env) as process:
        process.wait_until(lambda: httpx.get(f"{base_url}/healthz", timeout=2).status_code == 200,
                           timeout, "gunicorn web")
        yield base_url, process.log
