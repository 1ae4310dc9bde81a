"""The experiment's one durable record: an append-only journal of trial events.

Every trial start, every report (epoch or fidelity rung), every checkpoint and every trial end
is appended the moment the driver hears of it, before anything else happens with it:

- on a local disk, as one JSON line of ``journal.jsonl``, flushed and fsynced;
- on an object store, as an object of its own under ``journal/`` (a PUT is atomic and durable
  when it returns), never as a local file uploaded later.

Everything else is a view of it, rebuilt by ``TrialLog``: the rows of ``trials.parquet`` and
``epochs.parquet``, the searchers' observations on ``--resume``, the list of trials to re-run.

The rules of the replay (one place, used live and on resume alike):

- a trial ends once: events of a trial after its ``end`` are ignored, so a trial the journal
  holds as ended is never blanked by a late restart;
- a ``start`` of a trial that already started is a restart (Tune's retry, or a re-run after a
  crash); its first report says where it picked up: earlier reports from that iteration on are
  replaced, the ones before it are kept. No gaps, no duplicates;
- a torn last line (a kill in the middle of a write) is dropped when the journal is read and cut
  off before the next append, so it can never swallow the entry written after it.
"""

from __future__ import annotations

import heapq
import json
import math
import os
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow.fs as pafs

from pipelines.storage import Storage, fsync_dir

JOURNAL_FILE = "journal.jsonl"
JOURNAL_DIR = "journal"
JOURNAL_VERSION = 1

START, REPORT, CHECKPOINT, END = "start", "report", "checkpoint", "end"

STATUS_FINISHED = "finished"
STATUS_STOPPED = "stopped_early"
STATUS_ERROR = "error"

_OBJECT_NAME = re.compile(r"a(\d{6})-(\d{9})\.json")


def _plain(value: Any) -> Any:
    """JSON-friendly scalars (numpy scalars to Python); non-finite floats as strings."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # "nan", "inf": strict JSON has no such numbers
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return str(value)


# At one time a trial's start comes before its reports and checkpoints, and those before its
# end: an end written later with an earlier ``at`` (``ResultsWriter.end_cut_trials``) must not
# sort before the report it closes.
_RANK = {"start": 0, "report": 1, "checkpoint": 1, "end": 2}


def _event_order(event: Mapping[str, Any]) -> tuple[float, int]:
    try:
        at = float(event.get("time") or 0.0)
    except (TypeError, ValueError):
        at = 0.0
    return at, _RANK.get(str(event.get("event")), 1)


class Journal:
    """Append and read the events of one experiment.

    Parameters
    ----------
    storage : Storage
        Where the experiment folder lives.
    experiment : str
        The experiment's folder name.
    """

    def __init__(self, storage: Storage, experiment: str):
        self.storage = storage
        self.experiment = experiment
        self._seq = 0
        self._attempt: int | None = None
        self._repaired = False
        self._dir_synced = False

    # --- reading ---------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.storage.exists(self.experiment, JOURNAL_FILE) or bool(self._object_names())

    def read(self) -> list[dict[str, Any]]:
        """Every complete event, in the order it was written.

        A local experiment writes one file, an object-store one an object per event. An
        experiment copied from one to the other (run on a laptop, uploaded, resumed or rebuilt
        on the cluster; or back again) holds both: each in its own order, interleaved by the
        events' times (the machines' clocks are trusted to agree across the copy).
        """
        from_file = self._file_events()
        from_objects = self._object_events()
        if not (from_file and from_objects):
            return from_file or from_objects
        return list(heapq.merge(from_file, from_objects, key=_event_order))

    def _file_events(self) -> list[dict[str, Any]]:
        if not self.storage.exists(self.experiment, JOURNAL_FILE):
            return []
        data = self.storage.read_bytes(f"{self.experiment}/{JOURNAL_FILE}")
        lines = data.split(b"\n")
        # The last piece is empty after a complete line, or a torn line after a hard kill.
        return [event for line in lines[:-1] if (event := _parse(line)) is not None]

    def _object_events(self) -> list[dict[str, Any]]:
        events = []
        for name in self._object_names():
            event = _parse(self.storage.read_bytes(f"{self.experiment}/{JOURNAL_DIR}/{name}"))
            if event is not None:
                events.append(event)
        return events

    def _object_names(self) -> list[str]:
        selector = pafs.FileSelector(self.storage.path(self.experiment, JOURNAL_DIR),
                                     allow_not_found=True)
        names = [os.path.basename(info.path) for info in self.storage.fs.get_file_info(selector)
                 if info.type == pafs.FileType.File]
        return sorted(n for n in names if _OBJECT_NAME.fullmatch(n))

    # --- writing ---------------------------------------------------------------------------
    def append(self, event: Mapping[str, Any]) -> None:
        """Make ``event`` durable before returning."""
        line = json.dumps(_plain(dict(event)), separators=(",", ":"))
        if self.storage.is_local:
            self._append_local(line)
        else:
            if self._attempt is None:
                # One attempt number per driver process, after every earlier one, so the names
                # sort in the order the events happened across crashes and resumes.
                previous = [int(_OBJECT_NAME.fullmatch(n).group(1)) for n in self._object_names()]
                self._attempt = max(previous, default=0) + 1
            self._seq += 1
            name = f"a{self._attempt:06d}-{self._seq:09d}.json"
            self.storage.write_bytes(f"{self.experiment}/{JOURNAL_DIR}/{name}", line.encode())

    def _append_local(self, line: str) -> None:
        path = self.storage.path(self.experiment, JOURNAL_FILE)
        if not self._repaired:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            _cut_torn_tail(path)
            self._repaired = True
        with open(path, "ab") as f:
            f.write(line.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())
        if not self._dir_synced:
            fsync_dir(os.path.dirname(path))  # the first append may have created the file
            self._dir_synced = True


def _parse(line: bytes) -> dict[str, Any] | None:
    if not line.strip():
        return None
    try:
        event = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return event if isinstance(event, dict) and "event" in event else None


def _cut_torn_tail(path: str) -> None:
    """Drop a last line that a kill cut short, so the next entry starts on a line of its own."""
    if not os.path.exists(path):
        return
    with open(path, "rb+") as f:
        f.seek(0, os.SEEK_END)
        size = f.tell()
        if size == 0:
            return
        f.seek(size - 1)
        if f.read(1) == b"\n":
            return
        # Find the end of the last complete line.
        block = 1 << 16
        end = size
        keep = 0
        while end > 0:
            start = max(0, end - block)
            f.seek(start)
            chunk = f.read(end - start)
            cut = chunk.rfind(b"\n")
            if cut >= 0:
                keep = start + cut + 1
                break
            end = start
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())


# --- the views --------------------------------------------------------------------------------
def finite_number(value: Any) -> float | None:
    """``value`` as a float if it is a finite real number (numpy scalars too), else None."""
    if type(value) is float:  # the common case, first: a trial's every report passes here
        return value if math.isfinite(value) else None
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class TrialLog:
    """The state of every trial, rebuilt event by event from the journal.

    Parameters
    ----------
    metric, mode : str
        The searched metric and its direction (for ``best_<metric>``).
    columns : iterable of str
        The metric columns kept per report.
    """

    def __init__(self, metric: str, mode: str, columns: Iterable[str]):
        self.metric = metric
        self.mode = mode
        self.columns = list(columns)
        self.trials: dict[str, dict[str, Any]] = {}
        self.reports: dict[str, dict[int, dict[str, Any]]] = {}
        self._fresh_start: set[str] = set()

    # --- replay ----------------------------------------------------------------------------
    def apply(self, event: Mapping[str, Any]) -> None:
        kind, trial_id = event.get("event"), event.get("trial_id")
        if trial_id is None:
            return
        trial = self.trials.get(trial_id)
        if trial is not None and trial.get("status"):
            return  # ended: nothing reopens it
        if kind == START:
            if trial is None:
                self.trials[trial_id] = {
                    "trial_id": trial_id,
                    "trial_index": int(event["trial_index"]),
                    "config": dict(event.get("config") or {}),
                    "source": event.get("source"),
                    "start_time": event.get("time"),
                    "info": dict(event.get("info") or {}),
                    "checkpoints": [],
                    "restarts": 0,
                    # Seconds of the attempts before the current one, each from its start to
                    # its last record: a trial restarted (a retry, a --resume the next day)
                    # did not run between its attempts.
                    "earlier_attempts_s": 0.0,
                    "attempt_start": event.get("time"),
                    "last_time": event.get("time"),
                }
                self.reports[trial_id] = {}
            else:
                trial["restarts"] += 1
                self._fresh_start.add(trial_id)
                if trial.get("attempt_start") is not None and trial.get("last_time") is not None:
                    trial["earlier_attempts_s"] += max(
                        0.0, trial["last_time"] - trial["attempt_start"])
                trial["attempt_start"] = trial["last_time"] = event.get("time")
            return
        if trial is None:
            return  # a report of a trial whose start was never written: cannot be placed
        if event.get("time") is not None:
            trial["last_time"] = event["time"]
        if kind == REPORT:
            iteration = int(event["iteration"])
            reports = self.reports[trial_id]
            if trial_id in self._fresh_start:
                # A restart picks up after its checkpoint: what it reports again replaces the
                # earlier reports from there on; the reports before it stay.
                self._fresh_start.discard(trial_id)
                for old in [i for i in reports if i >= iteration]:
                    del reports[old]
            reports[iteration] = dict(event)
        elif kind == CHECKPOINT:
            if event.get("path"):
                trial["checkpoints"].append(event["path"])
        elif kind == END:
            trial["status"] = event.get("status") or STATUS_FINISHED
            trial["end_time"] = event.get("time")
            for key in ("error", "stopped_by", "checkpoint"):
                if event.get(key):
                    trial[key] = event[key]

    def run_seconds(self, trial_id: str) -> float | None:
        """Seconds the trial ran: each attempt from its start to its last record (its end for
        the last one), summed; the time between attempts (a driver down until ``--resume``)
        is not the trial's. None without times."""
        trial = self.trials[trial_id]
        start, end = trial.get("attempt_start"), trial.get("end_time")
        if start is None or end is None:
            return None
        return trial.get("earlier_attempts_s", 0.0) + max(0.0, end - start)

    def apply_all(self, events: Iterable[Mapping[str, Any]]) -> None:
        for event in events:
            self.apply(event)

    # --- what the views read ---------------------------------------------------------------
    def ended(self) -> list[dict[str, Any]]:
        return sorted((t for t in self.trials.values() if t.get("status")),
                      key=lambda t: t["trial_index"])

    def unfinished(self) -> list[dict[str, Any]]:
        """Trials that started and never ended (running when the driver died)."""
        return sorted((t for t in self.trials.values() if not t.get("status")),
                      key=lambda t: t["trial_index"])

    def epoch_reports(self, trial_id: str) -> list[dict[str, Any]]:
        reports = self.reports.get(trial_id, {})
        return [reports[i] for i in sorted(reports)]

    # ``reports``, where given, is ``epoch_reports(trial_id)`` already at hand: a row of
    # trials.parquet asks for it several times, and a trial can have hundreds of reports.
    def best_report(self, trial_id: str, reports: list | None = None) -> dict[str, Any] | None:
        """The report with the best metric; the earliest wins a tie."""
        best, best_value = None, None
        sign = 1.0 if self.mode == "max" else -1.0
        for report in self.epoch_reports(trial_id) if reports is None else reports:
            value = finite_number(report.get("metrics", {}).get(self.metric))
            if value is not None and (best_value is None or sign * value > sign * best_value):
                best, best_value = report, value
        return best

    def stopped_by(self, trial_id: str, reports: list | None = None) -> str | None:
        trial = self.trials[trial_id]
        if trial.get("stopped_by"):
            return trial["stopped_by"]
        reports = self.epoch_reports(trial_id) if reports is None else reports
        last = reports[-1]["metrics"] if reports else {}
        if last.get("stopped_by"):
            return str(last["stopped_by"])
        if last.get("early_stopped") is True:
            return "patience"
        return None

    def status(self, trial_id: str, reports: list | None = None) -> str | None:
        trial = self.trials[trial_id]
        status = trial.get("status")
        # A trial that stopped itself (patience) or was cut ended early; it did not just finish.
        if status == STATUS_FINISHED and self.stopped_by(trial_id, reports):
            return STATUS_STOPPED
        return status

    def rebase_checkpoints(self, old_dirs: Iterable[str], new_dir: str) -> None:
        """Point checkpoints recorded while the experiment lived in another folder (``old_dirs``:
        it was moved, copied or renamed since) at the same files under ``new_dir``. The
        experiment's own folder holds its checkpoints: a resume must neither fail on the old
        folder's absence nor read another copy's weights."""
        olds = [d.rstrip("/") for d in old_dirs if d.rstrip("/") != new_dir.rstrip("/")]
        # Google Cloud Storage: the experiment's URI may say gcs:// where checkpoints say gs://.
        olds += [("gs://" + d[len("gcs://"):]) for d in olds if d.startswith("gcs://")]
        new_dir = new_dir.rstrip("/")

        def rebased(path: str | None) -> str | None:
            for old in olds:
                if path and path.startswith(old + "/"):
                    return new_dir + path[len(old):]
            return path

        for trial_id, trial in self.trials.items():
            trial["checkpoints"] = [rebased(p) for p in trial["checkpoints"]]
            if trial.get("checkpoint"):
                trial["checkpoint"] = rebased(trial["checkpoint"])
            for report in self.reports.get(trial_id, {}).values():
                metrics = report.get("metrics") or {}
                if isinstance(metrics.get("checkpoint_path"), str):
                    metrics["checkpoint_path"] = rebased(metrics["checkpoint_path"])

    def checkpoint_dirs(self) -> set[str]:
        """The folders one-process trials' checkpoints were recorded under
        (``<folder>/<trial>/checkpoint_NNNNNN``): where an experiment without a recorded
        location lived."""
        found = set()
        for trial in self.trials.values():
            for path in [*trial["checkpoints"], trial.get("checkpoint") or ""]:
                parts = path.rstrip("/").rsplit("/", 2)
                if len(parts) == 3 and re.fullmatch(r"checkpoint_\d+", parts[2]):
                    found.add(parts[0])
        return found

    def last_checkpoint(self, trial_id: str, exists=None,
                        reports: list | None = None) -> str | None:
        """The newest checkpoint the trial recorded that still exists (``exists(path)``)."""
        trial = self.trials[trial_id]
        candidates = list(trial["checkpoints"])
        for report in self.epoch_reports(trial_id) if reports is None else reports:
            path = report.get("metrics", {}).get("checkpoint_path")
            if path:
                candidates.append(path)
        for path in reversed(candidates):
            if exists is None or exists(path):
                return path
        return None


def start_event(trial_id: str, trial_index: int, config: Mapping[str, Any], *,
                source: str | None = None, info: Mapping[str, Any] | None = None,
                at: float | None = None) -> dict:
    """``at``: when the trial started, where the driver hears of it later (a pack's member)."""
    return {"event": START, "trial_id": trial_id, "trial_index": int(trial_index),
            "config": dict(config), "source": source, "info": dict(info or {}),
            "time": time.time() if at is None else float(at)}


def report_event(trial_id: str, iteration: int, metrics: Mapping[str, Any]) -> dict:
    return {"event": REPORT, "trial_id": trial_id, "iteration": int(iteration),
            "metrics": dict(metrics), "time": time.time()}


def checkpoint_event(trial_id: str, path: str) -> dict:
    return {"event": CHECKPOINT, "trial_id": trial_id, "path": path, "time": time.time()}


def end_event(trial_id: str, status: str, *, error: str | None = None,
              stopped_by: str | None = None, checkpoint: str | None = None,
              at: float | None = None) -> dict:
    return {"event": END, "trial_id": trial_id, "status": status, "error": error,
            "stopped_by": stopped_by, "checkpoint": checkpoint,
            "time": time.time() if at is None else float(at)}
