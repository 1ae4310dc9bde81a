"""The Tune side of a fine-tuning trial: the function trainable, its resources, final scoring.

``make_trial`` returns ``(trainable, resources)`` for ``tune.with_resources``:

- one worker per trial: the loop runs in the trial's own process through a ``TuneSession``
  (``ray.tune.report`` with a checkpoint every epoch); the trial reserves the worker's CPUs and
  GPUs, and starts nothing else;
- N workers per trial: the trial is a Ray Train V2 driver. It starts a ``TorchTrainer`` with N
  data-parallel workers (gloo on CPU, nccl on GPU), whose rank-0 reports reach Tune through
  ``TuneReportCallback``. The Train run lives inside the trial's directory under a fixed name,
  so a restarted trial resumes from the Train run's latest checkpoint; a checkpoint the Tune trial
  itself was restored with is handed to the workers too. The trial reserves no CPU for the idle
  driver, only its memory: Train V2 schedules its workers in placement groups of its own, so
  reserving them in the trial's bundle too would count them twice, and even a sliver of a CPU
  for the driver leaves a 2-CPU machine unable to place 2 one-CPU workers. Limit concurrency
  with ``max_concurrent_trials`` (``trial_demand(...)`` gives what one trial really holds).

With N workers, Ray's state API must be up (``ray.init(include_dashboard=True)`` on a local
cluster; ``ray[default]``): without it Train V2 cannot clean up placement groups and a second
trial's workers never start.
"""

from __future__ import annotations

import os
from typing import Any

from pipelines.searchers._resume import RESUME_KEY
from pipelines.tune_adapter import node_info
from trainables.finetune import (
    CHECKPOINT_FILE,
    evaluate_split,
    load_checkpoint_state,
    train_loop,
    train_worker,
)
from trainables.gloo_backend import GlooConfig
from trainables.image_data import DatasetSpec, load_dataset
from trainables.image_models import ModelSpec, build_model
from trainables.session import Session, local_checkpoint_dir

__all__ = [
    "TRAIN_RUN_NAME",
    "TRAIN_SETTINGS",
    "TuneSession",
    "apply_train_settings",
    "checkpoint_of",
    "checkpoint_path_of",
    "evaluate_checkpoint",
    "make_trial",
    "save_best_model",
    "trial_demand",
]

# The Train run's name inside a multi-worker trial's directory. Fixed, never random, so a
# restarted trial finds (and resumes) the run it started before.
TRAIN_RUN_NAME = "train"
# What the idle Train driver of a multi-worker trial reserves: memory for a process that has
# imported torch, and no CPU (Tune refuses an all-zero request, so memory it is).
_DRIVER_RESOURCES = {"cpu": 0, "gpu": 0, "memory": 512 * 1024**2}
# Ray Train V2 settings for a multi-worker trial, which starts (and tears down) a whole Train run
# per trial: they cut what it costs beyond training (docs/measurements.md, "Per-trial overhead").
# Set in the trial's process with setdefault, so a value the user exported wins. Train copies the
# RAY_TRAIN_* names it lists in ENV_VARS_TO_PROPAGATE into the runtime_env of its controller and,
# from there, of its workers, which is where they are read; RAY_TRAIN_METRICS_ENABLED is read by the
# trial's process itself. Names and defaults: ray/train/v2/_internal/constants.py; none of the three
# is in Ray's API reference (internal knobs: re-check them on a Ray upgrade, which
# tests/test_finetune_train_settings.py does).
TRAIN_SETTINGS = {
    # The controller polls its workers this often (default 2 s), so it notices a started or a
    # finished worker group up to that late, and a report waits for the next poll.
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # One more actor per trial (a process that imports ray.train, ~2 CPU-s) to watch node
    # draining on preemptible clusters; trials restart from their checkpoint anyway.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
    # Train's Prometheus metrics (controller and per-worker gauges) for the Grafana dashboard,
    # which the pipeline does not use; trials report their own timings.
    "RAY_TRAIN_METRICS_ENABLED": "0",
}


class TuneSession(Session):
    """Report from a Tune function trainable's own process (one worker per trial).

    Parameters
    ----------
    use_gpu : bool
        Train on ``cuda`` (the trial reserved a GPU).
    num_threads : int, optional
        Torch threads: the trial's CPUs.
    """

    def __init__(self, use_gpu: bool = False, num_threads: int | None = None,
                 resume_from: str | None = None):
        self.use_gpu = use_gpu
        self.num_threads = num_threads
        # A re-run after a driver crash: the last checkpoint the journal recorded (a new Tune
        # run has none of its own).
        self.resume_from = resume_from

    def report(self, metrics, checkpoint_dir=None):
        import ray.tune

        checkpoint = None
        if checkpoint_dir is not None:
            checkpoint = ray.tune.Checkpoint.from_directory(checkpoint_dir)
        ray.tune.report({**metrics, **self._where}, checkpoint=checkpoint)

    @property
    def _where(self) -> dict[str, str]:
        # The Ray node for trials.parquet's node_id column (hostname and IP are shared by
        # several nodes on one host).
        if not hasattr(self, "_node"):
            self._node = node_info()
        return self._node

    def get_checkpoint_dir(self):
        import ray.tune

        checkpoint = ray.tune.get_checkpoint()
        if checkpoint is not None:  # Tune's own retry of this trial
            return local_checkpoint_dir(checkpoint)
        return _checkpoint_dir(self.resume_from) if self.resume_from else None

    @property
    def device(self):
        import torch

        return torch.device("cuda" if self.use_gpu and torch.cuda.is_available() else "cpu")


def _check_resources(workers_per_trial, gpus_per_worker, cpus_per_worker) -> None:
    if int(workers_per_trial) != workers_per_trial or workers_per_trial < 1:
        raise ValueError(f"workers_per_trial must be a positive integer, got {workers_per_trial!r}")
    if gpus_per_worker < 0:
        raise ValueError(f"gpus_per_worker must be >= 0, got {gpus_per_worker!r}")
    if not cpus_per_worker > 0:
        raise ValueError(f"cpus_per_worker must be > 0, got {cpus_per_worker!r}")


def _threads(cpus_per_worker: float) -> int:
    return max(1, int(cpus_per_worker))


def make_trial(
    data_spec: DatasetSpec,
    model_spec: ModelSpec,
    epochs: int,
    workers_per_trial: int = 1,
    gpus_per_worker: float = 0,
    cpus_per_worker: float = 1,
    *,
    keep_checkpoints: int | None = 2,
    precision: str = "fp32",
):
    """Build the Tune function trainable for one fine-tuning trial and its resource request.

    Parameters
    ----------
    data_spec : DatasetSpec
    model_spec : ModelSpec
    epochs : int
        Epochs per trial (early stopping and schedulers may end it sooner).
    workers_per_trial : int
        Data-parallel workers; above 1 each trial runs a Ray Train ``TorchTrainer``.
    gpus_per_worker, cpus_per_worker : float
    keep_checkpoints : int or None
        Checkpoints the inner Train run keeps (N > 1 only; Tune's own are set by the Tuner's
        ``CheckpointConfig``). None keeps all.
    precision : {"fp32", "bf16", "fp16"}
        Mixed precision of every worker's training loop (``trainables.finetune.train_loop``).

    Returns
    -------
    trainable : callable
        ``fn(config)`` for ``tune.Tuner`` (wrap it with ``tune.with_resources``).
    resources : dict
        For ``tune.with_resources``: the worker's ``{"cpu", "gpu"}`` with one worker; with N
        workers, the idle driver's ``{"cpu": 0, "gpu": 0, "memory": 512 MiB}``.
    """
    _check_resources(workers_per_trial, gpus_per_worker, cpus_per_worker)
    epochs = int(epochs)
    workers = int(workers_per_trial)

    if workers == 1:

        def finetune(config: dict[str, Any]) -> None:
            config = dict(config)
            session = TuneSession(
                use_gpu=gpus_per_worker > 0, num_threads=_threads(cpus_per_worker),
                resume_from=config.pop(RESUME_KEY, None),
            )
            train_loop(config, data_spec, model_spec, epochs, session, precision)

        return finetune, {"cpu": cpus_per_worker, "gpu": gpus_per_worker}

    def finetune_ddp(config: dict[str, Any]) -> None:
        import ray.train
        import ray.tune
        from ray.train.torch import TorchConfig, TorchTrainer
        from ray.tune.integration.ray_train import TuneReportCallback

        apply_train_settings()
        config = dict(config)
        resume_from = ray.tune.get_checkpoint() or _as_checkpoint(config.pop(RESUME_KEY, None))
        storage_path, filesystem = _trial_storage()
        per_worker = {"CPU": cpus_per_worker}
        if gpus_per_worker:
            per_worker["GPU"] = gpus_per_worker
        trainer = _trainer_class(TorchTrainer)(
            train_worker,
            train_loop_config={
                "config": dict(config),
                "data_spec": data_spec,
                "model_spec": model_spec,
                "epochs": epochs,
                "resume_from": resume_from,
                "num_threads": _threads(cpus_per_worker),
                "precision": precision,
            },
            # CPU: the same gloo group, with torch kept out of the controller's process.
            torch_config=TorchConfig(backend="nccl") if gpus_per_worker else GlooConfig(),
            scaling_config=ray.train.ScalingConfig(
                num_workers=workers,
                use_gpu=gpus_per_worker > 0,
                resources_per_worker=per_worker,
            ),
            run_config=ray.train.RunConfig(
                name=TRAIN_RUN_NAME,
                storage_path=storage_path,
                storage_filesystem=filesystem,
                callbacks=[TuneReportCallback()],
                checkpoint_config=train_checkpoint_config(keep_checkpoints),
            ),
        )
        trainer.fit()

    return finetune_ddp, dict(_DRIVER_RESOURCES)


def train_checkpoint_config(keep_checkpoints: int | None):
    """The inner Train run's checkpoint rule: the best ``keep_checkpoints`` by ``val_accuracy``
    (``CHECKPOINT_SCORE``: the earlier epoch first on a tie),
    as the Tuner keeps a one-worker trial's (Train also keeps the latest, to resume from).
    Without a score Train keeps the most recent ones, and the selected epoch's would go."""
    import ray.train

    from trainables.finetune import CHECKPOINT_SCORE

    return ray.train.CheckpointConfig(num_to_keep=keep_checkpoints,
                                      checkpoint_score_attribute=CHECKPOINT_SCORE,
                                      checkpoint_score_order="max")


def _trainer_class(torch_trainer: type) -> type:
    """``TorchTrainer`` with Train's placement group cleaner stopped without a wait.

    Ray Train V2 adds its ``PlacementGroupCleanerCallback`` with no setting to change; its
    shutdown waits 0-1 s for a poll (``trainables.train_callbacks``). Overrides Train's private
    ``_create_default_callbacks``: if a Ray upgrade renames it, this class changes nothing and
    tests/test_finetune_train_settings.py fails.
    """
    from trainables.train_callbacks import with_prompt_cleaner_stop

    class Trainer(torch_trainer):
        def _create_default_callbacks(self):
            return with_prompt_cleaner_stop(super()._create_default_callbacks())

    return Trainer


def apply_train_settings(environ=None) -> dict[str, str]:
    """Put ``TRAIN_SETTINGS`` into the trial's environment where not set already.

    Returns the values in force (the user's where exported).
    """
    environ = os.environ if environ is None else environ
    return {name: environ.setdefault(name, value) for name, value in TRAIN_SETTINGS.items()}


def _as_checkpoint(path: str | None):
    """A checkpoint path the journal recorded, as a ``ray.train.Checkpoint`` (any storage)."""
    if not path:
        return None
    import ray.train

    if "://" in path:
        from pipelines.storage import Storage

        storage = Storage(path)
        return ray.train.Checkpoint(storage.root, filesystem=storage.fs)
    return ray.train.Checkpoint(path)


def trial_demand(
    workers_per_trial: int = 1, gpus_per_worker: float = 0, cpus_per_worker: float = 1
) -> dict[str, float]:
    """CPUs and GPUs one running trial really holds (driver + Train workers).

    Use it to size ``max_concurrent_trials``: e.g. ``cluster_cpus // demand["cpu"]``.
    """
    _check_resources(workers_per_trial, gpus_per_worker, cpus_per_worker)
    if workers_per_trial == 1:
        return {"cpu": float(cpus_per_worker), "gpu": float(gpus_per_worker)}
    return {
        "cpu": float(workers_per_trial * cpus_per_worker),
        "gpu": float(workers_per_trial * gpus_per_worker),
    }


def _trial_storage():
    """(path, filesystem) of the current Tune trial's directory in the experiment's storage."""
    import ray.tune

    context = ray.tune.get_context()
    try:
        storage = context.get_storage()  # DeveloperAPI: honours s3:// and custom filesystems
        return storage.trial_fs_path, storage.storage_filesystem
    except Exception:
        return context.get_trial_dir(), None


# --- after the study -----------------------------------------------------------------------------
def checkpoint_path_of(result) -> str | None:
    """Where a Tune ``Result``'s latest checkpoint lives (a path on the storage filesystem).

    One-worker trials carry a Tune checkpoint (``result.checkpoint``); multi-worker trials report
    their Train checkpoint's path as the ``checkpoint_path`` metric. Either holds the best
    weights as well as the last (see ``evaluate_checkpoint``), so the latest one is enough.
    """
    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is not None:
        return checkpoint.path
    metrics = getattr(result, "metrics", None) or {}
    return metrics.get("checkpoint_path")


def checkpoint_of(result):
    """A Tune ``Result``'s latest checkpoint as a ``ray.train.Checkpoint`` (any storage), or None.

    Unlike the bare path of ``checkpoint_path_of``, it carries the filesystem, so
    ``evaluate_checkpoint`` can read it from ``s3://`` storage too.
    """
    checkpoint = getattr(result, "checkpoint", None)
    if checkpoint is not None:
        return checkpoint
    path = checkpoint_path_of(result)
    if path is None:
        return None
    import ray.train

    return ray.train.Checkpoint(path, filesystem=getattr(result, "filesystem", None))


def _checkpoint_dir(checkpoint) -> str:
    if hasattr(checkpoint, "filesystem") and hasattr(checkpoint, "path"):  # a Ray Checkpoint
        return local_checkpoint_dir(checkpoint)
    if isinstance(checkpoint, (str, os.PathLike)):
        path = str(checkpoint)
        if "://" not in path:
            return path
        import ray.train

        from pipelines.storage import Storage

        # storage: open the URI as the run wrote it (AWS_ENDPOINT_URL, region), which Ray's
        # own URI parsing does not honour.
        storage = Storage(path)
        checkpoint = ray.train.Checkpoint(storage.root, filesystem=storage.fs)
    return local_checkpoint_dir(checkpoint)


def _model_from_checkpoint(checkpoint, model_spec: ModelSpec, which: str):
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    state = load_checkpoint_state(_checkpoint_dir(checkpoint))
    # The architecture only: the trained weights below replace any pretrained ones, so there
    # is no need to rebuild (or re-check) the pretraining.
    model = build_model(
        model_spec.name, model_spec.num_classes, "none", in_channels=model_spec.in_channels
    )
    weights = state["best_model"] if which == "best" and state.get("best_model") else state["model"]
    model.load_state_dict(weights)
    return model, state


def evaluate_checkpoint(
    checkpoint,
    data_spec: DatasetSpec,
    model_spec: ModelSpec,
    *,
    which: str = "best",
    batch_size: int = 512,
) -> dict[str, Any]:
    """Score a trial's checkpoint on the held-out test split.

    Parameters
    ----------
    checkpoint : str, path-like or ray.train.Checkpoint
        A checkpoint directory (local path or URI) written by ``train_loop``.
    data_spec : DatasetSpec
    model_spec : ModelSpec
    which : {"best", "last"}
        The weights of the epoch with the best val loss (what early stopping keeps), or the last.
    batch_size : int

    Returns
    -------
    dict
        ``test_accuracy``, ``test_loss``, ``test_samples``, ``epoch`` (of the weights used) and
        ``checkpoint_epoch`` (the last epoch the checkpoint saw).
    """
    import torch

    model, state = _model_from_checkpoint(checkpoint, model_spec, which)
    splits = load_dataset(data_spec)
    loss, accuracy = evaluate_split(model, splits.test, torch.device("cpu"), batch_size)
    best_epoch = int(state["best"]["epoch"]) if state.get("best_model") else int(state["epoch"])
    return {
        "test_accuracy": accuracy,
        "test_loss": loss,
        "test_samples": len(splits.test),
        "epoch": best_epoch if which == "best" else int(state["epoch"]),
        "checkpoint_epoch": int(state["epoch"]),
    }


def save_best_model(
    checkpoint, model_spec: ModelSpec, path: str | os.PathLike, *, which: str = "best"
) -> str:
    """Export a checkpoint's model weights as one file, reloadable with ``--weights FILE``.

    Parameters
    ----------
    checkpoint : str, path-like or ray.train.Checkpoint
    model_spec : ModelSpec
    path : path-like
        Target ``.pt`` file (written through a temp file, then renamed).
    which : {"best", "last"}

    Returns
    -------
    str
        The written path.
    """
    import torch

    model, state = _model_from_checkpoint(checkpoint, model_spec, which)
    payload = {
        "model_state": model.state_dict(),
        "model_spec": model_spec.to_dict(),
        "config": state.get("config", {}),
        "epoch": state["best"]["epoch"] if which == "best" else state["epoch"],
        "source_file": CHECKPOINT_FILE,
    }
    target = os.fspath(path)
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    tmp = f"{target}.tmp-{os.getpid()}"
    torch.save(payload, tmp)
    os.replace(tmp, target)
    return target
