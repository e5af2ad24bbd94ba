"""The dashboard served for a benchmark or a browser test: ``streamlit run app.py`` on a free port of 127.0.0.1, its
runs and jobs in folders of its own, handed over once it answers its health check, stopped after; and the server's
peak memory, read from /proc. benchmarks/visitors.py, benchmarks/classroom_load.py and tests/test_browser.py
start it through :func:`served`.

>>> with served(work, work / "streamlit.log", {"PRUNEKIT_CLASSROOM": "1"}) as app:
...     print(app.url, app.proc.pid)
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

REPO = Path(__file__).resolve().parent.parent
HEALTH_LIMIT_S = 600.0  # a hang, not a slow machine: the server came up in 5-30 s here, under load too


class AppDidNotStart(RuntimeError):
    """The server exited, or did not answer its health check in time; the message names its log."""


@dataclass
class App:
    """A served dashboard: its process (``streamlit run``) and its URL."""

    proc: subprocess.Popen
    url: str


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(proc: subprocess.Popen, url: str, log: Path, limit: float = HEALTH_LIMIT_S) -> None:
    """Wait for the state "the server answers its health check", polling; AppDidNotStart at once if the server
    process ended, and after ``limit`` seconds."""
    end = time.monotonic() + limit
    while time.monotonic() < end:
        if proc.poll() is not None:
            raise AppDidNotStart(f"streamlit exited with {proc.returncode} before it served (see {log})")
        try:
            if urllib.request.urlopen(url + "/_stcore/health", timeout=5).read() == b"ok":
                return
        except OSError:
            time.sleep(0.2)  # polling the health check, not waiting for a result
    raise AppDidNotStart(f"streamlit did not answer its health check in {limit:.0f} s (see {log})")


def stop(proc: subprocess.Popen) -> None:
    """Ask the server to stop; kill it if it has not within 10 s."""
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


@contextmanager
def served(work: Path, log: Path, env: dict[str, str] | None = None, options: Sequence[str] = (),
           app_args: Sequence[str] = (), port: int | None = None, script: str = "app.py") -> Iterator[App]:
    """``streamlit run script [options] -- [app_args]`` (default script: the dashboard, app.py) on
    127.0.0.1:``port`` (default: a free one), its runs and jobs under ``work``, ``env`` over this process's
    environment (PRUNEKIT_APP_RAISE removed: the real app shows errors as messages), its output in ``log``; yields
    the App once it answers, stops it after."""
    port = port or free_port()
    env = {**os.environ, "PRUNEKIT_RUNS": str(work / "runs"), "PRUNEKIT_JOBS": str(work / "jobs"), **(env or {})}
    env.pop("PRUNEKIT_APP_RAISE", None)
    command = [sys.executable, "-m", "streamlit", "run", script, "--server.port", str(port),
               "--server.address", "127.0.0.1", "--server.headless", "true", *options]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        proc = subprocess.Popen(command + (["--", *app_args] if app_args else []), cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        try:
            app = App(proc, f"http://127.0.0.1:{port}")
            wait_healthy(proc, app.url, log)
            yield app
        finally:
            stop(proc)


def _tree(pid: int) -> list[int]:
    """``pid`` and its descendants, from /proc."""
    pids, i = [pid], 0
    while i < len(pids):
        for task in Path(f"/proc/{pids[i]}/task").glob("*"):
            try:
                pids += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                pass
        i += 1
    return pids


def peak_rss_mb(pid: int) -> float:
    """The peak resident memory (VmHWM) of ``pid`` plus that of its living children, in MB."""
    total = 0
    for p in _tree(pid):
        try:
            line = next(ln for ln in Path(f"/proc/{p}/status").read_text().splitlines() if ln.startswith("VmHWM"))
            total += int(line.split()[1])
        except (OSError, StopIteration):
            pass
    return round(total / 1024, 1)


def cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system, every thread) used so far by ``pid`` and its living children, from /proc."""
    tick, total = os.sysconf("SC_CLK_TCK"), 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15 of proc(5))
        except (OSError, IndexError, ValueError):
            pass
    return round(total / tick, 1)
