"""Fail when the running environment differs from requirements.lock.

Every installed distribution must be in the lock at the locked version (the project itself and
the venv's own installers excepted). A package the lock misses, or one at another version, means
the lock no longer describes what the tests ran on: regenerate it (README "Installing").
"""

from __future__ import annotations

import re
import sys
from importlib import metadata
from pathlib import Path

# Installed by `python -m venv` itself, or the project being tested.
IGNORED = {"pip", "setuptools", "wheel", "tune-pipeline"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_lock(path: Path) -> dict[str, str]:
    pins: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?==([^\s;]+)(\s*;.*)?", line)
        if not match:
            sys.exit(f"error: {path}: cannot read lock line {line!r}")
        pins[canonical(match.group(1))] = match.group(3)
    return pins


def main() -> int:
    lock = Path(sys.argv[1] if len(sys.argv) > 1 else "requirements.lock")
    pins = read_lock(lock)
    problems = []
    for dist in metadata.distributions():
        name = canonical(dist.metadata["Name"])
        if name in IGNORED:
            continue
        if name not in pins:
            problems.append(f"{name}=={dist.version} is installed but not in {lock}")
        elif pins[name] != dist.version:
            problems.append(f"{name}=={dist.version} is installed, {lock} pins {pins[name]}")
    for problem in sorted(problems):
        print(f"lock drift: {problem}", file=sys.stderr)
    if problems:
        return 1
    print(f"environment matches {lock} ({len(pins)} pins)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
