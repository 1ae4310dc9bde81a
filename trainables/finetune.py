"""The Adam / AdamW fine-tuning loop that one trial runs.

``train_loop(config, data_spec, model_spec, epochs, session)`` is a plain function: it reports
through a ``trainables.session.Session`` and so runs the same in a unit test (``LocalSession``),
in a Tune trial's own process, or on every worker of a Ray Train data-parallel group.

Config keys (the ``adam_finetune`` space's parameters; absent keys take ``DEFAULTS``):

- ``optimizer``: ``adam`` (L2 penalty added to the gradient, "coupled") or ``adamw``
  (decoupled weight decay);
- ``lr``, ``beta1``, ``one_minus_beta2`` (beta2 = 1 - it), ``eps``, ``weight_decay``,
  ``batch_size``;
- ``warmup_epochs`` (or ``warmup_steps``): linear warm-up from lr/warmup_steps to lr, per step;
- ``schedule``: ``none`` | ``step`` (``step_size`` epochs, ``gamma_step``) | ``exponential``
  (``gamma_exp`` per epoch) | ``cosine`` (from lr toward ``min_lr_ratio`` x lr, which it
  reaches one step after the last, as PyTorch's ``CosineAnnealingLR`` with ``T_max`` the
  steps after the warm-up: 3 epochs of 4 steps end at 0.115 x lr with a floor of 0.1); the
  schedule starts after the warm-up;
- ``clip_norm``: clip the global gradient norm (None or 0: no clipping);
- ``freeze_epochs``: the backbone is frozen (weights and batch-norm statistics) for the first k
  epochs; ``backbone_lr_mult``: the backbone's learning rate relative to the head's;
- ``patience`` (epochs without a val-loss improvement larger than ``min_delta`` before stopping;
  0 disables early stopping);

One selection rule: a trial's selected epoch is the one with the highest ``val_accuracy`` (the
searched metric; the earliest on a tie). Its weights are the checkpoint's ``best_model``, which
the final test scores; the ``best_*`` metrics describe it; Tune keeps checkpoints by it
(``checkpoint_score``: ``val_accuracy``, the earlier epoch first on a tie); the results rank
trials by it. Patience watches ``val_loss`` (a smoother
signal for stopping), but only decides when to stop, never which weights are kept.
- ``seed``: model init, data order and dropout; the same seed gives the same run, resumed or
  not (a checkpoint keeps the random streams' state).

Every epoch reports ``epoch`` (1-based), ``train_loss``, ``train_accuracy``, ``val_loss``,
``val_accuracy``, ``lr`` (the head's learning rate at the epoch's last step), ``backbone_lr``
(0 while frozen), ``frozen``, ``grad_norm`` (mean pre-clipping norm), ``clip_fraction``,
``best_val_loss``, ``best_val_accuracy``, ``best_epoch``, ``early_stopped``, ``epoch_seconds``,
``samples_per_second``, ``setup_seconds``, ``world_size``, with a checkpoint every epoch.
"""

from __future__ import annotations

import math
import os
import random
import tempfile
import time
from functools import partial
from typing import Any

import numpy as np

from trainables.image_data import DatasetSpec, collate_batch, load_dataset
from trainables.image_models import ModelSpec, build_from_spec
from trainables.session import LocalSession, Session

__all__ = [
    "CHECKPOINT_FILE",
    "CHECKPOINT_SCORE",
    "DEFAULTS",
    "evaluate_split",
    "check_value",
    "load_checkpoint_state",
    "lr_factor",
    "resolve_config",
    "train_loop",
    "train_worker",
]

CHECKPOINT_FILE = "state.pt"
CHECKPOINT_FORMAT = 1
# The reported value checkpoints are kept by: val_accuracy, the earlier epoch first on a tie.
CHECKPOINT_SCORE = "checkpoint_score"

DEFAULTS: dict[str, Any] = {
    "optimizer": "adamw",
    "lr": 1e-3,
    "beta1": 0.9,
    "one_minus_beta2": 1e-3,
    "eps": 1e-8,
    "weight_decay": 1e-4,
    "batch_size": 64,
    "warmup_epochs": 0,
    "warmup_steps": None,
    "schedule": "none",
    "step_size": 1,
    "gamma_step": 0.5,
    "gamma_exp": 0.9,
    "min_lr_ratio": 0.0,
    "clip_norm": None,
    "freeze_epochs": 0,
    "backbone_lr_mult": 1.0,
    "patience": 3,
    "min_delta": 0.0,
    "seed": 0,
    "eval_batch_size": 512,
}
SCHEDULES = ("none", "step", "exponential", "cosine")
OPTIMIZERS = ("adam", "adamw")
# Keys the loop reads as whole numbers (``int(...)``): 16.5 would silently train as 16.
INT_KEYS = frozenset({"batch_size", "warmup_epochs", "warmup_steps", "step_size",
                      "freeze_epochs", "patience", "seed", "eval_batch_size"})


def check_value(key: str, value: Any) -> None:
    """Raise ValueError (naming the key and what it takes) if a trial would refuse ``value`` for
    ``key`` or read it as another number; a space's values are checked this way before Ray
    starts (``pipelines.finetune``)."""
    if key in INT_KEYS and value is not None and (
            isinstance(value, bool) or not isinstance(value, (int, float))
            or not float(value).is_integer()):
        raise ValueError(f"config '{key}' must be a whole number, got {value!r}")
    # step_size is read only by the step schedule: check it as that schedule would.
    context = {"schedule": "step"} if key == "step_size" else {}
    try:
        resolve_config({**context, key: value})
    except TypeError:
        raise ValueError(f"config '{key}' cannot be {value!r}") from None


def resolve_config(config: dict[str, Any]) -> dict[str, Any]:
    """Fill in defaults and check values; unknown keys pass through untouched.

    Parameters
    ----------
    config : dict

    Returns
    -------
    dict

    Raises
    ------
    ValueError
        Naming the key and the allowed values.
    """
    cfg = {**DEFAULTS, **config}
    if cfg["optimizer"] not in OPTIMIZERS:
        raise ValueError(
            f"config 'optimizer' must be one of {OPTIMIZERS}, got {cfg['optimizer']!r}"
        )
    if cfg["schedule"] not in SCHEDULES:
        raise ValueError(f"config 'schedule' must be one of {SCHEDULES}, got {cfg['schedule']!r}")
    for key in ("lr", "eps"):
        if not float(cfg[key]) > 0:
            raise ValueError(f"config '{key}' must be > 0, got {cfg[key]!r}")
    if not 0 < float(cfg["one_minus_beta2"]) < 1 or not 0 <= float(cfg["beta1"]) < 1:
        raise ValueError("config 'beta1' must be in [0, 1) and 'one_minus_beta2' in (0, 1)")
    if int(cfg["batch_size"]) < 1:
        raise ValueError(f"config 'batch_size' must be >= 1, got {cfg['batch_size']!r}")
    for key in ("weight_decay", "warmup_epochs", "freeze_epochs", "patience", "min_delta"):
        if float(cfg[key]) < 0:
            raise ValueError(f"config '{key}' must be >= 0, got {cfg[key]!r}")
    if not float(cfg["backbone_lr_mult"]) >= 0:
        raise ValueError(f"config 'backbone_lr_mult' must be >= 0, got {cfg['backbone_lr_mult']!r}")
    if cfg["schedule"] == "step" and int(cfg["step_size"]) < 1:
        raise ValueError(f"config 'step_size' must be >= 1, got {cfg['step_size']!r}")
    for key in ("gamma_step", "gamma_exp"):
        if not float(cfg[key]) > 0:
            raise ValueError(f"config '{key}' must be > 0, got {cfg[key]!r}")
    if not 0 <= float(cfg["min_lr_ratio"]) <= 1:
        raise ValueError(f"config 'min_lr_ratio' must be in [0, 1], got {cfg['min_lr_ratio']!r}")
    if cfg["clip_norm"] is not None and not float(cfg["clip_norm"]) >= 0:
        # clip_grad_norm_ with a negative norm would flip every gradient
        raise ValueError(f"config 'clip_norm' must be >= 0 or None, got {cfg['clip_norm']!r}")
    if cfg["warmup_steps"] is not None and int(cfg["warmup_steps"]) < 0:
        raise ValueError(f"config 'warmup_steps' must be >= 0, got {cfg['warmup_steps']!r}")
    return cfg


def lr_factor(
    step: int,
    *,
    steps_per_epoch: int,
    total_steps: int,
    warmup_steps: int,
    schedule: str,
    step_size: int = 1,
    gamma_step: float = 0.5,
    gamma_exp: float = 0.9,
    min_lr_ratio: float = 0.0,
) -> float:
    """Multiplier of the base learning rate for optimizer step ``step`` (0-based).

    Linear warm-up for ``warmup_steps`` steps (reaching 1 at the last warm-up step), then the
    schedule, whose clock starts at the end of the warm-up: ``step`` and ``exponential`` change
    the rate every ``steps_per_epoch`` steps counted from there (at epoch boundaries when the
    warm-up is whole epochs, as ``warmup_epochs`` makes it; ``warmup_steps=3`` with 4 steps an
    epoch changes it at step 7), ``cosine`` every step.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    after = step - warmup_steps
    if schedule == "none":
        return 1.0
    if schedule == "step":
        return gamma_step ** ((after // steps_per_epoch) // step_size)
    if schedule == "exponential":
        return gamma_exp ** (after // steps_per_epoch)
    if schedule == "cosine":
        span = max(total_steps - warmup_steps, 1)
        progress = min(after / span, 1.0)
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"unknown schedule {schedule!r}")


class _EpochSampler:
    """A permutation per epoch from (seed, epoch), so a resumed run shuffles like an unbroken one."""

    def __init__(self, size: int, seed: int):
        self.size, self.seed, self.epoch = size, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        import torch

        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return iter(torch.randperm(self.size, generator=generator).tolist())

    def __len__(self) -> int:
        return self.size


def _seed_everything(seed: int) -> None:
    import torch

    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def _make_optimizer(cfg: dict[str, Any], model):
    import torch

    mult = float(cfg["backbone_lr_mult"])
    lr = float(cfg["lr"])
    groups = [
        {"params": model.backbone_parameters(), "lr": lr * mult, "name": "backbone"},
        {"params": model.head_parameters(), "lr": lr, "name": "head"},
    ]
    cls = torch.optim.AdamW if cfg["optimizer"] == "adamw" else torch.optim.Adam
    return cls(
        groups,
        lr=lr,
        betas=(float(cfg["beta1"]), 1.0 - float(cfg["one_minus_beta2"])),
        eps=float(cfg["eps"]),
        weight_decay=float(cfg["weight_decay"]),
    )


def _set_frozen(model, frozen: bool, distributed: bool) -> None:
    # One process: turning off requires_grad also skips the backbone's backward pass. Under DDP
    # the set of parameters that receive gradients must not change after wrapping, so there
    # the loop drops the backbone's gradients before the step instead (same effect on weights).
    if not distributed:
        for param in model.backbone_parameters():
            param.requires_grad_(not frozen)


PRECISIONS = ("fp32", "bf16", "fp16")


def _autocast(device, precision: str):
    """``torch.autocast`` for ``precision`` on ``device`` (a no-op context for fp32)."""
    import torch

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    return torch.autocast(device.type, dtype=dtype, enabled=dtype is not None)


def _channels_last(device, model_or_batch):
    """Channels-last memory layout for 4-d image batches and conv models on CUDA, where cuDNN's
    convolutions (tensor cores under bf16/fp16) are faster in it; unchanged elsewhere."""
    import torch

    if device.type != "cuda":
        return model_or_batch
    if isinstance(model_or_batch, torch.Tensor) and model_or_batch.dim() != 4:
        return model_or_batch
    return model_or_batch.to(memory_format=torch.channels_last)


def evaluate_split(model, dataset, device, batch_size: int = 512,
                   precision: str = "fp32") -> tuple[float, float]:
    """Mean cross-entropy and accuracy of ``model`` on a whole ``ImageTensorDataset``.

    The forward pass runs under ``precision``'s autocast; the loss is summed in fp32.

    Returns
    -------
    loss, accuracy : float
    """
    import torch
    from torch.nn import functional as F

    was_training = model.training
    model.eval()
    # Sums stay on the device until the end: one host sync per split, not one per batch.
    sums = torch.zeros(2, dtype=torch.float64, device=device)
    count = 0
    with torch.no_grad():
        for start in range(0, len(dataset), batch_size):
            x, y = dataset.__getitems__(range(start, min(start + batch_size, len(dataset))))
            x, y = _channels_last(device, x.to(device)), y.to(device)
            with _autocast(device, precision):
                logits = model(x)
            logits = logits.float()
            sums[0] += F.cross_entropy(logits, y, reduction="sum")
            sums[1] += (logits.argmax(dim=1) == y).sum()
            count += len(y)
    model.train(was_training)
    loss_sum, correct = sums.tolist()
    return loss_sum / max(count, 1), correct / max(count, 1)


def _rng_state(torch, device) -> dict:
    """The random streams a resumed run must continue: the CPU's, and the GPU's it trains on."""
    state = {"cpu": torch.get_rng_state()}
    if getattr(device, "type", None) == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(torch, state: dict, device) -> None:
    torch.set_rng_state(state["cpu"])
    if state.get("cuda") is not None and getattr(device, "type", None) == "cuda":
        torch.cuda.set_rng_state(state["cuda"], device)


def load_checkpoint_state(checkpoint_dir: str) -> dict[str, Any]:
    """The dict a checkpoint directory holds (model, optimizer, scheduler, epoch, best state)."""
    import torch

    path = os.path.join(checkpoint_dir, CHECKPOINT_FILE)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {CHECKPOINT_FILE} in checkpoint directory '{checkpoint_dir}'")
    return torch.load(path, map_location="cpu", weights_only=True)


def _state_copy(module) -> dict:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def train_loop(
    config: dict[str, Any],
    data_spec: DatasetSpec,
    model_spec: ModelSpec,
    epochs: int,
    session: Session | None = None,
    precision: str = "fp32",
) -> dict[str, Any]:
    """Fine-tune ``model_spec`` on ``data_spec`` for up to ``epochs`` epochs.

    Parameters
    ----------
    config : dict
        Hyperparameters (see the module docstring); missing keys take ``DEFAULTS``.
    data_spec : DatasetSpec
    model_spec : ModelSpec
    epochs : int
        Total epochs, counting those done before a resume.
    session : Session, optional
        Where metrics and checkpoints go; a throw-away ``LocalSession`` if omitted.
    precision : {"fp32", "bf16", "fp16"}
        Mixed precision: the forward pass under ``torch.autocast`` in that dtype (fp16 with a
        gradient scaler); weights, optimizer state and checkpoints stay fp32. On CUDA the model
        and batches also go channels-last and batches come from pinned memory.

    Returns
    -------
    dict
        The last reported metrics (empty if a resumed run had nothing left to do).
    """
    import torch
    from torch.nn import functional as F
    from torch.utils.data import DataLoader, DistributedSampler

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    cfg = resolve_config(config)
    session = session if session is not None else LocalSession()
    if session.num_threads:
        torch.set_num_threads(int(session.num_threads))
    setup_start = time.perf_counter()
    seed = int(cfg["seed"])
    _seed_everything(seed)
    splits = load_dataset(data_spec)
    device = session.device
    if device.type == "cuda":
        # Every batch has one image shape (the last may be smaller): cuDNN's autotuner picks the
        # fastest convolution algorithm once per shape, then reuses it.
        torch.backends.cudnn.benchmark = True
    raw_model = _channels_last(device, build_from_spec(model_spec).to(device))
    optimizer = _make_optimizer(cfg, raw_model)
    # fp16's narrow range underflows small gradients: scale the loss, unscale before clipping,
    # skip the steps whose gradients overflowed. bf16 has fp32's range and needs none of it.
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    distributed = session.world_size > 1

    batch_size = int(cfg["batch_size"])
    if distributed:
        sampler = DistributedSampler(
            splits.train,
            num_replicas=session.world_size,
            rank=session.world_rank,
            shuffle=True,
            seed=seed,
        )
    else:
        sampler = _EpochSampler(len(splits.train), seed)
    loader = DataLoader(
        splits.train,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collate_batch,
        num_workers=0,
        pin_memory=device.type == "cuda",  # lets the host-to-device copy run asynchronously
    )
    steps_per_epoch = len(loader)
    if cfg.get("warmup_steps") is not None:
        warmup_steps = int(cfg["warmup_steps"])
    else:
        warmup_steps = int(cfg["warmup_epochs"]) * steps_per_epoch
    factor = partial(
        lr_factor,
        steps_per_epoch=steps_per_epoch,
        total_steps=int(epochs) * steps_per_epoch,
        warmup_steps=warmup_steps,
        schedule=cfg["schedule"],
        step_size=int(cfg["step_size"]),
        gamma_step=float(cfg["gamma_step"]),
        gamma_exp=float(cfg["gamma_exp"]),
        min_lr_ratio=float(cfg["min_lr_ratio"]),
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    # ``best``: the selected epoch (highest val_accuracy). ``watch``: patience on val_loss.
    best = {"val_loss": math.inf, "val_accuracy": -1.0, "epoch": 0}
    watch = {"val_loss": math.inf, "bad_epochs": 0}
    best_model: dict | None = None
    start_epoch = 1
    rng_state = None
    resume_dir = session.get_checkpoint_dir()
    if resume_dir:
        state = load_checkpoint_state(resume_dir)
        rng_state = state.get("rng")
        raw_model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        best = dict(state["best"])
        watch = dict(state.get("watch") or {"val_loss": best["val_loss"],
                                            "bad_epochs": best.get("bad_epochs", 0)})
        best_model = state.get("best_model")
        start_epoch = int(state["epoch"]) + 1
        if state.get("early_stopped") or start_epoch > epochs:
            return {}
    model = session.prepare_model(raw_model)
    loader = session.prepare_loader(loader)
    if rng_state is not None:
        # Where the checkpointed epoch left the random streams (dropout's masks draw from
        # them), once building the model and its wrappers has drawn what it draws: the epochs
        # after a resume then see the masks an unbroken run would have.
        _set_rng_state(torch, rng_state, device)
    setup_seconds = time.perf_counter() - setup_start

    clip = float(cfg["clip_norm"]) if cfg["clip_norm"] else None
    patience = int(cfg["patience"])
    freeze_epochs = int(cfg["freeze_epochs"])
    backbone_params = raw_model.backbone_parameters()
    all_params = list(raw_model.parameters())
    metrics: dict[str, Any] = {}

    for epoch in range(start_epoch, int(epochs) + 1):
        epoch_start = time.perf_counter()
        frozen = epoch <= freeze_epochs
        _set_frozen(raw_model, frozen, distributed)
        model.train()
        if frozen:
            # Frozen means the statistics too: batch-norm running means would otherwise drift
            # towards the target data while the weights stay put.
            raw_model.backbone.eval()
        sampler.set_epoch(epoch)
        count = steps = 0
        head_lr = backbone_lr = 0.0
        # loss, correct, grad-norm sum, clipped steps, skipped steps: summed on the device, read
        # once after the epoch, so a step never waits for the GPU to finish the one before.
        sums = torch.zeros(5, dtype=torch.float64, device=device)
        train_start = time.perf_counter()
        for x, y in loader:
            x = _channels_last(device, x.to(device, non_blocking=True))
            y = y.to(device, non_blocking=True)
            with _autocast(device, precision):
                logits = model(x)
            loss = F.cross_entropy(logits.float(), y)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if frozen and distributed:
                for param in backbone_params:
                    param.grad = None
            scaler.unscale_(optimizer)  # clip the true gradients, not the scaled ones
            with_grad = [p for p in all_params if p.grad is not None]
            norm = torch.nn.utils.clip_grad_norm_(with_grad, clip if clip else math.inf).double()
            head_lr = optimizer.param_groups[1]["lr"]
            backbone_lr = 0.0 if frozen else optimizer.param_groups[0]["lr"]
            # fp16 overflow: the scaler skips the step and lowers its scale; such a step is
            # counted, not averaged into the gradient norm (a diverged run still ends as an error
            # through its loss). Without a scaler every step counts.
            ok = torch.isfinite(norm) if scaler.is_enabled() else \
                torch.ones_like(norm, dtype=torch.bool)
            sums[2] += torch.where(ok, norm, 0.0)
            if clip:
                sums[3] += ok & (norm > clip)
            sums[4] += ~ok
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            sums[0] += loss.detach().double() * len(y)
            sums[1] += (logits.detach().argmax(dim=1) == y).sum()
            count += len(y)
            steps += 1
        loss_sum, correct, norm_sum, clipped, skipped = sums.tolist()  # waits for the GPU
        train_seconds = time.perf_counter() - train_start
        session.sync_buffers(raw_model)
        loss_sum, correct, count, norm_sum, clipped, steps, skipped = session.all_reduce_sum(
            [loss_sum, correct, count, norm_sum, clipped, steps, skipped]
        )

        # Every rank scores the whole (small) val split with the unwrapped model, so all ranks
        # take the same early-stopping decision without another collective.
        val_loss, val_accuracy = evaluate_split(
            raw_model, splits.val, device, int(cfg["eval_batch_size"]), precision
        )
        train_loss = loss_sum / max(count, 1)
        for name, value in (("train_loss", train_loss), ("val_loss", val_loss)):
            if not math.isfinite(value):
                # A diverged trial: an error with its reason, never a score for the search.
                raise FloatingPointError(f"{name} is {value} at epoch {epoch} (the run diverged; "
                                         "try a lower lr or clip_norm)")
        if val_accuracy > best["val_accuracy"]:
            best = {"val_loss": val_loss, "val_accuracy": val_accuracy, "epoch": epoch}
            best_model = _state_copy(raw_model)
        if val_loss < watch["val_loss"] - float(cfg["min_delta"]):
            watch = {"val_loss": val_loss, "bad_epochs": 0}
        else:
            watch["bad_epochs"] += 1
        stop = patience > 0 and watch["bad_epochs"] >= patience and epoch < epochs

        metrics = {
            "epoch": epoch,
            "train_loss": train_loss,
            "train_accuracy": correct / max(count, 1),
            "val_loss": val_loss,
            "val_accuracy": val_accuracy,
            "lr": float(head_lr),
            "backbone_lr": float(backbone_lr),
            "frozen": frozen,
            "grad_norm": norm_sum / max(steps - skipped, 1),
            "clip_fraction": clipped / max(steps - skipped, 1),
            # Summed over workers like the other counts, but every worker skips the same
            # overflowed step (the scaler sees the all-reduced gradients): one per step.
            "skipped_steps": int(round(skipped / session.world_size)),
            "best_val_loss": best["val_loss"],
            "best_val_accuracy": best["val_accuracy"],
            "best_epoch": best["epoch"],
            # What Tune keeps checkpoints by (--keep-checkpoints): val_accuracy with the
            # earlier epoch ahead on a tie, as the selection rule has it. Ray's checkpoint
            # manager keeps the newest of tied scores, and a val split of 179 images ties often,
            # so the selected epoch's own checkpoint was the one deleted. Accuracies differ by
            # 1 / val size at least: the 1e-9 per epoch never reorders different scores.
            CHECKPOINT_SCORE: val_accuracy - 1e-9 * epoch,
            "early_stopped": stop,
            **({"stopped_by": "patience"} if stop else {}),
            # All workers' samples over this worker's time: the group's throughput.
            "samples_per_second": count / max(train_seconds, 1e-9),
            "setup_seconds": setup_seconds,
            "world_size": session.world_size,
        }
        checkpoint_state = None
        if session.is_chief:
            checkpoint_state = {
                "format": CHECKPOINT_FORMAT,
                "epoch": epoch,
                "model": _state_copy(raw_model),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict() if scaler.is_enabled() else None,
                "best": dict(best),
                "watch": dict(watch),
                "best_model": best_model,
                "early_stopped": stop,
                "rng": _rng_state(torch, device),
                "config": {
                    k: v
                    for k, v in cfg.items()
                    if isinstance(v, (int, float, str, bool, type(None)))
                },
                "model_spec": model_spec.to_dict(),
                "data_spec": data_spec.to_dict(),
                "metrics": dict(metrics),
            }
        with tempfile.TemporaryDirectory(prefix="finetune-ckpt-") as tmp:
            if checkpoint_state is not None:
                torch.save(checkpoint_state, os.path.join(tmp, CHECKPOINT_FILE))
            metrics["epoch_seconds"] = time.perf_counter() - epoch_start
            session.report(dict(metrics), tmp if checkpoint_state is not None else None)
        if stop:
            break
    return metrics


def train_worker(loop_config: dict[str, Any]) -> None:
    """``train_loop`` on one Ray Train worker (the ``train_loop_per_worker`` of a TorchTrainer).

    Parameters
    ----------
    loop_config : dict
        ``config``, ``data_spec``, ``model_spec``, ``epochs``, and optionally ``resume_from``
        (a checkpoint to start from when Ray Train has none), ``num_threads`` and
        ``precision``.
    """
    from trainables.session import TrainSession

    session = TrainSession(
        resume_from=loop_config.get("resume_from"),
        num_threads=loop_config.get("num_threads"),
    )
    train_loop(
        loop_config["config"],
        loop_config["data_spec"],
        loop_config["model_spec"],
        int(loop_config["epochs"]),
        session,
        loop_config.get("precision", "fp32"),
    )
