"""Named points where the reliability tests stop the driver on purpose.

A test sets ``TUNE_PIPELINE_PAUSE_AT=<point>`` and ``TUNE_PIPELINE_PAUSE_FILE=<path>``; the
driver writes the file when it reaches that point and waits there, and the test kills it with a
real SIGKILL at exactly that moment (in the middle of a Parquet rewrite, say). Unset, a point
costs one dictionary lookup.
"""

from __future__ import annotations

import os
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
