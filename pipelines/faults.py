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

POINTS = ("flush", "evaluate", "member_end", "ray_start", "cut")


def pause_point(name: str) -> None:
    if os.environ.get("TUNE_PIPELINE_PAUSE_AT") != name:
        return
    marker = os.environ.get("TUNE_PIPELINE_PAUSE_FILE")
    if marker:
        with open(marker, "w", encoding="utf-8") as f:
            f.write(name)
    time.sleep(3600)


def crash_point(position: int) -> None:
    """In a pack's process (``pipelines.packs``), before it runs member ``position``: SIGKILL
    this process when ``TUNE_PIPELINE_CRASH_MEMBER`` names that position, once (the file
    ``TUNE_PIPELINE_CRASH_FILE`` is written first and marks it done). The tests' stand-in for a
    worker killed by the OOM killer or a lost node.

    It waits a second before the kill: a pack goes on as soon as Tune has taken a member's
    result (``pipelines.tune_adapter``), so the member before may still be on its way to the
    driver; the hook kills between two members, not in the middle of a result's delivery."""
    if os.environ.get("TUNE_PIPELINE_CRASH_MEMBER") != str(position):
        return
    marker = os.environ.get("TUNE_PIPELINE_CRASH_FILE")
    if not marker or os.path.exists(marker):
        return
    with open(marker, "w", encoding="utf-8") as f:
        f.write(str(position))
    time.sleep(1.0)
    os.kill(os.getpid(), signal.SIGKILL)
