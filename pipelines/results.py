"""Parquet results, the product's API: ``trials.parquet``, ``epochs.parquet``, ``experiment.json``.

A Tune callback hands every trial start, report, checkpoint and end to a ``ResultsWriter``, which
appends it to the experiment's journal (``pipelines.journal``, durable before it returns) and
keeps the Parquet files as views of it: rewritten at most every ``flush_every_s`` seconds (longer
once a rewrite itself takes long: at most a tenth of the time goes to rewrites) and always at
the end. ``python -m pipelines.results rebuild DIR`` turns a journal back into Parquet after a
hard kill.

Columns only change with ``SCHEMA_VERSION``; README documents each one.
"""

from __future__ import annotations

import io
import json
import os
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from pipelines.faults import pause_point
from pipelines.journal import (
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
from pipelines.storage import Storage
from search_spaces.space import Categorical, Fixed, Float, Int, Space

SCHEMA_VERSION = 1
METADATA_KEY = b"tune_pipeline"
TRIALS_FILE = "trials.parquet"
EPOCHS_FILE = "epochs.parquet"
EXPERIMENT_FILE = "experiment.json"

__all__ = ["JOURNAL_FILE", "STATUS_ERROR", "STATUS_FINISHED", "STATUS_STOPPED", "ResultsWriter",
           "MetricColumns", "SCHEMA_VERSION", "best_row", "comparable_rows", "ranked_rows"]


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


class ResultsWriter:
    """Journals every trial event at once, and writes the Parquet views of the journal.

    The journal (``pipelines.journal``) is the one record; ``trials.parquet`` and
    ``epochs.parquet`` are rebuilt from what it holds.

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
        Least time between two Parquet rewrites while trials run.
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
        self._last_flush = 0.0
        self._flush_seconds = 0.0
        self._dirty = False

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
            self.log.apply(event)

    # --- events -----------------------------------------------------------------------------
    def known(self, trial_id: str) -> bool:
        return trial_id in self.log.trials

    def is_ended(self, trial_id: str) -> bool:
        return bool(self.log.trials.get(trial_id, {}).get("status"))

    def start_trial(self, trial_id: str, trial_index: int, config: Mapping[str, Any],
                    source: str | None = None) -> None:
        """A trial starts, or starts again (a retry, or a re-run after a crash)."""
        params = {k: v for k, v in config.items() if k in self.space.params}
        self._record(start_event(trial_id, trial_index, params, source=source,
                                 info=self.run_info))

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
                  checkpoint: str | None = None, stopped_by: str | None = None) -> None:
        if trial_id not in self.log.trials:
            return
        if error:
            error = error.strip().splitlines()[-1][:2000] if error.strip() else error
        self._record(end_event(trial_id, status, error=error, stopped_by=stopped_by,
                               checkpoint=checkpoint))
        self._dirty = True
        # Rewrites grow with the table: space them so they take at most a tenth of the
        # driver's time. The journal already holds every event.
        interval = max(self.flush_every_s, 10 * self._flush_seconds)
        if time.monotonic() - self._last_flush >= interval:
            self.flush()

    def load_journal(self) -> int:
        """Replay an earlier run's journal (for --resume); returns the number of ended trials."""
        with self._lock:
            self.log.apply_all(self.journal.read())
            self._dirty = True
        return len(self.log.ended())

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
        best = log.best_report(tid)
        if best is not None:
            row[f"best_{self.metrics.metric}"] = best["metrics"][self.metrics.metric]
            row["best_iteration"] = best["iteration"]
        row["iterations"] = reports[-1]["iteration"] if reports else 0
        for report in reports:
            for key, column in (("hostname", "node"), ("node_ip", "node_ip"), ("node_id", "node_id")):
                if report["metrics"].get(key):
                    row[column] = report["metrics"][key]
        row["status"] = log.status(tid)
        row["stopped_by"] = log.stopped_by(tid)
        row["error"] = trial.get("error")
        row["start_time"] = trial.get("start_time")
        row["end_time"] = trial.get("end_time")
        if row["start_time"] is not None and row["end_time"] is not None:
            row["wall_time_s"] = row["end_time"] - row["start_time"]
        row["checkpoint"] = trial.get("checkpoint") or log.last_checkpoint(tid)
        return row

    def _epoch_rows(self, trial: Mapping[str, Any]) -> list[dict[str, Any]]:
        rows = []
        for report in self.log.epoch_reports(trial["trial_id"]):
            metrics = report["metrics"]
            rows.append({"experiment": self.experiment, "trial_id": trial["trial_id"],
                         "trial_index": trial["trial_index"], "iteration": report["iteration"],
                         **{name: metrics.get(name) for name in self.metrics.columns},
                         "time_total_s": metrics.get("time_total_s"),
                         "timestamp": metrics.get("timestamp", report.get("time"))})
        return rows

    def finished_rows(self) -> list[dict[str, Any]]:
        """One row per ended trial, in the searcher's order."""
        with self._lock:
            return [self._row(t) for t in self.log.ended()]

    def flush(self) -> None:
        """Rewrite trials.parquet and epochs.parquet with every ended trial so far."""
        with self._lock:
            if not self._dirty and self._last_flush:
                return
            ended = self.log.ended()
            rows = [self._row(t) for t in ended]
            epochs = [e for t in ended for e in self._epoch_rows(t)]
            self._dirty = False
            self._last_flush = time.monotonic()
        started = time.monotonic()
        meta = {**self.metadata, "schema_version": SCHEMA_VERSION}
        self.storage.write_bytes(
            f"{self.experiment}/{TRIALS_FILE}", table_bytes(rows_to_table(rows, self.trials_schema), meta)
        )
        pause_point("flush")  # the reliability tests kill the driver here, between two files
        self.storage.write_bytes(
            f"{self.experiment}/{EPOCHS_FILE}", table_bytes(rows_to_table(epochs, self.epochs_schema), meta)
        )
        self._flush_seconds = time.monotonic() - started

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


def ranked_rows(rows: Sequence[Mapping[str, Any]],
                metrics: MetricColumns) -> list[Mapping[str, Any]]:
    """The comparable rows (``comparable_rows``), best first; ties keep the earliest trial.

    The earliest wins a tie, as scikit-learn's GridSearchCV does (``best_index_``). This is the
    project's one selection rule: the run's best trial, the report's top configs and the
    analysis all rank with it.
    """
    sign = 1.0 if metrics.mode == "max" else -1.0
    key = metrics.score_column
    return sorted(comparable_rows(rows, metrics),
                  key=lambda r: (-sign * float(r[key]), int(r["trial_index"])))


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


def rebuild_from_journal(experiment_dir: str) -> int:
    """Rewrite the Parquet files of a local experiment from its journal; returns trial count."""
    with open(os.path.join(experiment_dir, EXPERIMENT_FILE), encoding="utf-8") as f:
        info = json.load(f)
    space = Space.from_dict(info["space"])
    storage = Storage(os.path.dirname(os.path.abspath(experiment_dir)))
    writer = ResultsWriter(storage, os.path.basename(os.path.abspath(experiment_dir)), space,
                           MetricColumns.from_dict(info["metrics"]), {},
                           {"experiment": info.get("name"), "task": info.get("task")},
                           iteration_key=info.get("iteration_key", "training_iteration"))
    count = writer.load_journal()
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
