"""Helpers for fault tests that break real things: a private PostgreSQL server that a test
may stop and freeze, real `smsinbox serve` processes, small filesystems that fill up."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.conftest import free_port


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def _as_postgres(args: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: the command, run as the postgres user if we are."""
    if os.geteuid() == 0:
        return ["runuser", "-u", "postgres", "--", *args]
    return args


class PrivatePostgres:
    """A PostgreSQL server of the test's own, in a temporary directory on a free port.

    Stopping or freezing it never touches the machine's shared cluster.
    """

    def __init__(self) -> None:
        bin_dir = _postgres_bin()
        if bin_dir is None:
            raise RuntimeError("no PostgreSQL binaries under /usr/lib/postgresql")
        self.bin = bin_dir
        self.root = Path(tempfile.mkdtemp(prefix="smsinbox-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/smsinbox"
        self._pid: int | None = None
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")

    def _run(self, *args: str) -> None:
        subprocess.run(
            _as_postgres([str(self.bin / args[0]), *args[1:]]),
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=60,
        )

    def init(self) -> PrivatePostgres:
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")
        self.start()
        psql = ["psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", "-q"]
        subprocess.run(
            [*psql, "-c", "CREATE DATABASE smsinbox"],
            check=True,
            stdout=subprocess.DEVNULL,
            timeout=30,
        )
        return self

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c full_page_writes=off"
        )
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "start")
        self._pid = int((self.data / "postmaster.pid").read_text().split()[0])

    def stop(self, mode: str = "immediate") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")
        self._pid = None

    def freeze(self) -> None:
        """Stop every server process (SIGSTOP): connections hang instead of failing."""
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        for pid in self._server_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def _server_pids(self) -> list[int]:
        """The postmaster and its children (backends, checkpointer...)."""
        assert self._pid is not None
        pids = [self._pid]
        for status in glob.glob("/proc/[0-9]*/status"):
            with contextlib.suppress(OSError):
                fields = dict(
                    line.split(":\t", 1) for line in Path(status).read_text().splitlines()
                )
                if fields.get("PPid", "").strip() == str(self._pid):
                    pids.append(int(status.split("/")[2]))
        return pids

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def destroy(self) -> None:
        with contextlib.suppress(Exception):
            if self._pid is not None:
                self.thaw()
                self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def private_postgres() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        yield server.init()
    finally:
        server.destroy()


@contextlib.contextmanager
def server_process(
    database_url: str,
    port: int,
    *,
    env: dict[str, str] | None = None,
    log: Path | None = None,
    ready: bool = True,
) -> Iterator[subprocess.Popen[bytes]]:
    """`python -m smsinbox serve` on `port`; waits until /readyz answers 200 (or, with
    `ready` False, until the port answers at all). Its stderr goes to `log` if given."""
    environment = {
        **os.environ,
        "SMSINBOX_DATABASE_URL": database_url,
        "SMSINBOX_LOG_LEVEL": "warning",
        **(env or {}),
    }
    with contextlib.ExitStack() as stack:
        stderr = stack.enter_context(log.open("ab")) if log else subprocess.DEVNULL
        process = subprocess.Popen(
            [sys.executable, "-m", "smsinbox", "serve", "--port", str(port)],
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=stderr,
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    answer = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                    if answer.status_code == 200 or not ready:
                        break
                except httpx.TransportError:
                    pass
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("server did not start")
                time.sleep(0.05)
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(10)


@contextlib.contextmanager
def serving(env: dict[str, str], *, log: Path | None = None) -> Iterator[str]:
    """A server process on a free port with `env` (SMSINBOX_DATABASE_URL included); yields
    its URL."""
    port = free_port()
    with server_process(env["SMSINBOX_DATABASE_URL"], port, env=env, log=log):
        yield f"http://127.0.0.1:{port}"


def process_resources(pid: int) -> tuple[int, int]:
    """(resident set size in KiB, open file descriptors) of a live process."""
    rss_kib = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss_kib = int(line.split()[1])
    return rss_kib, len(os.listdir(f"/proc/{pid}/fd"))


def unexpected_log_lines(log: Path) -> list[str]:
    """Lines of a server's stderr that show a bug rather than an outage it handled:
    tracebacks, errors, tasks that died."""
    if not log.exists():
        return []
    bad = ("Traceback", "ERROR", "CRITICAL", "Task exception was never retrieved")
    return [line for line in log.read_text(errors="replace").splitlines() if line.startswith(bad)]


class SmallFilesystem:
    """A tmpfs of a few MiB mounted for one test: it fills up, and it can be remounted
    read-only, genuinely (root ignores file modes, not a read-only mount)."""

    def __init__(self, size_kib: int) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="smsinbox-fs-"))
        self.size_kib = size_kib
        self.mounted = False

    @staticmethod
    def available() -> bool:
        probe = SmallFilesystem(64)
        try:
            probe.mount()
        except (OSError, subprocess.CalledProcessError):
            return False
        finally:
            probe.unmount()
        return True

    def mount(self) -> SmallFilesystem:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={self.size_kib}k", "tmpfs", str(self.path)],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.mounted = True
        return self

    def remount(self, *, read_only: bool) -> None:
        mode = "ro" if read_only else "rw"
        subprocess.run(["mount", "-o", f"remount,{mode}", str(self.path)], check=True)

    def resize(self, size_kib: int) -> None:
        subprocess.run(["mount", "-o", f"remount,size={size_kib}k", str(self.path)], check=True)
        self.size_kib = size_kib

    def unmount(self) -> None:
        if self.mounted:
            subprocess.run(["umount", "-l", str(self.path)], check=False)
            self.mounted = False
        shutil.rmtree(self.path, ignore_errors=True)
