"""``python -m pipelines.svm``: tune an SVM (kernel, C, gamma, degree) with Ray Tune.

Default: the classic grid on scikit-learn's digits, 3-fold CV on a stratified train split, the
best config refit and scored once on the held-out test split. ``--dataset`` also takes iris,
wine, breast_cancer, or a CSV/Parquet file with ``--target COLUMN``.
"""

from __future__ import annotations

import argparse
import math
import os
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipelines import cli
from pipelines.results import MetricColumns
from pipelines.runner import Task, joins_cluster, run

# Fidelity rungs an ASHA run climbs by default (1/27, 1/9, 1/3, 1 with reduction factor 3).
DEFAULT_RUNGS = 4

METRICS = MetricColumns(
    metric="cv_accuracy",
    mode="max",
    columns={
        "cv_accuracy": pa.float64(),
        "cv_accuracy_std": pa.float64(),
        "fidelity": pa.float64(),
        "fit_samples": pa.int64(),
        "fit_seconds": pa.float64(),
    },
    step="fidelity",
)


def fidelities(args: argparse.Namespace) -> tuple[float, ...]:
    """Fractions of each fold's train rows a trial climbs through.

    FIFO fits once on all rows. ASHA climbs ``max_t`` rungs spaced by the reduction factor
    (1/27, 1/9, 1/3, 1 with the defaults), as HalvingGridSearchCV grows ``n_samples``.
    """
    if args.scheduler != "asha":
        return (1.0,)
    rungs = args.max_t or DEFAULT_RUNGS
    return tuple(float(args.reduction_factor) ** -(rungs - 1 - k) for k in range(rungs))


def _check(args: argparse.Namespace) -> None:
    from trainables.svm import check_dataset, split_is_certain

    # Here, not in main: on --resume the experiment's algorithm and scheduler are adopted first.
    if args.configs_per_trial not in (1, "auto"):
        if args.scheduler != "fifo" or args.algo == "bayesopt":
            raise ValueError("--configs-per-trial applies only to --algo grid or random with "
                             "--scheduler fifo")
        if args.tensorboard or args.mlflow:
            raise ValueError("--configs-per-trial above 1 cannot be used with --tensorboard or "
                             "--mlflow: they log one run per Tune trial")

    have_cpus = args.num_cpus or os.cpu_count() or 1
    if not joins_cluster(args) and not args.resume and args.cpus_per_trial > have_cpus:
        raise ValueError(f"--cpus-per-trial {args.cpus_per_trial:g} is more than the local "
                         f"Ray's {have_cpus} CPUs: a trial would never start")

    # A test size or fold count the data cannot take is rejected here, before Ray starts. A
    # file is loaded and split here (its columns and values need checking too). A built-in
    # dataset whose class sizes already prove the split works (``split_is_certain``) loads
    # beside the start of a local Ray instead (``task_data``): importing scikit-learn is most of
    # a second, and then it overlaps ``ray.init``. Joining a running Ray (--address) takes a
    # few tenths of a second, too short to hide it behind (docs/measurements.md, "Where a short
    # run's time goes"), so there the data loads here.
    args._data = None
    if args.address or not split_is_certain(args.dataset, args.test_size, args.cv):
        task_data(args)  # load_data checks the dataset itself
    else:
        check_dataset(args.dataset, args.target)


def task_data(args: argparse.Namespace):
    """The data ``_check`` loaded, or now the built-in dataset it vouched for."""
    if getattr(args, "_data", None) is None:
        from trainables.svm import load_data

        args._data = load_data(args.dataset, args.target, test_size=args.test_size, cv=args.cv,
                               seed=args.split_seed)
    return args._data


def _trainable(args: argparse.Namespace, data) -> tuple[Any, dict]:
    from ray import tune

    from pipelines.tune_adapter import report_each
    from trainables.svm import svm_trial

    return tune.with_parameters(report_each(svm_trial), data=data,
                                fidelities=fidelities(args)), {"CPU": args.cpus_per_trial}


def _evaluate(args: argparse.Namespace, data, best: dict, config: dict) -> dict:
    from trainables.svm import refit_and_test

    return refit_and_test(config, data)


def _summary(args, data, best, evaluation) -> list[str]:
    d = data.describe()
    return [f"data         {d['name']}: {d['n_train']} train rows ({args.cv}-fold CV), "
            f"{d['n_test']} held-out test rows, {d['n_features']} features, {d['n_classes']} classes"]


def _svc_params() -> frozenset[str]:
    from trainables.svm import SVC_PARAMS

    return SVC_PARAMS


TASK = Task(
    name="svm",
    metrics=METRICS,
    check=_check,
    load=task_data,
    trainable=_trainable,
    max_t=lambda args: DEFAULT_RUNGS,
    evaluate=_evaluate,
    summary=_summary,
    # Trials take a fraction of a second: paying one actor start per trial would dominate.
    reuse_actors=lambda args: True,
    extra_info=lambda args, data: {"data": data.describe()},
    fingerprint=lambda args, data: data.fingerprint(),
    config_keys=_svc_params,
    demand=lambda args: {"cpu": args.cpus_per_trial},
    unset_means={"dataset": "digits"},
    rung_every_report=True,  # each report is a fidelity rung, rf times the last one's rows
)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("python -m pipelines.svm", __doc__.splitlines()[0], default_space="svm")
    parser.add_argument("--target", default=None, help="label column of a CSV/Parquet --dataset")
    parser.add_argument("--cv", type=int, default=3, help="CV folds on the train split (default: 3)")
    parser.add_argument("--cpus-per-trial", type=float, default=1.0,
                        help="CPUs one trial reserves; libsvm uses one core (default: 1)")
    parser.add_argument("--test-size", type=float, default=0.2,
                        help="held-out test fraction (default: 0.2)")
    parser.add_argument("--configs-per-trial", type=cli.configs_per_trial, default="auto",
                        metavar="auto|N",
                        help="grid and random search under FIFO: configs one Tune trial runs "
                             "one after another, each still its own trial in the results; auto "
                             "sizes them to the free slots, 1 turns this off (default: auto)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.cv < 2:
        cli.fail(f"--cv must be at least 2, got {args.cv}")
    if not (args.cpus_per_trial > 0 and math.isfinite(args.cpus_per_trial)):
        cli.fail(f"--cpus-per-trial must be a number above 0, got {args.cpus_per_trial}")
    if not 0 < args.test_size < 1:
        cli.fail(f"--test-size must be between 0 and 1, got {args.test_size}")
    args = cli.finish_args(args, "svm")
    return run(TASK, args)


if __name__ == "__main__":
    cli.exit_process(cli.call_main(main))
