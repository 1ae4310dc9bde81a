"""Hand-written experiment folders with exact numbers, in the files' real schema."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pyarrow as pa

from pipelines.results import (
    EPOCHS_FILE,
    TRIALS_FILE,
    MetricColumns,
    epochs_schema,
    rows_to_table,
    table_bytes,
    trials_schema,
    write_experiment_json,
)
from pipelines.storage import Storage
from search_spaces.space import Categorical, Float, LogFloat, Space

# A fine-tuning-like task: ranked by the best epoch's score.
BEST_EPOCH = MetricColumns("score", "max", {"epoch": pa.int64(), "score": pa.float64()}, "epoch",
                           select="best")
# An SVM-like task: ranked by the last report, among trials at the highest fidelity.
LAST_REPORT = MetricColumns("score", "max", {"score": pa.float64(), "fidelity": pa.float64()},
                            "fidelity", select="last")


def small_space() -> Space:
    return Space(lr=LogFloat(1e-5, 1e-1), opt=Categorical(["adam", "sgd"]),
                 momentum=Float(0.0, 1.0, when={"opt": ["sgd"]}), name="small")


def write_experiment(root, name: str, trials: Sequence[Mapping[str, Any]], *,
                     epochs: Sequence[Mapping[str, Any]] | None = None,
                     space: Space | None = None, metrics: MetricColumns = BEST_EPOCH,
                     info: Mapping[str, Any] | None = None) -> str:
    """Write ``root/name`` with trials.parquet, epochs.parquet and experiment.json.

    ``trials`` rows take ``params`` (a config dict), the metric columns, ``status``,
    ``stopped_by``, and ``start``/``end`` in seconds since the epoch; ``trial_id`` and
    ``trial_index`` default to the row's position, ``best_<metric>`` to its metric. Without
    ``epochs``, each trial gets one report with its metric columns. Returns the folder.
    """
    space = space or small_space()
    storage = Storage(str(root))
    rows, reports = [], []
    for i, given in enumerate(trials):
        row = {"experiment": name, "trial_id": f"t{i:02d}", "trial_index": i,
               "status": "finished", "algorithm": "random", "scheduler": "fifo", "seed": 0,
               "iterations": 1, "best_iteration": 1}
        row.update({k: v for k, v in given.items() if k not in ("params", "start", "end")})
        row.update({f"param_{k}": v for k, v in (given.get("params") or {}).items()})
        row.setdefault(f"best_{metrics.metric}", row.get(metrics.metric))
        if "start" in given:
            row["start_time"], row["end_time"] = given["start"], given["end"]
            row["wall_time_s"] = given["end"] - given["start"]
        rows.append(row)
        if epochs is None and row.get(metrics.metric) is not None:
            reports.append({"experiment": name, "trial_id": row["trial_id"], "trial_index": i,
                            "iteration": 1, **{c: row.get(c) for c in metrics.columns}})
    if epochs is not None:
        index = {r["trial_id"]: r["trial_index"] for r in rows}
        reports = [{"experiment": name, "trial_index": index[e["trial_id"]], **e} for e in epochs]
    meta = {"experiment": name, "task": "hand", "schema_version": 1}
    storage.write_bytes(f"{name}/{TRIALS_FILE}",
                        table_bytes(rows_to_table(rows, trials_schema(space, metrics)), meta))
    storage.write_bytes(f"{name}/{EPOCHS_FILE}",
                        table_bytes(rows_to_table(reports, epochs_schema(metrics)), meta))
    write_experiment_json(storage, name, {
        "name": name, "task": "hand", "status": "finished", "algorithm": "random",
        "scheduler": "fifo", "seed": 0, "metrics": metrics.to_dict(), "space": space.to_dict(),
        **(info or {})})
    return storage.path(name)
