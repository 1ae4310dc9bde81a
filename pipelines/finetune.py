"""``python -m pipelines.finetune``: tune Adam/AdamW fine-tuning of a pretrained image model.

Offline default: ``small_cnn`` pretrained on digits 0-4 (cached after the first run) and
fine-tuned on digits 5-9, with the small grid of ``search_spaces/adam_finetune.py``. Each trial
reports every epoch and checkpoints into the experiment's storage; the best trial's best-epoch
weights are scored once on the held-out test split, saved as ``best_model.pt``, and compared
with a tuned SVM on the same data (flattened pixels).
"""

from __future__ import annotations

import argparse
import math
import os
import tempfile
import time
from collections.abc import Sequence
from typing import Any

import pyarrow as pa

from pipelines import cli
from pipelines.results import MetricColumns
from pipelines.runner import EvaluationError, Task, joins_cluster, run
from pipelines.storage import one_line
from search_spaces.loader import load_space

METRICS = MetricColumns(
    metric="val_accuracy",
    mode="max",
    columns={
        "epoch": pa.int64(),
        "train_loss": pa.float64(),
        "val_loss": pa.float64(),
        "val_accuracy": pa.float64(),
        "lr": pa.float64(),
        "epoch_seconds": pa.float64(),
        "samples_per_second": pa.float64(),
        # What a user tuning warm-up, clipping or precision reads (train_loop's report).
        "train_accuracy": pa.float64(),
        "backbone_lr": pa.float64(),
        "frozen": pa.bool_(),
        "grad_norm": pa.float64(),
        "clip_fraction": pa.float64(),
        "skipped_steps": pa.int64(),
    },
    step="epoch",
    select="best",
)


def _specs(args: argparse.Namespace):
    """Resolve dataset and model (cheap: files are checked, nothing is loaded)."""
    from trainables.image_data import resolve_dataset
    from trainables.image_models import resolve_model

    data_spec = resolve_dataset(args.dataset or "digits-transfer", args.data_root,
                                split_seed=args.split_seed, train_fraction=args.train_fraction,
                                val_fraction=args.val_fraction)
    model_spec = resolve_model(args.model, args.weights, data_spec)
    return data_spec, model_spec


def _check(args: argparse.Namespace) -> None:
    args._specs = _specs(args)  # DataError is a ValueError: one line, exit 2
    if args.scheduler == "asha" and args.max_t and args.max_t != args.epochs and not args.resume:
        # (A resume keeps the budget its experiment started with, from before this rule.)
        # Above --epochs no trial would reach ASHA's full budget (none would count as finished,
        # and the searcher would never learn a final score); below, every trial would stop
        # there as "finished", its warm-up and schedule planned for --epochs.
        raise ValueError(f"--max-t ({args.max_t}) differs from --epochs ({args.epochs}): "
                         "fine-tuning's full budget is --epochs; set --epochs instead")
    if joins_cluster(args) or args.resume:
        # A cluster's nodes (and its autoscaler) are its own business; a resume may have only
        # the best trial to score (the runner checks once it knows trials will run).
        return
    # On the local Ray this process starts, a trial bigger than the machine would wait forever.
    gpus = args.workers_per_trial * args.gpus_per_worker
    if gpus > 0:
        import torch

        have = torch.cuda.device_count()
        if gpus > have:
            raise ValueError(f"one trial needs {gpus:g} GPUs (--workers-per-trial x "
                             f"--gpus-per-worker) and this machine has {have}; use a cluster "
                             "with GPUs (--address) or leave --gpus-per-worker out")
    cpus = args.workers_per_trial * args.cpus_per_worker
    have_cpus = args.num_cpus or os.cpu_count() or 1
    if cpus > have_cpus:
        raise ValueError(f"one trial needs {cpus:g} CPUs (--workers-per-trial x "
                         f"--cpus-per-worker) and the local Ray has {have_cpus}")


def _load(args: argparse.Namespace):
    # Trials load the data themselves (on whatever node they land); the driver only needs the
    # specs. Pretraining the offline backbone happens here, once, before trials race for it.
    from trainables.image_models import build_from_spec

    data_spec, model_spec = args._specs
    build_from_spec(model_spec)
    return {"data_spec": data_spec, "model_spec": model_spec}


def _trainable(args: argparse.Namespace, data: dict) -> tuple[Any, Any]:
    from pipelines.finetune_trial import make_trial

    return make_trial(data["data_spec"], data["model_spec"], args.epochs,
                      workers_per_trial=args.workers_per_trial,
                      gpus_per_worker=args.gpus_per_worker,
                      cpus_per_worker=args.cpus_per_worker,
                      keep_checkpoints=args.keep_checkpoints,
                      precision=args.precision)


def _demand(args: argparse.Namespace) -> dict:
    from pipelines.finetune_trial import trial_demand

    return trial_demand(args.workers_per_trial, args.gpus_per_worker, args.cpus_per_worker)


def _checkpoint_config(args: argparse.Namespace):
    from ray import tune

    from trainables.finetune import CHECKPOINT_SCORE

    return tune.CheckpointConfig(num_to_keep=args.keep_checkpoints,
                                 checkpoint_score_attribute=CHECKPOINT_SCORE,
                                 checkpoint_score_order="max")


def _evaluate(args: argparse.Namespace, data: dict, best: dict, config: dict) -> dict:
    from pipelines.finetune_trial import evaluate_checkpoint, save_best_model

    if not best.get("checkpoint"):
        # Never a silent skip: a best trial whose weights cannot be found has no test score.
        raise EvaluationError(f"the best trial {best['trial_id']} recorded no checkpoint, so it "
                              "cannot be scored on the test split")
    storage = args._storage
    try:
        result = evaluate_checkpoint(best["checkpoint"], data["data_spec"], data["model_spec"])
        with tempfile.TemporaryDirectory() as tmp:
            local = save_best_model(best["checkpoint"], data["model_spec"],
                                    os.path.join(tmp, "best_model.pt"))
            with open(local, "rb") as f:
                model_bytes = f.read()
    except OSError as exc:  # FileNotFoundError among them: a checkpoint deleted or never copied
        raise EvaluationError(f"the best trial {best['trial_id']}'s checkpoint cannot be read: "
                              f"{one_line(exc)}") from exc
    storage.write_bytes(f"{args.name}/best_model.pt", model_bytes)
    result["best_model"] = storage.uri_of(args.name, "best_model.pt")
    if not args.no_baseline:
        try:
            result.update(svm_baseline(data["data_spec"], seed=args.split_seed))
        except Exception as exc:  # noqa: BLE001 - the network's test score is already in hand
            # A baseline that cannot run (too few rows of a class to cross-validate, say) never
            # costs the tuned network's result: the experiment finishes and says why.
            result["svm_baseline_error"] = one_line(exc)
    return result


def svm_baseline(data_spec, seed: int = 0) -> dict:
    """A tuned SVM on the same splits (flattened pixels): GridSearchCV over the classic grid,
    on the train and val rows together (3-fold CV in place of the val split), tested on the
    same test rows.

    The candidates run on joblib's threads, not its default loky processes: each loky worker is
    a new Python process importing scikit-learn (1-2 s before the first fit here) and tearing
    it down at exit (0.6 s of the pipeline's exit), while libsvm's fit runs without the GIL.
    Measured on the offline default (2 cores): 5.2 s + 0.6 s at exit with processes, 2.7 s with
    threads, 3.2 s with none, the same scores and best config (docs/measurements.md,
    "Fine-tuning").

    Returns ``svm_test_accuracy``, ``svm_cv_accuracy``, ``svm_best_config``, ``svm_seconds``.
    """
    import numpy as np
    from joblib import parallel_config
    from sklearn.model_selection import GridSearchCV

    from trainables.image_data import dataset_as_arrays
    from trainables.svm import make_model

    start = time.perf_counter()
    X_train, y_train, X_test, y_test = dataset_as_arrays(data_spec, include_val=True, seed=seed)
    grid = [{f"svc__{k}": [v] for k, v in c.items()} for c in load_space("svm").grid()
            if c["kernel"] != "poly"]  # poly adds minutes on pixels and never wins there
    # 3 stratified folds, fewer where a class has fewer rows (a few-labels study).
    counts = np.unique(y_train, return_counts=True)[1]
    fewest = int(counts.min()) if len(counts) else 0
    if len(counts) < 2 or fewest < 2:
        raise ValueError(f"the SVM baseline needs at least 2 train + val rows of every class to "
                         f"cross-validate; the fewest are {fewest}")
    folds = min(3, fewest)
    with parallel_config(backend="threading"):
        search = GridSearchCV(make_model({}), grid, cv=folds, n_jobs=-1).fit(X_train, y_train)
    return {
        "svm_test_accuracy": float(search.score(X_test, y_test)),
        "svm_cv_accuracy": float(search.best_score_),
        "svm_best_config": {k[5:]: v for k, v in search.best_params_.items()},
        "svm_seconds": time.perf_counter() - start,
        # The train and val rows together: its 3-fold CV stands in for the val split the
        # network's search selects on, and the refit learns from both.
        "svm_fit_rows": int(len(y_train)),
        "svm_cv_folds": folds,
    }


def _summary(args, data, best, evaluation) -> list[str]:
    lines = []
    if "test_accuracy" in evaluation:
        lines.append(f"best epoch   {evaluation.get('epoch')} of {best.get('iterations')} "
                     f"(val_accuracy {best.get('best_val_accuracy', float('nan')):.4f})")
    if "svm_test_accuracy" in evaluation:
        lines.append(f"test accuracy side by side: fine-tuned {args.model} "
                     f"{evaluation.get('test_accuracy', float('nan')):.4f} | tuned SVM baseline "
                     f"{evaluation['svm_test_accuracy']:.4f} "
                     f"({' '.join(f'{k}={v}' for k, v in evaluation['svm_best_config'].items())}"
                     + (f"; {evaluation.get('svm_cv_folds', 3)}-fold CV and refit on the "
                        f"{evaluation['svm_fit_rows']} train + val rows"
                        if "svm_fit_rows" in evaluation else "") + ")")
    elif "svm_baseline_error" in evaluation:
        lines.append(f"tuned SVM baseline not run: {evaluation['svm_baseline_error']}")
    if evaluation.get("best_model"):
        lines.append(f"best model   {evaluation['best_model']}")
    return lines


def _extra_info(args: argparse.Namespace, data: dict) -> dict:
    return {"data": data["data_spec"].to_dict(), "model": data["model_spec"].to_dict(),
            "epochs": args.epochs, "workers_per_trial": args.workers_per_trial,
            "gpus_per_worker": args.gpus_per_worker, "precision": args.precision}


def _fingerprint(args: argparse.Namespace, data: dict) -> str | None:
    """The version of the rules that pick the rows (``SPLIT_VERSION``), and an ImageFolder
    tree's digest (``folder_fingerprint``); the built-in and torchvision datasets are fixed
    files no one edits in place."""
    from trainables.image_data import SPLIT_VERSION, folder_fingerprint

    spec = data["data_spec"]
    tree = folder_fingerprint(spec.root) if spec.kind == "imagefolder" and spec.root else ""
    return f"split{SPLIT_VERSION}-{tree}" if tree else f"split{SPLIT_VERSION}"


def _config_keys() -> frozenset[str]:
    from trainables.finetune import DEFAULTS  # no torch import (0.2 s)

    return frozenset(DEFAULTS)


def _check_space(space) -> None:
    """Every value the space can give each parameter, as a trial would check it: the choices,
    a range's ends and grid values (the rules are bounds, so the ends stand for the range)."""
    from search_spaces.space import Categorical, Fixed, Float, Int
    from trainables.finetune import INT_KEYS, check_value  # no torch import

    for name, param in space.params.items():
        if isinstance(param, Categorical):
            values = list(param.choices)
        elif isinstance(param, Fixed):
            values = [param.value]
        elif isinstance(param, Float):
            if name in INT_KEYS and not isinstance(param, Int):
                raise ValueError(f"parameter '{name}' is a Float, but trials read it as a whole "
                                 "number: use Int (or a Categorical of whole numbers)")
            values = [param.low, param.high, *(param.grid_values or [])]
        else:
            continue
        for value in values:
            try:
                check_value(name, value)
            except ValueError as exc:
                raise ValueError(f"parameter '{name}': {exc}") from None


TASK = Task(
    name="finetune",
    metrics=METRICS,
    check=_check,
    load=_load,
    trainable=_trainable,
    max_t=lambda args: args.epochs,
    evaluate=_evaluate,
    summary=_summary,
    needs_dashboard=lambda args: args.workers_per_trial > 1,
    extra_info=_extra_info,
    fingerprint=_fingerprint,
    checkpoint_config=_checkpoint_config,
    demand=_demand,
    # A reused trial actor keeps torch imported and warm: ~2 s a trial here for one-process
    # trials, and 2.7 s for a DDP trial's driver process (benchmarks/finetune_overhead.py
    # --reuse-ddp); each DDP trial still starts its own Train controller and workers.
    reuse_actors=lambda args: True,
    time_attr="epoch",
    config_keys=_config_keys,
    check_space=_check_space,
    unset_means={"dataset": "digits-transfer"},
)


def build_parser() -> argparse.ArgumentParser:
    parser = cli.base_parser("python -m pipelines.finetune", __doc__.splitlines()[0],
                             default_space="adam_finetune")
    model = parser.add_argument_group("model and data")
    model.add_argument("--model", default="small_cnn",
                       help="small_cnn (offline default) or a torchvision model such as resnet18, "
                            "mobilenet_v3_small")
    model.add_argument("--weights", default=None,
                       help="pretrained weights: a local file, 'pretrained' (small_cnn: the "
                            "cached digits pretraining; torchvision: its file under "
                            "$TORCH_HOME/hub/checkpoints, never downloaded) or 'none'")
    model.add_argument("--data-root", default=None,
                       help="where torchvision datasets live (MNIST, FashionMNIST, CIFAR10; default ./data)")
    model.add_argument("--train-fraction", type=cli.fraction, default=None, metavar="F",
                       help="keep this share of the training rows, stratified (few labels: "
                            "0.1 keeps 10%%; default: all)")
    model.add_argument("--val-fraction", type=cli.fraction, default=None, metavar="F",
                       help="validation share of the rows the dataset splits itself (default: "
                            "digits-transfer 0.2, torchvision 0.1 of train, folders 0.15)")
    model.add_argument("--epochs", type=cli.positive_int, default=6, help="epochs per trial (default: 6)")
    model.add_argument("--no-baseline", action="store_true", help="skip the SVM baseline")
    res = parser.add_argument_group("resources")
    res.add_argument("--workers-per-trial", type=cli.positive_int, default=1,
                     help="data-parallel workers per trial; above 1 each trial is a Ray Train "
                          "TorchTrainer with DDP (default: 1)")
    res.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per worker (default: 0)")
    res.add_argument("--cpus-per-worker", type=float, default=1.0, help="CPUs per worker (default: 1)")
    res.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                     help="training precision: fp32, or mixed bf16/fp16 autocast (fp16 with a "
                          "gradient scaler); on GPUs bf16 needs Ampere or newer (default: fp32)")
    res.add_argument("--keep-checkpoints", type=cli.positive_int, default=2,
                     help="checkpoints kept per trial, best by val_accuracy (default: 2)")
    # Fine-tuning trials are long and checkpoint every epoch: one retry by default.
    parser.set_defaults(dataset=None, max_failures=1)
    parser._option_string_actions["--max-failures"].help = (
        "retries of a failed trial from its last checkpoint (default: 1)")
    parser._option_string_actions["--dataset"].help = (
        "digits-transfer (offline default), MNIST, FashionMNIST, CIFAR10 (under --data-root), "
        "or an ImageFolder directory")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not (math.isfinite(args.gpus_per_worker) and args.gpus_per_worker >= 0
            and math.isfinite(args.cpus_per_worker) and args.cpus_per_worker > 0):
        cli.fail(f"--gpus-per-worker must be a number >= 0 and --cpus-per-worker a number > 0, "
                 f"got {args.gpus_per_worker} and {args.cpus_per_worker}")
    args = cli.finish_args(args, "finetune")
    from pipelines.storage import Storage, StorageError

    try:
        args._storage = Storage(args.output)
    except StorageError as exc:
        cli.fail(str(exc))
    return run(TASK, args)


if __name__ == "__main__":
    cli.exit_process(cli.call_main(main))
