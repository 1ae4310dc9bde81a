"""Parquet results, the product's API: ``trials.parquet``, ``epochs.parquet``, ``experiment.json``.

A Tune callback collects every report and every trial's end on the driver. Each finished trial
is appended at once to a journal (``trials.journal.jsonl``, one JSON line, flushed and fsynced),
so a crash never loses a finished trial; the Parquet files are rewritten from memory at most
every ``flush_every_s`` seconds (longer once a rewrite itself takes long: at most a tenth of the
time goes to rewrites) and always at the end. ``python -m pipelines.results rebuild DIR``
turns a journal back into Parquet after a hard kill.

Columns only change with ``SCHEMA_VERSION``; README documents each one.
"""

from __future__ import annotations

import io
import json
import math
import os
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.storage import Storage
from search_spaces.space import Categorical, Fixed, Float, Int, Space

SCHEMA_VERSION = 1
METADATA_KEY = b"tune_pipeline"
TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
JOURNAL_FILE = "trials.journal.jsonl"
EXPERIMENT_FILE = "experiment.json"

STATUS_FINISHED = "finished"
STATUS_STOPPED = "stopped_early"
STATUS_ERROR = "error"


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


def rows_to_table(rows: Sequence[Mapping[str, Any]], schema: pa.Schema) -> pa.Table:
    columns = {f.name: [_cast(r.get(f.name), f.type) for r in rows] for f in schema}
    return pa.table(columns, schema=schema)


def table_bytes(table: pa.Table, metadata: Mapping[str, Any]) -> bytes:
    meta = dict(table.schema.metadata or {})
    meta[METADATA_KEY] = json.dumps(metadata, default=str).encode()
    table = table.replace_schema_metadata(meta)
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return sink.getvalue()


def _is_better(a: float | None, b: float | None, mode: str) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return False
    if b is None or (isinstance(b, float) and math.isnan(b)):
        return True
    return a > b if mode == "max" else a < b


class ResultsWriter:
    """Keeps every trial's rows and writes the Parquet files and the journal.

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
        ``algorithm``, ``scheduler``, ``seed`` and ``resources`` for every row.
    flush_every_s : float
        Least time between two Parquet rewrites while trials run.
    """

    def __init__(self, storage: Storage, experiment: str, space: Space, metrics: MetricColumns,
                 run_info: Mapping[str, Any], metadata: Mapping[str, Any], flush_every_s: float = 2.0):
        self.storage = storage
        self.experiment = experiment
        self.space = space
        self.metrics = metrics
        self.run_info = dict(run_info)
        self.metadata = dict(metadata)
        self.flush_every_s = flush_every_s
        self.trials_schema = trials_schema(space, metrics)
        self.epochs_schema = epochs_schema(metrics)
        self.trials: dict[str, dict[str, Any]] = {}
        # Reports per trial id: a trial's end touches only its own rows, not every trial's.
        self.epochs: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()
        self._last_flush = 0.0
        self._flush_seconds = 0.0
        self._dirty = False
        if storage.is_local:
            self._journal_path = storage.path(experiment, JOURNAL_FILE)
        else:
            self._journal_path = os.path.join(tempfile.mkdtemp(prefix="tune-journal-"), JOURNAL_FILE)

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its RunConfig (callbacks included) into tuner.pkl for restores.
        state = dict(self.__dict__)
        state.pop("_lock", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.Lock()

    # --- rows -------------------------------------------------------------------------------
    def start_trial(self, trial_id: str, trial_index: int, config: Mapping[str, Any]) -> None:
        with self._lock:
            row = self.trials.get(trial_id)
            if row is None or row.get("status") is not None:
                row = {"experiment": self.experiment, "trial_id": trial_id,
                       "trial_index": trial_index, "iterations": 0, **self.run_info}
                for name in self.space.params:
                    row[f"param_{name}"] = config.get(name)
                self.trials[trial_id] = row
                # A restarted trial's earlier reports are replaced by what it reports again.
                self.epochs[trial_id] = []
            row.setdefault("start_time", time.time())

    def add_result(self, trial_id: str, result: Mapping[str, Any]) -> None:
        with self._lock:
            row = self.trials[trial_id]
            iteration = int(result.get("training_iteration", row["iterations"] + 1))
            epoch = {"experiment": self.experiment, "trial_id": trial_id,
                     "trial_index": row["trial_index"], "iteration": iteration,
                     "time_total_s": result.get("time_total_s"),
                     "timestamp": result.get("timestamp", time.time())}
            for name in self.metrics.columns:
                if name in result:
                    epoch[name] = result[name]
                    row[name] = result[name]
            self.epochs.setdefault(trial_id, []).append(epoch)
            row["iterations"] = iteration
            value = _clean(result.get(self.metrics.metric))
            if _is_better(value, row.get(f"best_{self.metrics.metric}"), self.metrics.mode):
                row[f"best_{self.metrics.metric}"] = value
                row["best_iteration"] = iteration
            for key, column in (("hostname", "node"), ("node_ip", "node_ip"), ("node_id", "node_id")):
                if result.get(key):
                    row[column] = result[key]
            if result.get("stopped_by"):
                row["stopped_by"] = result["stopped_by"]

    def end_trial(self, trial_id: str, status: str, *, error: str | None = None,
                  checkpoint: str | None = None, stopped_by: str | None = None) -> None:
        with self._lock:
            row = self.trials[trial_id]
            # A trial that stopped itself (patience) reports why; it ended early, not failed.
            if status == STATUS_FINISHED and (row.get("stopped_by") or stopped_by):
                status = STATUS_STOPPED
            row["status"] = status
            row["end_time"] = time.time()
            row["wall_time_s"] = row["end_time"] - row["start_time"]
            if error:
                row["error"] = error.strip().splitlines()[-1][:2000] if error.strip() else error
            if checkpoint:
                row["checkpoint"] = checkpoint
            if stopped_by and not row.get("stopped_by"):
                row["stopped_by"] = stopped_by
            self._append_journal(row)
            self._dirty = True
        # Rewrites grow with the table (0.5 s at 10,000 trials): space them so they take at
        # most a tenth of the driver's time. The journal already holds every finished trial.
        interval = max(self.flush_every_s, 10 * self._flush_seconds)
        if time.monotonic() - self._last_flush >= interval:
            self.flush()

    def _append_journal(self, row: Mapping[str, Any]) -> None:
        epochs = self.epochs.get(row["trial_id"], [])
        line = json.dumps({"trial": row, "epochs": epochs}, default=_clean)
        os.makedirs(os.path.dirname(self._journal_path), exist_ok=True)
        with open(self._journal_path, "a", encoding="utf-8") as f:
            f.write(line + "\n")
            f.flush()
            os.fsync(f.fileno())

    def load_journal(self) -> int:
        """Reload finished trials from an earlier run's journal (for --resume); returns count."""
        if not self.storage.is_local and self.storage.exists(self.experiment, JOURNAL_FILE):
            # storage: on an object store the journal is kept in a local temp file and uploaded
            # at each flush; a resumed run starts from the uploaded copy.
            with open(self._journal_path, "wb") as f:
                f.write(self.storage.read_bytes(f"{self.experiment}/{JOURNAL_FILE}"))
        if not os.path.exists(self._journal_path):
            return 0
        with open(self._journal_path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut by a hard kill
                trial = entry["trial"]
                self.trials[trial["trial_id"]] = trial
                self.epochs[trial["trial_id"]] = list(entry.get("epochs", []))
        return sum(1 for r in self.trials.values() if r.get("status"))

    # --- files ------------------------------------------------------------------------------
    def finished_rows(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = [dict(r) for r in self.trials.values() if r.get("status")]
        return sorted(rows, key=lambda r: r["trial_index"])

    def flush(self) -> None:
        """Rewrite trials.parquet and epochs.parquet with every finished trial so far."""
        with self._lock:
            if not self._dirty and self._last_flush:
                return
            finished = {t for t, r in self.trials.items() if r.get("status")}
            rows = sorted((dict(self.trials[t]) for t in finished), key=lambda r: r["trial_index"])
            epochs = sorted((dict(e) for t, reports in self.epochs.items() if t in finished
                             for e in reports),
                            key=lambda e: (e["trial_index"], e["iteration"]))
            self._dirty = False
            self._last_flush = time.monotonic()
        started = time.monotonic()
        meta = {**self.metadata, "schema_version": SCHEMA_VERSION}
        self.storage.write_bytes(
            f"{self.experiment}/{TRIALS_FILE}", table_bytes(rows_to_table(rows, self.trials_schema), meta)
        )
        self.storage.write_bytes(
            f"{self.experiment}/{EPOCHS_FILE}", table_bytes(rows_to_table(epochs, self.epochs_schema), meta)
        )
        if not self.storage.is_local and os.path.exists(self._journal_path):
            with open(self._journal_path, "rb") as f:
                self.storage.write_bytes(f"{self.experiment}/{JOURNAL_FILE}", f.read())
        self._flush_seconds = time.monotonic() - started

    def best(self) -> dict[str, Any] | None:
        """The best trial by the task's ``select`` rule; ties keep the earliest trial.

        The earliest wins a tie, as scikit-learn's GridSearchCV does (``best_index_``).
        """
        key = self.metrics.score_column
        rows = [r for r in self.finished_rows() if r["status"] != STATUS_ERROR
                and r.get(key) is not None and not math.isnan(float(r[key]))]
        if not rows:
            return None
        if self.metrics.select == "last":
            top_step = max(float(r.get(self.metrics.step) or 0) for r in rows)
            rows = [r for r in rows if float(r.get(self.metrics.step) or 0) >= top_step]
        sign = 1.0 if self.metrics.mode == "max" else -1.0
        return max(rows, key=lambda r: (sign * float(r[key]), -r["trial_index"]))


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


def rebuild_from_journal(experiment_dir: str) -> int:
    """Rewrite the Parquet files of a local experiment from its journal; returns trial count."""
    with open(os.path.join(experiment_dir, EXPERIMENT_FILE), encoding="utf-8") as f:
        info = json.load(f)
    space = Space.from_dict(info["space"])
    storage = Storage(os.path.dirname(os.path.abspath(experiment_dir)))
    writer = ResultsWriter(storage, os.path.basename(os.path.abspath(experiment_dir)), space,
                           MetricColumns.from_dict(info["metrics"]), {},
                           {"experiment": info.get("name")})
    count = writer.load_journal()
    writer._dirty = True
    writer.flush()
    return count


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pipelines.results",
                                     description="Maintenance of an experiment's result files.")
    sub = parser.add_subparsers(dest="command", required=True)
    rebuild = sub.add_parser("rebuild", help="rewrite Parquet from the journal after a hard kill")
    rebuild.add_argument("experiment_dir")
    args = parser.parse_args(argv)
    if not os.path.isfile(os.path.join(args.experiment_dir, EXPERIMENT_FILE)):
        print(f"error: '{args.experiment_dir}' holds no {EXPERIMENT_FILE}", file=sys.stderr)
        return 2
    count = rebuild_from_journal(args.experiment_dir)
    print(f"rebuilt {TRIALS_FILE} and {EPOCHS_FILE} with {count} trials")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
