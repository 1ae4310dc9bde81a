"""Several configs in one Tune trial ("packs"), for searches of many short trials.

Tune spends tens of milliseconds on every trial it starts (its registry lookups, an actor reset,
a snapshot of the trial, the calls that start and stop it), which a sub-second SVM fit pays
again and again. Grid and random search under FIFO know every config up front, so the searcher
can hand Tune a pack of them as one trial: the trial runs them one after another and reports
each config's results under the config's own position in the pack. The driver turns every
config back into a trial of its own before anything is recorded (``ResultsCallback``): each has
its own journal events, trial id, ``trial_index``, start and end time, status and error, so
``trials.parquet`` and ``epochs.parquet`` hold exactly the rows an unpacked run writes.

Pack sizes follow guided self-scheduling: ``ceil(remaining / (ROUNDS x slots))``, at most
``MOST``. Early packs are large (few Tune trials), the last ones hold a single config, so no slot
waits long for another to finish its pack. Packs are never used with ASHA (a scheduler cuts Tune
trials, and a pack is not one config) nor with bayesopt (a model learns from every result before
its next suggestion).

The keys below travel in Tune's config and results; pipelines read them, trainables never do.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from pipelines.faults import crash_point

# Config key of a pack: the member configs, in order.
PACK_KEY = "_pack"
# Result keys of a member's report: its position in the pack, when it started (Unix time, on the
# trial's node), the seconds it has run, and on its last report when it ended and, if it raised,
# the one-line error.
MEMBER = "pack_member"
MEMBER_START = "pack_member_start"
MEMBER_TIME = "pack_member_time_s"
MEMBER_END = "pack_member_end"
MEMBER_ERROR = "pack_member_error"
# On a member's closing report, which holds no metrics (after an error, or a config that
# reported nothing).
MEMBER_CLOSING = "pack_member_closing"

ROUNDS = 4
MOST = 32
AUTO = "auto"


def pack_size(remaining: int, slots: int, fixed: int | None = None) -> int:
    """How many of the ``remaining`` configs the next pack takes.

    ``fixed`` (``--configs-per-trial N``) takes N at a time; otherwise guided self-scheduling
    over ``slots`` trials running at once.
    """
    if remaining <= 0:
        return 0
    if fixed is not None:
        return max(1, min(fixed, remaining))
    return max(1, min(MOST, remaining, math.ceil(remaining / (ROUNDS * max(1, slots)))))


def is_pack(config: Mapping[str, Any] | None) -> bool:
    return isinstance(config, Mapping) and PACK_KEY in config


def run_members(members: Iterable[Mapping[str, Any]],
                trial_fn: Callable[[dict[str, Any]], Iterator[dict[str, Any]]],
                report: Callable[[dict[str, Any]], None]) -> None:
    """Run each member config through ``trial_fn`` and ``report`` what it yields, tagged.

    A member's last report carries ``MEMBER_END`` (each report is held until the next one is
    known, so the last is marked as such: a member that reports every epoch reaches the driver
    one epoch late, which is why packs are for short trials). ``MEMBER_TIME`` is the member's
    time when the report was ready. A member that raises gets one report with its error
    and the pack goes on with the next member, as Tune goes on with the next trial; an exception
    from ``report`` itself (Tune stopping the trial) is not caught.
    """
    done = object()
    for position, config in enumerate(members):
        crash_point(position)
        started = time.time()
        tags = {MEMBER: position, MEMBER_START: started}
        error: BaseException | None = None
        reported = False
        try:
            produced = iter(trial_fn(dict(config)))
            current = next(produced, done)
        except Exception as exc:
            produced, current, error = iter(()), done, exc
        elapsed = time.time() - started  # when ``current`` was ready, not when it is reported
        while current is not done:
            try:
                following = next(produced, done)
            except Exception as exc:
                following, error = done, exc
            following_elapsed = time.time() - started
            metrics = {**current, **tags, MEMBER_TIME: elapsed}
            if following is done and error is None:
                metrics[MEMBER_END] = started + elapsed
            report(metrics)
            reported = True
            current, elapsed = following, following_elapsed
        if error is not None or not reported:
            # An error (after any reports it made), or a config that reported nothing: one
            # closing report, so the driver ends the member's trial.
            end = {**tags, MEMBER_TIME: time.time() - started, MEMBER_END: time.time(),
                   MEMBER_CLOSING: True}
            if error is not None:
                end[MEMBER_ERROR] = error_line(error)
            report(end)


def error_line(exc: BaseException) -> str:
    """``Type: message`` on one line (a multi-line message joined with spaces)."""
    return " ".join(f"{type(exc).__name__}: {exc}".split())
