"""Ray Tune callbacks on the driver: results into Parquet, and the live progress line."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

from ray.tune import Callback

from pipelines.faults import pause_point
from pipelines.journal import finite_number
from pipelines.packs import (
    MEMBER,
    MEMBER_CLOSING,
    MEMBER_END,
    MEMBER_ERROR,
    MEMBER_START,
    MEMBER_TIME,
)
from pipelines.results import (
    STATUS_ERROR,
    STATUS_FINISHED,
    STATUS_STOPPED,
    ResultsWriter,
    rank_key,
)
from pipelines.storage import one_line


def journal_id(trial: Any, placement: Any) -> str:
    """The id a Tune trial is journaled under: its searcher placement's (a trial re-run after a
    crash keeps its first id), or Tune's own where the searcher placed none."""
    return placement.trial_id if placement is not None else trial.trial_id


class ResultsCallback(Callback):
    """Journals every trial start, report, checkpoint and end through a ResultsWriter.

    ``searcher`` places each Tune trial in the search (its ``trial_index`` and the id it is
    recorded under: a trial re-run after a crash keeps its first id). ``scheduler``, when given,
    is a RecordingASHA whose ``stopped_early`` names the trials it cut.

    A Tune trial that is a pack of configs (``pipelines.packs``) is journaled as one trial per
    member: each starts when its first report arrives (at the time the member started), its
    reports are numbered from 1, and it ends with its last report, or as an error.
    """

    def __init__(self, writer: ResultsWriter, scheduler: Any = None, searcher: Any = None):
        self.writer = writer
        self.scheduler = scheduler
        self.searcher = searcher
        # Per pack (Tune trial id): the members started in its current run, and per member
        # journal id the reports it has made since it started.
        self._opened: dict[str, set[int]] = {}
        self._member_reports: dict[str, int] = {}
        self._checkpoint_warned = False

    def _members(self, trial: Any):
        members = getattr(self.searcher, "members", None)
        return members(trial.trial_id) if members is not None else None

    def _placement(self, trial: Any):
        return self.searcher.placement(trial.trial_id) if self.searcher is not None else None

    def _journal_id(self, trial: Any) -> str:
        return journal_id(trial, self._placement(trial))

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._members(trial) is not None:
            self._opened[trial.trial_id] = set()  # members start when they first report
            return
        placement = self._placement(trial)
        if placement is not None:
            journal_id, index, source = placement.trial_id, placement.index, placement.source
            carry_over = getattr(self.scheduler, "carry_over", None)
            if carry_over is not None:
                carry_over(journal_id, trial.trial_id)  # a re-run keeps its rung results
        else:  # not from our searcher: Tune's creation order is the best we know
            journal_id, source = trial.trial_id, None
            index = next((i for i, t in enumerate(trials) if t is trial), len(trials))
        if self.writer.is_ended(journal_id):
            return  # the journal holds it as ended: nothing reopens it
        self.writer.start_trial(journal_id, index, trial.config, source=source)

    def _ensure_started(self, iteration: int, trials: list, trial: Any) -> str:
        journal_id = self._journal_id(trial)
        if not self.writer.known(journal_id):
            self.on_trial_start(iteration, trials, trial)
        return journal_id

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if MEMBER in result:
            self._member_result(trial, result)
            return
        cut = trial.trial_id in getattr(self.scheduler, "stopped_early", ())
        if cut:
            # ASHA has just cut the trial on this report (Tune asks the scheduler before the
            # callbacks). The report carries the decision, so a driver killed before the
            # trial's end is journaled leaves a trial that reads as cut: --resume ends it there
            # (``ResultsWriter.end_cut_trials``) instead of training it on past its rung.
            result = {**result, "stopped_by": "scheduler"}
        self.writer.add_result(self._ensure_started(iteration, trials, trial), result)
        if cut:
            pause_point("cut")  # the reliability tests kill the driver here

    def _member_result(self, trial: Any, result: dict) -> None:
        position = int(result[MEMBER])
        placement, config = self._members(trial)[position]
        journal_id = placement.trial_id
        if self.writer.is_ended(journal_id):
            return  # a retried pack runs its ended members again; the journal keeps the first
        opened = self._opened.setdefault(trial.trial_id, set())
        if position not in opened:
            self.writer.start_trial(journal_id, placement.index, config, source=placement.source,
                                    at=result.get(MEMBER_START))
            opened.add(position)
            self._member_reports[journal_id] = 0
        end = result.get(MEMBER_END)
        if not result.get(MEMBER_CLOSING):
            self._member_reports[journal_id] += 1
            own = {k: v for k, v in result.items() if not k.startswith("pack_member")}
            # The member's own count and time, not the pack's.
            own["training_iteration"] = self._member_reports[journal_id]
            own["time_total_s"] = result.get(MEMBER_TIME)
            self.writer.add_result(journal_id, own)
        if MEMBER_ERROR in result:
            self.writer.end_trial(journal_id, STATUS_ERROR, error=result[MEMBER_ERROR], at=end)
        elif end is not None:
            self.writer.end_trial(journal_id, STATUS_FINISHED, at=end)
        if end is not None:
            pause_point("member_end")  # the reliability tests kill the driver here

    def _member_error(self, trial: Any, position: int, placement: Any, config: dict,
                      error: str) -> None:
        """End a member as an error row; one the pack never started is started first, so each
        config keeps its row."""
        if position not in self._opened.get(trial.trial_id, set()):
            self.writer.start_trial(placement.trial_id, placement.index, config,
                                    source=placement.source)
        self.writer.end_trial(placement.trial_id, STATUS_ERROR, error=error)

    def _close_members(self, trial: Any, why: str) -> None:
        """A pack ended: every member it did not end is an error row with ``why``."""
        opened = self._opened.get(trial.trial_id, set())
        for position, (placement, config) in enumerate(self._members(trial)):
            if not self.writer.is_ended(placement.trial_id):
                self._member_error(trial, position, placement, config,
                                   why if position in opened else f"not run: {why}")

    def _failed_pack(self, trial: Any, error: str) -> None:
        """A pack's process failed (killed, out of memory, its node lost). Members run in order,
        so the first one it had not ended was running: that config gets the failure as its
        error row, as an unpacked trial would. The ones after it never ran: they go back to the
        searcher, which runs them next under their ids (without a searcher that takes them
        back, they stay out of the journal and ``--resume`` runs them)."""
        left = [(position, placement, config)
                for position, (placement, config) in enumerate(self._members(trial))
                if not self.writer.is_ended(placement.trial_id)]
        if not left:
            return
        self._member_error(trial, *left[0], error)
        requeue = getattr(self.searcher, "requeue", None)
        if requeue is not None and len(left) > 1:
            requeue([(placement, config) for _, placement, config in left[1:]])

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any, **info: Any) -> None:
        try:
            self.writer.add_checkpoint(self._journal_id(trial), _checkpoint_uri(checkpoint))
        except OSError as exc:
            # Tune swallows an error here and then skips recording the checkpoint on the
            # trial, so the trial's end (and the final evaluation) would name an older one. The
            # journal only loses a checkpoint line: a resume restarts from the one before.
            if not self._checkpoint_warned:
                print(f"warning: could not journal a checkpoint of trial {trial.trial_id} "
                      f"({one_line(exc)})", file=sys.stderr, flush=True)
                self._checkpoint_warned = True

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._members(trial) is not None:
            self._close_members(trial, f"its pack (Tune trial {trial.trial_id}) ended first")
            return
        journal_id = self._ensure_started(iteration, trials, trial)
        cut = trial.trial_id in getattr(self.scheduler, "stopped_early", ())
        self.writer.end_trial(
            journal_id,
            STATUS_STOPPED if cut else STATUS_FINISHED,
            checkpoint=_checkpoint_path(trial),
            stopped_by="scheduler" if cut else None,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self._members(trial) is not None:
            self._failed_pack(trial, _error_text(trial))
            return
        journal_id = self._ensure_started(iteration, trials, trial)
        self.writer.end_trial(journal_id, STATUS_ERROR, error=_error_text(trial),
                              checkpoint=_checkpoint_path(trial))

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.writer.flush()


def _checkpoint_path(trial: Any) -> str | None:
    try:
        checkpoint = trial.checkpoint
    except Exception:
        return None
    return _checkpoint_uri(checkpoint)


def _checkpoint_uri(checkpoint: Any) -> str | None:
    if checkpoint is None:
        return None
    path = getattr(checkpoint, "path", None)
    fs = getattr(checkpoint, "filesystem", None)
    if path and "://" not in path and fs is not None and fs.type_name in ("s3", "gcs"):
        # storage: Tune's path is relative to its object-store filesystem ("bucket/key");
        # record the URI, which pandas users and evaluate_checkpoint can open as it is.
        return f"{'gs' if fs.type_name == 'gcs' else 's3'}://{path}"
    return path


def _error_text(trial: Any) -> str:
    """The one line that names why a trial failed.

    Tune writes the error next to the trial on the driver first (``error.pkl``, ``error.txt``)
    and copies it to storage later, so the local files are read first.
    """
    error: Any = None
    try:
        pickled = trial.pickled_error_file
        if pickled and os.path.exists(pickled):
            import cloudpickle

            with open(pickled, "rb") as f:
                error = cloudpickle.load(f)
    except Exception:
        error = None
    if error is None:
        try:
            text = trial.error_file
            if text and os.path.exists(text):
                with open(text, encoding="utf-8", errors="replace") as f:
                    error = f.read()
            else:
                error = trial.get_error()
        except Exception:
            error = None
    if error is None:
        return "trial failed (no error recorded)"
    if isinstance(error, str):
        lines = [line.strip() for line in error.strip().splitlines()
                 if line.strip() and not line.startswith("Failure #")]
        return lines[-1] if lines else "trial failed"
    # RayTaskError wraps the user's exception; its last line names the real cause.
    cause = getattr(error, "cause", None) or error
    text = f"{type(cause).__name__}: {cause}"
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else type(cause).__name__


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class ProgressCallback(Callback):
    """A live line: trials done / running / total, early stops and errors, the best score so
    far and an ETA (at the rate trials have ended in this run).

    On a terminal the line is redrawn in place; in a log it is printed every ``log_every_s``.
    """

    def __init__(self, total: int, metric: str, mode: str, describe=None, stream=None,
                 log_every_s: float = 10.0, select: str = "best", step: str | None = None):
        self.total = total
        self.metric = metric
        self.mode = mode
        # The run's one selection rule (``results.ranked_rows``), so the line names the config
        # the run will report: ``best`` ranks a trial by its best report, ``last`` by its last
        # one among the trials at the highest ``step`` (fidelity) reached; errors never count;
        # ties go to the lowest trial_index.
        self.select = select
        self.step = step
        self.describe = describe or (lambda config: str(config))
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.log_every_s = log_every_s
        self.scheduler = None  # set by the runner when ASHA runs
        self.done = self.errors = self.stopped = 0
        self.done_before = 0  # trials a resumed run found ended (set by refresh_all)
        self.best: float | None = None
        self.best_config: dict | None = None
        self.started = time.monotonic()
        self.first_start: float | None = None  # wall clock of this run's first trial start
        # The searcher's ``members`` (set by the runner): packs count one trial per config.
        self.members = None
        # The searcher's ``placement`` (set by the runner): each trial's journal id.
        self.placement = None
        # The run's ResultsWriter (set by the runner): the best so far is read from its journal.
        self.writer = None
        # Per journal id: (trial_index, score under the rule, step, config).
        self._scores: dict[str, tuple[int, float, float, dict]] = {}
        self._best_key: str | None = None
        self._top_step = 0.0
        self._ended_members: dict[str, set[int]] = {}
        self._last_print = 0.0
        self._width = 0
        # Tune trials between their start and their end, as this callback heard them: Tune's
        # own status lags (PENDING inside on_trial_start, RUNNING inside on_trial_complete).
        self._running: set[str] = set()

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles callbacks into tuner.pkl; a stream does not pickle.
        state = dict(self.__dict__)
        state["stream"] = None
        state["members"] = None
        state["placement"] = None
        state["writer"] = None
        return state

    def _pack(self, trial: Any):
        return self.members(trial.trial_id) if self.members is not None else None

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self.stream = sys.stderr

    def eta_s(self, elapsed: float) -> float | None:
        """Seconds left at the rate trials have ended so far in this run (None before the first
        ends, or after the last). Trials resumed from an earlier run do not count toward the
        rate."""
        ended_here = self.done - self.done_before
        left = self.total - self.done
        if ended_here <= 0 or left <= 0 or elapsed <= 0:
            return None
        return elapsed / ended_here * left

    def _line(self, running: int) -> str:
        elapsed = time.monotonic() - self.started
        best = "-" if self.best is None else f"{self.best:.4f}"
        eta = self.eta_s(elapsed)
        extra = f" ({self.describe(self.best_config)})" if self.best_config else ""
        if len(extra) > 90:  # a long config would wrap and break the in-place redraw
            extra = extra[:86] + "...)"
        counts = f"{self.done}/{self.total} done, {running} running"
        if self.stopped:
            counts += f", {self.stopped} stopped early"
        if self.errors:
            counts += f", {self.errors} errors"
        eta_text = "" if eta is None else f", ETA {_duration(eta)}"
        return f"[{elapsed:6.1f}s] {counts}{eta_text} | best {self.metric} {best}{extra}"

    def _show(self, trials: list, force: bool = False) -> None:
        line = self._line(len(self._running))
        now = time.monotonic()
        if self.tty:
            pad = max(0, self._width - len(line))
            self.stream.write("\r" + line + " " * pad)
            self.stream.flush()
            self._width = len(line)
        elif force or now - self._last_print >= self.log_every_s:
            self.stream.write(line + "\n")
            self.stream.flush()
            self._last_print = now

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if self.first_start is None:
            self.first_start = time.time()
        self._running.add(trial.trial_id)
        self._show(trials)

    # --- the best so far, read from the journal by the run's selection rule -----------------
    # ResultsCallback runs before this callback on every event, so the journal already holds
    # what the event changed; the line ranks what the run will report from the same records
    # (retries, re-run packs and resumed trials included), not a copy kept on the side.
    def _journal_id(self, trial: Any) -> str:
        return journal_id(trial, self.placement(trial.trial_id) if self.placement else None)

    def refresh_all(self) -> None:
        """Count the trials the journal holds as ended (a resumed run's kept trials: done,
        stopped early, errors, as the summary counts them) and rank every trial it holds."""
        if self.writer is not None:
            log = self.writer.log
            kept = log.ended()
            self.done = self.done_before = len(kept)
            self.stopped = sum(log.status(t["trial_id"]) == STATUS_STOPPED for t in kept)
            self.errors = sum(t.get("status") == STATUS_ERROR for t in kept)
            for key in list(log.trials):
                self._refresh(key)

    def _refresh(self, key: str) -> None:
        """Re-read one trial from the journal: its score under the rule, or no rank."""
        if self.writer is None:
            return
        log = self.writer.log
        trial = log.trials.get(key)
        reports = log.epoch_reports(key) if trial is not None else []
        if not reports or trial.get("status") == STATUS_ERROR:
            self._drop(key)
            return
        last = reports[-1]["metrics"]
        scored = last if self.select == "last" else (log.best_report(key, reports) or {}).get(
            "metrics", {})
        value = finite_number(scored.get(self.metric))
        if value is None:
            self._drop(key)
            return
        step = finite_number(last.get(self.step)) if self.step else None
        self._upsert(key, (int(trial["trial_index"]), value, step or 0.0, trial["config"]))

    def _rank(self, entry: tuple) -> tuple[float, int]:
        return rank_key(entry[1], entry[0], self.mode)

    def _set_best(self, key: str | None) -> None:
        self._best_key = key
        entry = self._scores.get(key) if key is not None else None
        self.best = None if entry is None else entry[1]
        self.best_config = None if entry is None else dict(entry[3])

    def _recompute(self) -> None:
        if self.select == "last":
            self._top_step = max((e[2] for e in self._scores.values()), default=0.0)
        eligible = [(self._rank(e), k) for k, e in self._scores.items()
                    if self.select != "last" or e[2] >= self._top_step]
        self._set_best(min(eligible)[1] if eligible else None)

    def _upsert(self, key: str, entry: tuple) -> None:
        """One trial's (trial_index, score, step, config); keeps the best without a full pass
        where it can (a run can hold thousands of trials)."""
        old = self._scores.get(key)
        self._scores[key] = entry
        last, step = self.select == "last", entry[2]
        if last and step > self._top_step:  # the first trial at a new highest fidelity
            self._top_step = step
            self._set_best(key)
        elif last and old is not None and old[2] >= self._top_step and step < old[2]:
            self._recompute()  # it left the highest fidelity (a restart)
        elif key == self._best_key:
            if self._rank(entry) <= self._rank(old):
                self._set_best(key)  # still the best
            else:
                self._recompute()  # its score fell (a retry replaced reports)
        elif not (last and step < self._top_step):
            best = self._scores.get(self._best_key) if self._best_key is not None else None
            if best is None or self._rank(entry) < self._rank(best):
                self._set_best(key)

    def _drop(self, key: str) -> None:
        if self._scores.pop(key, None) is not None and key == self._best_key:
            self._recompute()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        pack = self._pack(trial) if MEMBER in result else None
        if pack is None:
            self._refresh(self._journal_id(trial))
        else:
            self._refresh(pack[int(result[MEMBER])][0].trial_id)
        if pack is None or MEMBER_END not in result:
            return
        ended = self._ended_members.setdefault(trial.trial_id, set())
        if int(result[MEMBER]) not in ended:  # once, also when a retried pack runs it again
            ended.add(int(result[MEMBER]))
            self.done += 1
            self.errors += MEMBER_ERROR in result
            self._show(trials)

    def _close_pack(self, trial: Any, pack: list, trials: list, failed: bool) -> None:
        # As ResultsCallback does: a pack that ended leaves every member it did not end as an
        # error row; a failed one, only the member that was running (the rest run again).
        left = len(pack) - len(self._ended_members.pop(trial.trial_id, set()))
        left = min(left, 1) if failed else left
        for placement, _ in pack:  # the members it left are error rows now
            self._refresh(placement.trial_id)
        self.done += left
        self.errors += left
        self._show(trials)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.discard(trial.trial_id)
        pack = self._pack(trial)
        if pack is not None:
            self._close_pack(trial, pack, trials, failed=False)
            return
        self.done += 1
        if trial.trial_id in getattr(self.scheduler, "stopped_early", ()) or \
                (trial.last_result or {}).get("stopped_by"):
            self.stopped += 1
        self._show(trials)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._running.discard(trial.trial_id)
        pack = self._pack(trial)
        if pack is not None:
            self._close_pack(trial, pack, trials, failed=True)
            return
        self.done += 1
        self.errors += 1
        self._refresh(self._journal_id(trial))  # an error row does not rank
        self._show(trials)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._running.clear()  # an interrupted run's trials are paused now, not running
        self._show(trials, force=True)
        if self.tty:
            self.stream.write("\n")
            self.stream.flush()
