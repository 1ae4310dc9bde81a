"""Named points where the reliability tests stop the driver on purpose.

A test sets ``TUNE_PIPELINE_PAUSE_AT=<point>`` and ``TUNE_PIPELINE_PAUSE_FILE=<path>``; the
driver writes the file when it reaches that point and waits there, and the test kills it with a
real SIGKILL at exactly that moment (in the middle of a Parquet rewrite, say). Unset, a point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
import signal
import time

POINTS = ("flush", "evaluate", "member_end")


def pause_point(name: str) -> None:
    if os.environ.get("TUNE_PIPELINE_PAUSE_AT") != name:
        return
    marker = os.environ.get("TUNE_PIPELINE_PAUSE_FILE")
    if marker:
        with open(marker, "w", encoding="utf-8") as f:
            f.write(name)
    time.sleep(3600)


def crash_armed(position: int) -> bool:
    """Whether ``crash_point(position)`` is going to kill this process."""
    marker = os.environ.get("TUNE_PIPELINE_CRASH_FILE")
    return os.environ.get("TUNE_PIPELINE_CRASH_MEMBER") == str(position) and bool(marker) \
        and not os.path.exists(marker)


def crash_point(position: int) -> None:
    """In a pack's process (``pipelines.packs``), before it runs member ``position``: SIGKILL
    this process when ``TUNE_PIPELINE_CRASH_MEMBER`` names that position, once (the file
    ``TUNE_PIPELINE_CRASH_FILE`` is written first and marks it done). The tests' stand-in for a
    worker killed by the OOM killer or a lost node."""
    if not crash_armed(position):
        return
    marker = os.environ["TUNE_PIPELINE_CRASH_FILE"]
    with open(marker, "w", encoding="utf-8") as f:
        f.write(str(position))
    os.kill(os.getpid(), signal.SIGKILL)
