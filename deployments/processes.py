"""The processes the local stack starts (`deployments.stack`): each in its own process group, its output in
.stack/<name>.log and its pid in .stack/<name>.pid, so `down` stops exactly what `up` started.
"""
from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path


class StackError(RuntimeError):
    pass


def state_dir(project: Path) -> Path:
    return project / ".stack"


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    try:  # a zombie child of this process counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def pid_of(project: Path, name: str) -> int | None:
    f = state_dir(project) / f"{name}.pid"
    if not f.exists():
        return None
    pid = int(f.read_text().split()[0])
    return pid if alive(pid) else None


def start(project: Path, name: str, cmd: list[str], env: dict[str, str]) -> int:
    """Start `cmd` in its own process group, output to .stack/<name>.log, pid to .stack/<name>.pid."""
    if (pid := pid_of(project, name)) is not None:
        print(f"{name}: already running (pid {pid})")
        return pid
    d = state_dir(project)
    d.mkdir(parents=True, exist_ok=True)
    log = open(d / f"{name}.log", "ab")
    p = subprocess.Popen(cmd, cwd=project, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                         start_new_session=True)
    (d / f"{name}.pid").write_text(f"{p.pid}\n")
    print(f"{name}: started (pid {p.pid}, log {d / f'{name}.log'})")
    return p.pid


def wait_http(url: str, name: str, project: Path, timeout: float = 180, ok: tuple[int, ...] = (200,)) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            with urllib.request.urlopen(url, timeout=3) as r:
                if r.status in ok:
                    return
        except urllib.error.HTTPError as e:
            if e.code in ok:
                return
        except OSError:
            pass
        if pid_of(project, name) is None:
            tail = (state_dir(project) / f"{name}.log").read_text(errors="replace")[-2000:]
            raise StackError(f"{name} exited during start-up; end of its log:\n{tail}")
        time.sleep(0.5)
    raise StackError(f"{name} did not answer {url} within {timeout:.0f} s (log: .stack/{name}.log)")


def stop(project: Path, name: str, first: int = signal.SIGTERM, grace: float = 20) -> bool:
    """Stop the process group `up` started; SIGKILL after `grace` seconds. True if something was stopped."""
    f = state_dir(project) / f"{name}.pid"
    if not f.exists():
        return False
    pid = int(f.read_text().split()[0])
    stopped = False
    if alive(pid):
        for sig, wait in ((first, grace), (signal.SIGKILL, 10)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            end = time.time() + wait
            while time.time() < end and alive(pid):
                time.sleep(0.2)
            if not alive(pid):
                break
        stopped = True
    try:  # the group may hold children (e.g. a flow run the worker started)
        os.killpg(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    f.unlink(missing_ok=True)
    print(f"{name}: stopped (pid {pid})" if stopped else f"{name}: was not running")
    return stopped


def run(cmd: list[str], env: dict[str, str], project: Path) -> str:
    p = subprocess.run(cmd, cwd=project, env=env, capture_output=True, text=True)
    if p.returncode:
        raise StackError(f"{' '.join(cmd)} failed ({p.returncode}):\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return p.stdout
