"""Parquet at scale: 10,000 trials x 50 epochs through the project's writer and reader.

Write: a ``ResultsWriter`` gets every trial's events as a run gives them (start, each epoch's
report, end) and writes its parts (a part every ``--part-trials`` trials, as a run does every
2 s), then compacts them into ``trials.parquet`` and ``epochs.parquet``: the code path of a run,
without Ray. Timed: the parts and the compaction, i.e. everything the writer spends on Parquet.
Not timed: the journal (its appends are the run's record, made as events happen, not the
Parquet; switched off here) and the handling of each event.

Read: ``pipelines.analysis.load_experiment`` of the experiment folder (both files, sorted).

The baseline is plain pandas on the same two frames: ``DataFrame.to_parquet`` of each, and
``pandas.read_parquet`` of each. Each way is the median of ``--repeats`` runs; the ratio is
ours / pandas. Target: under 2 s each way at 10,000 x 50.

Usage::

    python benchmarks/parquet_scale.py [--trials 10000] [--epochs 50] [--part-trials 100] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time

import pandas as pd
import pyarrow as pa
from _common import print_table

from pipelines.analysis import load_experiment
from pipelines.results import MetricColumns, ResultsWriter, write_experiment_json
from pipelines.storage import Storage
from search_spaces.space import Categorical, Float, Int, LogFloat, Space

TARGET_S = 2.0

# A fine-tuning-like task: five metric columns per epoch, ranked by the best epoch.
METRICS = MetricColumns("val_accuracy", "max",
                        {"epoch": pa.int64(), "train_loss": pa.float64(),
                         "val_loss": pa.float64(), "val_accuracy": pa.float64(),
                         "lr": pa.float64()}, "epoch", select="best")
SPACE = Space(name="scale", lr=LogFloat(1e-5, 1e-1), weight_decay=LogFloat(1e-6, 1e-2),
              optimizer=Categorical(["adam", "adamw", "sgd"]), batch_size=Int(16, 256, log=True),
              dropout=Float(0.0, 0.5), momentum=Float(0.0, 0.99, when={"optimizer": ["sgd"]}))


def write_experiment(root: str, trials: int, epochs: int, part_trials: int) -> dict:
    """One experiment through ResultsWriter; returns the seconds spent on Parquet."""
    storage = Storage(root)
    writer = ResultsWriter(storage, "scale", SPACE, METRICS,
                           {"algorithm": "random", "scheduler": "fifo", "seed": 0,
                            "resources": "CPU=1 GPU=1"},
                           metadata={"experiment": "scale", "task": "scale"}, flush_every_s=2.0)
    writer.journal.append = lambda event: None  # the record is not what is measured here
    spent = {"parts": 0.0, "compaction": 0.0, "cpu": 0.0, "n_parts": 0}
    write_part = writer.write_part

    def timed_part() -> None:  # end_trial writes the first part itself
        started, cpu = time.perf_counter(), time.process_time()
        write_part()
        spent["parts"] += time.perf_counter() - started
        spent["cpu"] += time.process_time() - cpu
        spent["n_parts"] += 1

    writer.write_part = timed_part
    clock = 1_700_000_000.0
    for i, config in enumerate(SPACE.sample(trials, seed=0)):
        trial_id = f"{i:05d}_{'0' * 5}"
        writer.start_trial(trial_id, i, config)
        for epoch in range(1, epochs + 1):
            clock += 1.0
            writer.add_result(trial_id, {
                "epoch": epoch, "train_loss": 1.0 / epoch, "val_loss": 1.1 / epoch,
                "val_accuracy": 0.5 + 0.4 * (1 - 1.0 / epoch) + (i % 97) * 1e-4,
                "lr": config["lr"], "training_iteration": epoch, "time_total_s": 0.5 * epoch,
                "timestamp": int(clock), "hostname": f"gpu-node-{i % 16}",
                "node_ip": f"10.0.0.{i % 16}", "node_id": f"{i % 16:056x}"})
        writer.end_trial(trial_id, "finished")
        if (i + 1) % part_trials == 0:
            writer.write_part()
    started, cpu = time.perf_counter(), time.process_time()
    writer.flush()
    spent["compaction"] = time.perf_counter() - started
    spent["cpu"] += time.process_time() - cpu
    write_experiment_json(storage, "scale", {"name": "scale", "task": "scale",
                                             "schema_version": 1, "metrics": METRICS.to_dict(),
                                             "space": SPACE.to_dict()})
    return spent


def timed(fn, *args):
    """``fn(*args)``, with the wall and CPU seconds it took."""
    started, cpu = time.perf_counter(), time.process_time()
    result = fn(*args)
    return result, time.perf_counter() - started, time.process_time() - cpu


def write_plain(trials: pd.DataFrame, epochs: pd.DataFrame, paths: list[str]) -> None:
    trials.to_parquet(paths[0])
    epochs.to_parquet(paths[1])


def one_repeat(work: str, repeat: int, args: argparse.Namespace) -> dict:
    """Ours and pandas, each way, once; wall and CPU seconds."""
    root = os.path.join(work, f"ours{repeat}")
    spent = write_experiment(root, args.trials, args.epochs, args.part_trials)
    out = {"write": spent["parts"] + spent["compaction"], "write_cpu": spent["cpu"],
           "parts": spent["parts"], "compaction": spent["compaction"], "n_parts": spent["n_parts"]}
    folder = os.path.join(root, "scale")
    exp, out["read"], out["read_cpu"] = timed(load_experiment, folder)
    assert len(exp.trials) == args.trials and len(exp.epochs) == args.trials * args.epochs
    out["sizes"] = {name: os.path.getsize(os.path.join(folder, name)) / 2**20
                    for name in ("trials.parquet", "epochs.parquet")}
    # The same frames through plain pandas.
    trials = pd.read_parquet(os.path.join(folder, "trials.parquet"))
    epochs = pd.read_parquet(os.path.join(folder, "epochs.parquet"))
    plain = os.path.join(work, f"plain{repeat}")
    os.makedirs(plain)
    paths = [os.path.join(plain, name) for name in ("trials.parquet", "epochs.parquet")]
    _, out["pandas_write"], out["pandas_write_cpu"] = timed(write_plain, trials, epochs, paths)
    _, out["pandas_read"], out["pandas_read_cpu"] = timed(
        lambda: [pd.read_parquet(p) for p in paths])
    shutil.rmtree(root)
    shutil.rmtree(plain)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--part-trials", type=int, default=100,
                        help="trials per part (a run writes one every 2 s; default: 100)")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="parquet-scale-")
    load_before = os.getloadavg()[0]
    try:
        runs = [one_repeat(work, repeat, args) for repeat in range(args.repeats)]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    med = {key: statistics.median(r[key] for r in runs) for key in runs[0]
           if isinstance(runs[0][key], float)}
    sizes = runs[0]["sizes"]
    print(f"{args.trials} trials x {args.epochs} epochs: trials.parquet "
          f"{sizes['trials.parquet']:.1f} MiB, epochs.parquet {sizes['epochs.parquet']:.1f} MiB; "
          f"{runs[0]['n_parts']} parts of about {args.part_trials} trials; median of "
          f"{args.repeats}; {os.cpu_count()} cores, load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    rows = []
    for way in ("write", "read"):
        verdict = "met" if med[way] < TARGET_S else "missed"
        rows.append([way, med[way], med[f"pandas_{way}"], med[way] / med[f"pandas_{way}"],
                     med[f"{way}_cpu"], med[f"pandas_{way}_cpu"], f"< {TARGET_S:g} s: {verdict}"])
    print_table(["way", "ours_s", "pandas_s", "ratio", "ours_cpu_s", "pandas_cpu_s",
                 "target (wall)"], rows)
    each = {way: ", ".join(f"{r[way]:.2f}" for r in runs) for way in ("write", "read")}
    print(f"write = parts {med['parts']:.2f} s + compaction {med['compaction']:.2f} s; "
          f"each repeat: write {each['write']} s, read {each['read']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
