"""Small helpers shared by tests: run a pipeline as a user would, in a subprocess."""

from __future__ import annotations

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_module(module: str, *args: str, cwd: str | None = None, env: dict | None = None,
               timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -m module args...`` with the repo importable; returns the finished process."""
    return _run_python(["-m", module, *args], cwd, env, timeout)


def run_code(code: str, *args: str, cwd: str | None = None, env: dict | None = None,
             timeout: float = 600) -> subprocess.CompletedProcess:
    """``python -c code args...``, in the same environment as ``run_module``."""
    return _run_python(["-c", code, *args], cwd, env, timeout)


def _run_python(argv: list[str], cwd: str | None, env: dict | None,
                timeout: float) -> subprocess.CompletedProcess:
    full_env = dict(os.environ)
    full_env["PYTHONPATH"] = REPO + os.pathsep + full_env.get("PYTHONPATH", "")
    full_env.pop("RAY_ADDRESS", None)
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, *argv], cwd=cwd or REPO, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )


def tiny_svm_space(path, grid=(0.1, 1.0, 10.0)) -> str:
    """Write a 3-config linear-SVM space file; returns its path."""
    path.write_text(
        "from search_spaces.space import Categorical, LogFloat, Space\n"
        f"SPACE = Space(kernel=Categorical(['linear']), C=LogFloat(0.01, 100, grid={list(grid)!r}))\n"
    )
    return str(path)


def child_pids(parent: int) -> list[int]:
    """Processes whose parent is ``parent`` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                # The fields after the parenthesized command name: state, then the parent's pid.
                if int(f.read().rsplit(")", 1)[1].split()[1]) == parent:
                    pids.append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    return pids


def pids_mentioning(text: str) -> list[int]:
    """Processes whose command line contains ``text`` (Linux /proc)."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                if text.encode() in f.read():
                    pids.append(int(entry))
        except OSError:
            continue
    return pids
