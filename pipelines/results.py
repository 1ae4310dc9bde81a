"""Parquet results, the product's API: ``trials.parquet``, ``epochs.parquet``, ``experiment.json``.

A Tune callback hands every trial start, report, checkpoint and end to a ``ResultsWriter``, which
appends it to the experiment's journal (``pipelines.journal``, durable before it returns) and
writes the Parquet views of it in parts while trials run, at most every ``flush_every_s`` seconds
(longer once a part itself takes long: at most a tenth of the time goes to them)::

    NAME/parts/epochs/a000001/000000001.parquet    the reports of the trials of that part
    NAME/parts/trials/a000001/000000001.parquet    the trials that ended since the last part

An ended trial never changes, so a part holds only what ended since the one before it: a flush
costs what ended, not what the experiment holds. ``a000001`` is the driver process's attempt; a
``--resume`` writes under the next number, so it never overwrites an earlier part. Its first part
holds every trial the journal held as ended, and then the earlier attempts' parts are deleted.
At the end (``ResultsWriter.flush``) the parts are compacted into ``trials.parquet`` and
``epochs.parquet``, the files users read, and deleted.

Readers see a consistent view at any time: a part's epochs file is written before its trials
file, and ``epochs.parquet`` before ``trials.parquet``, so whoever reads the trials (the compacted
file, then the parts) before the epochs (the parts, then the compacted file) has the reports of
every trial read. For a moment (a compaction, a resume) a trial can be in two places, with the
same rows: keep one per ``trial_id``. ``pipelines.analysis.load_experiment`` does all of this.

``python -m pipelines.results rebuild DIR`` turns a journal back into Parquet after a hard kill.

Columns only change with ``SCHEMA_VERSION``, which every Parquet file carries in its key-value
metadata and ``experiment.json`` at its top level; README documents each column. The project's
readers refuse a newer version (``check_schema_version``) and read the current and older ones.
"""

from __future__ import annotations

import io
import json
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import repeat
from operator import itemgetter
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from pipelines.faults import pause_point
from pipelines.journal import (
    JOURNAL_DIR,
    JOURNAL_FILE,
    STATUS_ERROR,
    STATUS_FINISHED,
    STATUS_STOPPED,
    Journal,
    TrialLog,
    checkpoint_event,
    end_event,
    finite_number,
    report_event,
    start_event,
)
from pipelines.storage import Storage, StorageError, one_line
from search_spaces.space import Categorical, Fixed, Float, Int, Space

SCHEMA_VERSION = 1
METADATA_KEY = b"tune_pipeline"
TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
EXPERIMENT_FILE = "experiment.json"
PARTS_DIR = "parts"
_ATTEMPT_DIR = re.compile(r"a(\d{6})")

__all__ = ["JOURNAL_FILE", "STATUS_ERROR", "STATUS_FINISHED", "STATUS_STOPPED", "ResultsWriter",
           "MetricColumns", "SCHEMA_VERSION", "SchemaVersionError", "best_row",
           "check_schema_version", "comparable_rows", "part_files", "ranked_rows"]


class SchemaVersionError(ValueError):
    """Results written with a newer schema than this code reads; the message is one line."""


def check_schema_version(version: Any, where: str) -> None:
    """Refuse results of a newer schema version; the current and older ones are read.

    Parameters
    ----------
    version : int, str or None
        The ``schema_version`` a file carries; None (not recorded) is read as it is.
    where : str
        The file, named in the message.

    Raises
    ------
    SchemaVersionError
        ``version`` is newer than ``SCHEMA_VERSION``, or not a whole number.
    """
    if version is None:
        return
    if isinstance(version, bool) or not isinstance(version, (int, str)) \
            or not str(version).isdigit():
        raise SchemaVersionError(f"{where} has an unreadable results schema version {version!r}")
    if int(version) > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{where} has results schema version {int(version)}, newer than this tune-pipeline "
            f"reads (up to {SCHEMA_VERSION}); upgrade tune-pipeline to read it")


def parquet_schema_version(metadata: Mapping[bytes, bytes] | None) -> Any:
    """The ``schema_version`` in a Parquet file's key-value metadata (None if absent)."""
    raw = (metadata or {}).get(METADATA_KEY)
    if raw is None:
        return None
    try:
        return json.loads(raw).get("schema_version")
    except (ValueError, AttributeError):
        return None


def check_parquet_file(path: str) -> None:
    """Refuse a results Parquet file (``trials.parquet``) of a newer schema version.

    Raises
    ------
    SchemaVersionError
        See ``check_schema_version``.
    """
    check_schema_version(parquet_schema_version(pq.read_schema(path).metadata), f"'{path}'")


@dataclass(frozen=True)
class MetricColumns:
    """What a task reports: the searched metric, its direction, and every metric column.

    Parameters
    ----------
    metric : str
        The column the search optimizes (``cv_accuracy``, ``val_accuracy``).
    mode : str
        ``max`` or ``min``.
    columns : mapping of str to pyarrow type
        Every reported metric kept in the Parquet files, in column order.
    step : str
        The metric that counts fidelity (``fidelity`` for SVMs, ``epoch`` for fine-tuning).
    select : str
        How the best trial is chosen. ``last``: by the last report, among trials that reached
        the highest fidelity (an SVM score on 1/9 of the rows is not comparable). ``best``: by
        the best report over the trial (fine-tuning keeps the best epoch's weights).
    """

    metric: str
    mode: str
    columns: Mapping[str, pa.DataType]
    step: str
    select: str = "last"

    @property
    def score_column(self) -> str:
        """The column a trial is ranked by: the last report, or the best one (``best_<metric>``)."""
        return self.metric if self.select == "last" else f"best_{self.metric}"

    def to_dict(self) -> dict[str, Any]:
        return {"metric": self.metric, "mode": self.mode, "step": self.step, "select": self.select,
                "columns": {k: str(v) for k, v in self.columns.items()}}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> MetricColumns:
        columns = {k: pa.type_for_alias(v) for k, v in data["columns"].items()}
        return cls(data["metric"], data["mode"], columns, data["step"], data.get("select", "last"))


def param_type(param: Any) -> pa.DataType:
    """The Arrow type of one parameter's column."""
    if isinstance(param, Int):
        return pa.int64()
    if isinstance(param, Float):
        return pa.float64()
    values = param.choices if isinstance(param, Categorical) else [param.value] if isinstance(param, Fixed) else []
    # The choice None is stored as null in a column of the other choices' type, so
    # Categorical([None, 8, 32]) (a forest's max_depth) is an int64 column, not a string one.
    values = [v for v in values if v is not None]
    if values and all(isinstance(v, bool) for v in values):
        return pa.bool_()
    if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        return pa.int64()
    if values and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
        return pa.float64()
    return pa.string()


def trials_schema(space: Space, metrics: MetricColumns) -> pa.Schema:
    fields = [
        ("experiment", pa.string()),
        ("trial_id", pa.string()),
        ("trial_index", pa.int64()),
    ]
    fields += [(f"param_{name}", param_type(p)) for name, p in space.params.items()]
    fields += list(metrics.columns.items())
    fields += [
        (f"best_{metrics.metric}", pa.float64()),
        ("best_iteration", pa.int64()),
        ("iterations", pa.int64()),
        ("status", pa.string()),
        ("stopped_by", pa.string()),
        ("error", pa.string()),
        ("start_time", pa.timestamp("ms", tz="UTC")),
        ("end_time", pa.timestamp("ms", tz="UTC")),
        ("wall_time_s", pa.float64()),
        ("node", pa.string()),
        ("node_ip", pa.string()),
        ("node_id", pa.string()),
        ("resources", pa.string()),
        ("algorithm", pa.string()),
        ("scheduler", pa.string()),
        ("seed", pa.int64()),
        ("checkpoint", pa.string()),
    ]
    return pa.schema(fields)


def epochs_schema(metrics: MetricColumns) -> pa.Schema:
    fields = [("experiment", pa.string()), ("trial_id", pa.string()), ("trial_index", pa.int64()),
              ("iteration", pa.int64())]
    fields += list(metrics.columns.items())
    fields += [("time_total_s", pa.float64()), ("timestamp", pa.timestamp("ms", tz="UTC"))]
    return pa.schema(fields)


def _clean(value: Any) -> Any:
    """JSON- and Arrow-friendly scalars (numpy scalars to Python, NaN kept as float)."""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return value
    return value


def _cast(value: Any, dtype: pa.DataType) -> Any:
    if value is None:
        return None
    value = _clean(value)
    try:
        if pa.types.is_floating(dtype):
            return float(value)
        if pa.types.is_integer(dtype):
            return int(value)
        if pa.types.is_boolean(dtype):
            return bool(value)
        if pa.types.is_string(dtype):
            return str(value)
        if pa.types.is_timestamp(dtype):
            return datetime.fromtimestamp(float(value), tz=timezone.utc)
    except (TypeError, ValueError):
        return None
    return value


_METRICS, _ITERATION = itemgetter("metrics"), itemgetter("iteration")
_TEXT = {str, type(None)}  # pyarrow would take bytes as text too; _cast makes "b'...'" of them


def _column(values: list, dtype: pa.DataType) -> pa.Array:
    """``values`` as an Arrow array of ``dtype``, each value exactly as ``_cast`` makes it.

    pyarrow converts plain values of the right kind in C; a column it refuses (a "nan" read
    back from the journal, a float in an int column) goes through ``_cast`` value by value.
    """
    if pa.types.is_timestamp(dtype):
        fast = _timestamps(values, dtype)
        if fast is not None:
            return fast
    elif not pa.types.is_string(dtype) or set(map(type, values)) <= _TEXT:
        try:
            return pa.array(values, type=dtype)
        except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
            pass
    return pa.array([_cast(v, dtype) for v in values], type=dtype)


def _timestamps(values: list, dtype: pa.TimestampType) -> pa.Array | None:
    """Seconds since the epoch as ``dtype`` for a whole column, as ``_cast`` makes each.

    ``datetime.fromtimestamp`` rounds a float to the microsecond (half to even) and pyarrow cuts
    that down to the column's unit; numpy does the same to every value at once. None when a
    value is not a plain number in range (then ``_cast`` takes each).
    """
    if dtype.unit not in ("s", "ms", "us"):
        return None
    try:
        # float(value) as _cast takes it: numbers (bools too) convert, text does not.
        floats = pa.array(values, type=pa.float64())
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, ValueError, OverflowError):
        return None
    seconds = floats.fill_null(0.0).to_numpy()
    if not (np.isfinite(seconds) & (seconds >= 0) & (seconds < 1e11)).all():
        return None
    whole = np.trunc(seconds)
    micros = whole.astype(np.int64) * 1_000_000 + np.round((seconds - whole) * 1e6).astype(np.int64)
    per_unit = {"s": 1_000_000, "ms": 1_000, "us": 1}[dtype.unit]
    return pa.array(micros // per_unit, type=dtype,
                    mask=floats.is_null().to_numpy(zero_copy_only=False))


def rows_to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    """The rows (dicts; a missing key is null) as a table of ``schema``."""
    return columns_to_table({f.name: [r.get(f.name) for r in rows] for f in schema}, schema)


def columns_to_table(columns: Mapping[str, Any], schema: pa.Schema) -> pa.Table:
    """Lists of values by column name as a table of ``schema`` (values cast as ``_cast`` does;
    an Arrow array is taken as it is)."""
    return pa.table({f.name: columns[f.name] if isinstance(columns[f.name], pa.Array)
                     else _column(columns[f.name], f.type) for f in schema}, schema=schema)


def _by_trial_index(table: pa.Table) -> pa.Table:
    """``table`` in ``trial_index`` order; a stable sort, so a trial's reports keep theirs."""
    index = table["trial_index"]
    if len(index) < 2 or pc.all(pc.less_equal(index[:-1], index[1:])).as_py():
        return table  # trials often end in the order they started
    return table.take(pc.sort_indices(table, sort_keys=[("trial_index", "ascending")]))


def part_files(storage: Storage, folder: str, kind: str) -> list[str]:
    """The parts of ``kind`` (``trials`` or ``epochs``) in an experiment folder, oldest first.

    Parameters
    ----------
    storage : Storage
        The storage the folder is in.
    folder : str
        The experiment folder relative to the storage root ("" for the root itself).
    kind : str
        ``trials`` or ``epochs``.

    Returns
    -------
    list of str
        Paths relative to the storage root, in the order they were written.
    """
    prefix = f"{folder}/{PARTS_DIR}/{kind}" if folder else f"{PARTS_DIR}/{kind}"
    return [p for p in storage.list_files(prefix) if p.endswith(".parquet")]


def table_bytes(table: pa.Table, metadata: Mapping[str, Any]) -> bytes:
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(metadata, default=str).encode()
    table = table.replace_schema_metadata(meta)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


class ResultsWriter:
    """Journals every trial event at once, and writes the Parquet views of the journal.

    The journal (``pipelines.journal``) is the one record; the parts, ``trials.parquet`` and
    ``epochs.parquet`` are rebuilt from what it holds (see the module's docstring for the
    layout).

    Parameters
    ----------
    storage : Storage
        Where the experiment folder lives.
    experiment : str
        The experiment's name (its folder under the storage root).
    space : Space
        Gives the typed ``param_<name>`` columns.
    metrics : MetricColumns
        The task's metric columns.
    run_info : dict
        ``algorithm``, ``scheduler``, ``seed`` and ``resources``, journaled with each trial.
    iteration_key : str
        The result key that numbers a trial's reports (Tune's ``training_iteration``, or the
        trial's own ``epoch``, which a trial resumed from a checkpoint continues).
    flush_every_s : float
        Least time between two parts while trials run.
    """

    def __init__(self, storage: Storage, experiment: str, space: Space, metrics: MetricColumns,
                 run_info: Mapping[str, Any], metadata: Mapping[str, Any],
                 flush_every_s: float = 2.0, iteration_key: str = "training_iteration"):
        self.storage = storage
        self.experiment = experiment
        self.space = space
        self.metrics = metrics
        self.run_info = dict(run_info)
        self.metadata = dict(metadata)
        self.flush_every_s = flush_every_s
        self.iteration_key = iteration_key
        self.trials_schema = trials_schema(space, metrics)
        self.epochs_schema = epochs_schema(metrics)
        self.journal = Journal(storage, experiment)
        self.log = TrialLog(metrics.metric, metrics.mode, metrics.columns)
        self._lock = threading.Lock()
        self._pending: list[str] = []  # ended trials no part holds yet, in the order they ended
        self._written: set[str] = set()  # ended trials in self._tables
        self.lived_in: list[str] = []  # folders the experiment lived in (``load_journal``)
        self._part_warned = False
        # (trials, epochs) tables of every part written, or of the last compaction and the
        # parts since: compaction concatenates them, it never reads the parts back.
        self._tables: list[tuple[pa.Table, pa.Table]] = []
        self._attempt: int | None = None
        self._seq = 0
        self._earlier_parts_gone = False
        self._compacted: int | None = None  # trials in the last compaction
        self._last_part = float("-inf")  # the first trial to end writes a part at once
        self._part_seconds = 0.0

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its RunConfig (callbacks included) into tuner.pkl.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    def _record(self, event: Mapping[str, Any]) -> None:
        """Journal first (durable), then update the views."""
        with self._lock:
            self.journal.append(event)
            trial_id = event.get("trial_id")
            was_ended = self.is_ended(trial_id)
            self.log.apply(event)
            if not was_ended and self.is_ended(trial_id):
                self._pending.append(trial_id)

    # --- events -----------------------------------------------------------------------------
    def known(self, trial_id: str) -> bool:
        return trial_id in self.log.trials

    def is_ended(self, trial_id: str) -> bool:
        return bool(self.log.trials.get(trial_id, {}).get("status"))

    def start_trial(self, trial_id: str, trial_index: int, config: Mapping[str, Any],
                    source: str | None = None, at: float | None = None) -> None:
        """A trial starts, or starts again (a retry, or a re-run after a crash); ``at`` is
        when, if not now."""
        params = {k: v for k, v in config.items() if k in self.space.params}
        self._record(start_event(trial_id, trial_index, params, source=source,
                                 info=self.run_info, at=at))

    def add_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        if trial_id not in self.log.trials:
            return
        iteration = result.get(self.iteration_key)
        if not isinstance(iteration, (int, float)) or isinstance(iteration, bool):
            iteration = result.get("training_iteration", 1)
        kept = {name: result[name] for name in self.metrics.columns if name in result}
        for key in _REPORT_EXTRAS:
            if result.get(key) is not None:
                kept[key] = result[key]
        path = kept.get("checkpoint_path")
        if isinstance(path, str) and "://" not in path and not self.storage.is_local:
            # storage: a multi-worker trial's Train checkpoint path is relative to the object
            # store's filesystem; record the URI, which readers can open as it is.
            kept["checkpoint_path"] = f"{self.storage.uri.split('://', 1)[0]}://{path}"
        self._record(report_event(trial_id, int(iteration), kept))

    def add_checkpoint(self, trial_id: str, path: str | None) -> None:
        if path and trial_id in self.log.trials:
            self._record(checkpoint_event(trial_id, path))

    def end_trial(self, trial_id: str, status: str, *, error: str | None = None,
                  checkpoint: str | None = None, stopped_by: str | None = None,
                  at: float | None = None) -> None:
        if trial_id not in self.log.trials:
            return
        if error:
            error = error.strip().splitlines()[-1][:2000] if error.strip() else error
        self._record(end_event(trial_id, status, error=error, stopped_by=stopped_by,
                               checkpoint=checkpoint, at=at))
        # A part costs what ended since the last one; spacing them still keeps small files few
        # and, on a slow store, at most a tenth of the driver's time. The journal already holds
        # every event.
        interval = max(self.flush_every_s, 10 * self._part_seconds)
        if time.monotonic() - self._last_part >= interval:
            try:
                self.write_part()
            except OSError as exc:
                # A part is a copy of what the journal already holds, and its rows stay in
                # this writer for the final files: a store that refuses it (full, down for a
                # moment) must not turn a finished trial into a failed one (Tune would count
                # it as an error, and retry it with --max-failures).
                if not self._part_warned:
                    print(f"warning: could not write a results part ({one_line(exc)});"
                          " the journal holds every trial, and the files are written at the end",
                          file=sys.stderr, flush=True)
                    self._part_warned = True

    def load_journal(self, moved_from: Iterable[str] = ()) -> int:
        """Replay an earlier run's journal (for --resume); returns the number of ended trials.
        ``lived_in`` is then the folders the experiment has lived in (``moved_from`` and those
        its one-process checkpoints name: an experiment from before ``locations`` was kept).

        Every ended trial goes into the next part (or compaction) of this writer. Checkpoints
        recorded under one of those folders are read from the experiment's folder now
        (``TrialLog.rebase_checkpoints``).
        """
        with self._lock:
            self.log.apply_all(self.journal.read())
            lived_in = list(dict.fromkeys([*moved_from, *sorted(self.log.checkpoint_dirs())]))
            self.log.rebase_checkpoints(lived_in, self.storage.uri_of(self.experiment))
            self.lived_in = lived_in
            ended = self.log.ended()
            self._pending = [t["trial_id"] for t in ended if t["trial_id"] not in self._written]
        return len(ended)

    def end_cut_trials(self) -> int:
        """End, as stopped early, the trials whose last journaled report is the one the
        scheduler cut them on while the driver died before their end was written (``--resume``,
        after ``load_journal``): continued, they would train past the rung that stopped them
        and be scored as if they had survived it. Returns how many."""
        with self._lock:
            cut = [t for t in self.log.unfinished()
                   if (reports := self.log.epoch_reports(t["trial_id"]))
                   and reports[-1].get("metrics", {}).get("stopped_by") == "scheduler"]
        for trial in cut:
            checkpoints = trial.get("checkpoints") or [None]
            self.end_trial(trial["trial_id"], STATUS_STOPPED, checkpoint=checkpoints[-1],
                           stopped_by="scheduler", at=trial.get("last_time"))
        return len(cut)

    # --- views ------------------------------------------------------------------------------
    def _row(self, trial: Mapping[str, Any]) -> dict[str, Any]:
        log, tid = self.log, trial["trial_id"]
        row: dict[str, Any] = {"experiment": self.experiment, "trial_id": tid,
                               "trial_index": trial["trial_index"], **trial.get("info", {})}
        for name in self.space.params:
            row[f"param_{name}"] = trial["config"].get(name)
        reports = log.epoch_reports(tid)
        last = reports[-1]["metrics"] if reports else {}
        for name in self.metrics.columns:
            row[name] = last.get(name)
        best = log.best_report(tid, reports)
        if best is not None:
            row[f"best_{self.metrics.metric}"] = best["metrics"][self.metrics.metric]
            row["best_iteration"] = best["iteration"]
        row["iterations"] = reports[-1]["iteration"] if reports else 0
        for key, column in (("hostname", "node"), ("node_ip", "node_ip"), ("node_id", "node_id")):
            # The last report that names it.
            value = next((r["metrics"][key] for r in reversed(reports) if r["metrics"].get(key)),
                         None)
            if value:
                row[column] = value
        row["status"] = log.status(tid, reports)
        row["stopped_by"] = log.stopped_by(tid, reports)
        row["error"] = trial.get("error")
        row["start_time"] = trial.get("start_time")
        row["end_time"] = trial.get("end_time")
        # Not end minus start: a trial continued after a --resume did not run while the
        # driver was down.
        row["wall_time_s"] = log.run_seconds(tid)
        row["checkpoint"] = trial.get("checkpoint") or log.last_checkpoint(tid, reports=reports)
        return row

    def _epoch_columns(self, trials: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        """The epochs.parquet rows of ``trials``, column by column (one row per report).

        What is the same for all of a trial's reports is converted once per trial and
        repeated by Arrow.
        """
        per_trial = {"experiment": [self.experiment] * len(trials),
                     "trial_id": [t["trial_id"] for t in trials],
                     "trial_index": [t["trial_index"] for t in trials]}
        columns: dict[str, Any] = {name: [] for name in self.epochs_schema.names
                                   if name not in per_trial}
        counts = []
        for trial in trials:
            reports = self.log.epoch_reports(trial["trial_id"])
            counts.append(len(reports))
            metrics = list(map(_METRICS, reports))
            columns["iteration"] += map(_ITERATION, reports)
            for name in dict.fromkeys((*self.metrics.columns, "time_total_s")):
                columns[name] += map(dict.get, metrics, repeat(name))
            columns["timestamp"] += [m["timestamp"] if "timestamp" in m else report.get("time")
                                     for m, report in zip(metrics, reports, strict=True)]
        rows = np.repeat(np.arange(len(trials)), counts)
        for name, values in per_trial.items():
            columns[name] = _column(values, self.epochs_schema.field(name).type).take(rows)
        return columns

    def _views(self, trials: Sequence[Mapping[str, Any]]) -> tuple[pa.Table, pa.Table]:
        """The trials.parquet and epochs.parquet rows of ``trials`` (ended ones)."""
        return (rows_to_table([self._row(t) for t in trials], self.trials_schema),
                columns_to_table(self._epoch_columns(trials), self.epochs_schema))

    def finished_rows(self) -> list[dict[str, Any]]:
        """One row per ended trial, in the searcher's order."""
        with self._lock:
            return [self._row(t) for t in self.log.ended()]

    def _file_metadata(self) -> dict[str, Any]:
        return {**self.metadata, "schema_version": SCHEMA_VERSION}

    def _part_path(self, kind: str, seq: int) -> str:
        return f"{self.experiment}/{PARTS_DIR}/{kind}/a{self._attempt:06d}/{seq:09d}.parquet"

    def _attempt_dirs(self) -> list[tuple[str, str]]:
        """``(kind, folder name)`` of every attempt's parts on storage."""
        out = []
        for kind in ("trials", "epochs"):
            selector = pafs.FileSelector(self.storage.path(self.experiment, PARTS_DIR, kind),
                                         allow_not_found=True)
            out += [(kind, info.base_name) for info in self.storage.fs.get_file_info(selector)
                    if info.type == pafs.FileType.Directory
                    and _ATTEMPT_DIR.fullmatch(info.base_name)]
        return out

    def write_part(self) -> None:
        """Write the trials ended since the last part, and their reports, as a new part.

        The epochs file goes first, so a reader who finds a trial in a part finds its reports.
        After this writer's first part, the parts of earlier attempts (a run before a
        ``--resume``) are deleted: that part holds every trial they held.
        """
        with self._lock:
            if not self._pending:
                return
            trials = sorted((self.log.trials[t] for t in self._pending),
                            key=lambda t: t["trial_index"])
            self._pending = []
            trials_table, epochs_table = self._views(trials)
            self._tables.append((trials_table, epochs_table))
            self._written.update(t["trial_id"] for t in trials)
            self._last_part = time.monotonic()
            if self._attempt is None:
                # After every earlier attempt, so that a resume never overwrites a part.
                self._attempt = 1 + max((int(name[1:]) for _, name in self._attempt_dirs()),
                                        default=0)
            self._seq += 1
            seq = self._seq
        started = time.monotonic()
        meta = self._file_metadata()
        self.storage.write_bytes(self._part_path("epochs", seq), table_bytes(epochs_table, meta))
        pause_point("flush")  # the reliability tests kill the driver here, between two files
        self.storage.write_bytes(self._part_path("trials", seq), table_bytes(trials_table, meta))
        if not self._earlier_parts_gone:
            mine = f"a{self._attempt:06d}"
            for kind, name in self._attempt_dirs():
                if name != mine:
                    self.storage.delete_dir(f"{self.experiment}/{PARTS_DIR}/{kind}/{name}")
            self._earlier_parts_gone = True
        self._part_seconds = time.monotonic() - started

    def flush(self) -> None:
        """Compact: write trials.parquet and epochs.parquet with every ended trial, then
        delete the parts.

        The run calls it at its end, and ``rebuild`` after a hard kill. Nothing is read back:
        the tables of the parts this writer wrote are concatenated with the trials no part
        holds yet (all of them after ``load_journal``). epochs.parquet goes first, so a reader
        who finds a trial in trials.parquet finds its reports.
        """
        with self._lock:
            missing = [t for t in self.log.ended() if t["trial_id"] not in self._written]
            if not missing and self._compacted == len(self._written):
                return  # nothing ended since the last compaction
            if missing or not self._tables:
                self._tables.append(self._views(missing))
                self._written.update(t["trial_id"] for t in missing)
            self._pending = []
            # A trial's reports are together and in order in one part: sorting the trials
            # sorts them.
            trials = _by_trial_index(pa.concat_tables([t for t, _ in self._tables]))
            epochs = _by_trial_index(pa.concat_tables([e for _, e in self._tables]))
            self._tables = [(trials, epochs)]
            self._compacted = len(self._written)
        meta = self._file_metadata()
        self.storage.write_bytes(f"{self.experiment}/{EPOCHS_FILE}", table_bytes(epochs, meta))
        self.storage.write_bytes(f"{self.experiment}/{TRIALS_FILE}", table_bytes(trials, meta))
        self.storage.delete_dir(f"{self.experiment}/{PARTS_DIR}")
        self._earlier_parts_gone = True

    def best(self) -> dict[str, Any] | None:
        """The best trial by the task's ``select`` rule; ties keep the earliest trial."""
        return best_row(self.finished_rows(), self.metrics)


def comparable_rows(rows: Sequence[Mapping[str, Any]],
                    metrics: MetricColumns) -> list[Mapping[str, Any]]:
    """The trials whose scores can be ranked against each other, in the order given.

    A trial counts when it did not fail and has a finite score in ``metrics.score_column``.
    With ``select == "last"`` only the trials that reached the highest fidelity any of them
    reached count: an SVM scored on 1/9 of the rows is not comparable with one scored on all.

    Parameters
    ----------
    rows : sequence of mapping
        ``trials.parquet`` rows (missing values as None).
    metrics : MetricColumns
        The task's metric, mode, step and selection rule.

    Returns
    -------
    list of mapping
        The comparable rows.
    """
    key = metrics.score_column
    rows = [r for r in rows if r.get("status") != STATUS_ERROR
            and finite_number(r.get(key)) is not None]
    if rows and metrics.select == "last":
        top_step = max(float(r.get(metrics.step) or 0) for r in rows)
        rows = [r for r in rows if float(r.get(metrics.step) or 0) >= top_step]
    return rows


def rank_key(score: float, trial_index: int, mode: str) -> tuple[float, int]:
    """Sort key of the one selection rule: the better score first, then the earlier trial."""
    sign = 1.0 if mode == "max" else -1.0
    return (-sign * float(score), int(trial_index))


def ranked_rows(rows: Sequence[Mapping[str, Any]],
                metrics: MetricColumns) -> list[Mapping[str, Any]]:
    """The comparable rows (``comparable_rows``), best first; ties keep the earliest trial.

    The earliest wins a tie, as scikit-learn's GridSearchCV does (``best_index_``). This is the
    project's one selection rule: the run's best trial, the report's top configs and the
    analysis all rank with it.
    """
    key = metrics.score_column
    return sorted(comparable_rows(rows, metrics),
                  key=lambda r: rank_key(r[key], r["trial_index"], metrics.mode))


def best_row(rows: Sequence[Mapping[str, Any]], metrics: MetricColumns) -> Any:
    """The best of ``rows`` by ``ranked_rows``, or None when no trial has a comparable score."""
    ranked = ranked_rows(rows, metrics)
    return ranked[0] if ranked else None


# Result keys journaled with each report besides the metric columns: where it ran, why it
# stopped, where its checkpoint is (multi-worker trials report it as a metric), Tune's clock.
_REPORT_EXTRAS = ("hostname", "node_ip", "node_id", "stopped_by", "early_stopped",
                  "checkpoint_path", "time_total_s", "timestamp")


def write_experiment_json(storage: Storage, experiment: str, info: Mapping[str, Any]) -> None:
    storage.write_bytes(f"{experiment}/{EXPERIMENT_FILE}",
                        json.dumps(info, indent=2, default=str).encode() + b"\n")


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": sys.version.split()[0]}
    for name in ("ray", "torch", "torchvision", "scikit-learn", "bayesian-optimization",
                 "pandas", "pyarrow", "numpy", "tune-pipeline"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _split_location(location: str) -> tuple[Storage, str]:
    """An experiment's folder or URI as (the storage it lives in, its name)."""
    if "://" in location:
        parent, _, name = location.rstrip("/").rpartition("/")
    else:
        full = os.path.abspath(location)
        parent, name = os.path.dirname(full), os.path.basename(full)
    return Storage(parent), name


class NoJournal(ValueError):
    """The experiment has no journal to rebuild its files from."""


def rebuild_from_journal(experiment_dir: str) -> int:
    """Rewrite the Parquet files of an experiment (a local folder or an object-store URI such
    as ``s3://bucket/prefix/NAME``) from its journal; returns the trial count.

    Raises
    ------
    SchemaVersionError
        The experiment was written with a newer schema version.
    NoJournal
        The experiment holds no journal (the Parquet files are not touched).
    """
    storage, name = _split_location(experiment_dir)
    info = json.loads(storage.read_bytes(f"{name}/{EXPERIMENT_FILE}"))
    check_schema_version(info.get("schema_version"), storage.uri_of(name, EXPERIMENT_FILE))
    space = Space.from_dict(info["space"])
    if not Journal(storage, name).exists():
        # Without its journal a rebuild would write zero trials over the files it came to fix.
        raise NoJournal(f"'{storage.uri_of(name)}' holds no journal ({JOURNAL_FILE} or "
                        f"{JOURNAL_DIR}/): nothing to rebuild from; the Parquet files are left "
                        "as they are")
    writer = ResultsWriter(storage, name, space,
                           MetricColumns.from_dict(info["metrics"]), {},
                           # the folder's name, as the rows' experiment column has it (a copied
                           # folder is the experiment of that name, as --resume makes it)
                           {"experiment": name, "task": info.get("task")},
                           iteration_key=info.get("iteration_key", "training_iteration"))
    count = writer.load_journal()
    writer.flush()
    return count


def main(argv: Sequence[str] | None = None) -> int:
    from pipelines.cli import OneLineParser

    parser = OneLineParser(prog="python -m pipelines.results",
                           description="Maintenance of an experiment's result files.")
    sub = parser.add_subparsers(dest="command", required=True)
    rebuild = sub.add_parser("rebuild", help="rewrite Parquet from the journal after a hard kill")
    rebuild.add_argument("experiment_dir")
    args = parser.parse_args(argv)
    try:
        storage, name = _split_location(args.experiment_dir)
        found = storage.exists(name, EXPERIMENT_FILE)
    except (StorageError, OSError) as exc:
        print(f"error: '{args.experiment_dir}': {one_line(exc)}", file=sys.stderr)
        return 2
    if not found:
        print(f"error: '{args.experiment_dir}' holds no {EXPERIMENT_FILE}", file=sys.stderr)
        return 2
    try:
        count = rebuild_from_journal(args.experiment_dir)
    except (SchemaVersionError, NoJournal) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (ValueError, KeyError, TypeError) as exc:  # a SpaceError is a ValueError
        # experiment.json cut short or edited by hand: the record the Parquet files are typed by
        print(f"error: '{storage.uri_of(name, EXPERIMENT_FILE)}' is not a readable experiment "
              f"record ({type(exc).__name__}: {one_line(exc)}); the Parquet files are left as "
              "they are", file=sys.stderr)
        return 2
    print(f"rebuilt {TRIALS_FILE} and {EPOCHS_FILE} with {count} trials")
    return 0


if __name__ == "__main__":
    from pipelines import cli

    raise SystemExit(cli.call_main(main, interrupted="each file is written whole or "
                                                      "not at all; run the rebuild again"))
