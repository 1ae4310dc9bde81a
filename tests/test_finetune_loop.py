"""The fine-tuning loop as a plain function, through a LocalSession (no Ray)."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from trainables.finetune import (  # noqa: E402
    DEFAULTS,
    load_checkpoint_state,
    lr_factor,
    resolve_config,
    train_loop,
)
from trainables.image_data import resolve_dataset  # noqa: E402
from trainables.image_models import build_from_spec, resolve_model  # noqa: E402
from trainables.session import LocalSession  # noqa: E402

REQUIRED_KEYS = {
    "epoch",
    "train_loss",
    "val_loss",
    "val_accuracy",
    "lr",
    "epoch_seconds",
    "samples_per_second",
}


@pytest.fixture(scope="module")
def specs():
    # 128 training rows = 4 steps of 32 per epoch: enough to see every mechanism, fast.
    data = resolve_dataset("digits-transfer", train_limit=128)
    model = resolve_model("small_cnn", "none", data)
    return data, model


@pytest.fixture(autouse=True)
def one_thread():
    # A shared 2-core machine: more torch threads than cores slows a tiny model many times.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def run(specs, epochs, session=None, **config):
    data, model = specs
    session = session or LocalSession()
    cfg = {"batch_size": 32, "patience": 0, **config}
    train_loop(cfg, data, model, epochs, session)
    return session


def state(session, index):
    return load_checkpoint_state(session.checkpoints[index])


def test_reports_every_epoch_with_the_documented_keys(specs):
    with run(specs, 2) as session:
        assert [m["epoch"] for m in session.metrics] == [1, 2]
        for metrics in session.metrics:
            assert REQUIRED_KEYS <= set(metrics)
            assert 0.0 <= metrics["val_accuracy"] <= 1.0
            assert metrics["samples_per_second"] > 0
            assert all(not isinstance(v, torch.Tensor) for v in metrics.values())
        assert all(c is not None for c in session.checkpoints)
        assert state(session, 1)["epoch"] == 2


def test_it_learns(specs):
    with run(specs, 4, lr=1e-2) as session:
        first, last = session.metrics[0], session.metrics[-1]
        assert last["train_loss"] < first["train_loss"]
        assert last["val_accuracy"] > 0.6  # 5 classes: chance is 0.2


def test_linear_warmup_per_step(specs):
    # 4 steps per epoch, 2 warm-up epochs: the last step of epoch 1 runs at 4/8 of the rate.
    with run(specs, 3, lr=1e-2, warmup_epochs=2, schedule="none") as session:
        lrs = [m["lr"] for m in session.metrics]
        assert lrs == pytest.approx([5e-3, 1e-2, 1e-2])


@pytest.mark.parametrize(
    "schedule, extra, expected",
    [
        ("step", {"step_size": 1, "gamma_step": 0.5}, [1.0, 0.5, 0.25]),
        ("step", {"step_size": 2, "gamma_step": 0.1}, [1.0, 1.0, 0.1]),
        ("exponential", {"gamma_exp": 0.9}, [1.0, 0.9, 0.81]),
    ],
)
def test_epoch_schedules(specs, schedule, extra, expected):
    with run(specs, 3, lr=1e-2, schedule=schedule, **extra) as session:
        assert [m["lr"] / 1e-2 for m in session.metrics] == pytest.approx(expected)


def test_cosine_decays_to_the_floor_and_backbone_follows_its_multiplier(specs):
    with run(specs, 3, lr=1e-2, schedule="cosine", backbone_lr_mult=0.1) as session:
        lrs = [m["lr"] for m in session.metrics]
        assert lrs[0] < 1e-2 and lrs[0] > lrs[1] > lrs[2]
        assert lrs[2] < 1e-2 * 0.05
        for m in session.metrics:
            assert m["backbone_lr"] == pytest.approx(0.1 * m["lr"])


def test_lr_factor_warmup_then_cosine():
    kwargs = dict(steps_per_epoch=10, total_steps=50, warmup_steps=10, schedule="cosine")
    assert lr_factor(0, **kwargs) == pytest.approx(0.1)
    assert lr_factor(9, **kwargs) == pytest.approx(1.0)
    assert lr_factor(10, **kwargs) == pytest.approx(1.0)  # the schedule starts after warm-up
    assert lr_factor(30, **kwargs) == pytest.approx(0.5)
    assert lr_factor(50, **kwargs, min_lr_ratio=0.1) == pytest.approx(0.1)


def test_freezing_freezes_the_backbone_then_unfreezes(specs):
    data, model_spec = specs
    torch.manual_seed(0)  # the loop seeds the same way before building the model
    initial = build_from_spec(model_spec).state_dict()
    with run(specs, 2, seed=0, freeze_epochs=1, lr=1e-2) as session:
        after_1, after_2 = state(session, 0)["model"], state(session, 1)["model"]
        backbone = [k for k in initial if k.startswith("backbone.")]
        head = [k for k in initial if k.startswith("head.")]
        # Weights and batch-norm statistics alike stay put while frozen ...
        assert all(torch.equal(after_1[k], initial[k]) for k in backbone)
        assert any(not torch.equal(after_1[k], initial[k]) for k in head)
        # ... and move once unfrozen.
        assert any(not torch.equal(after_2[k], after_1[k]) for k in backbone if "weight" in k)
        assert [m["frozen"] for m in session.metrics] == [True, False]
        assert session.metrics[0]["backbone_lr"] == 0.0 < session.metrics[1]["backbone_lr"]


def test_clipping_clips(specs):
    with run(specs, 1, clip_norm=1e-4, lr=1e-2) as clipped, run(specs, 1, lr=1e-2) as free:
        assert clipped.metrics[0]["clip_fraction"] == 1.0
        assert clipped.metrics[0]["grad_norm"] > 1e-4
        assert free.metrics[0]["clip_fraction"] == 0.0
        a, b = state(clipped, 0)["model"], state(free, 0)["model"]
        assert any(not torch.allclose(a[k], b[k]) for k in a if a[k].is_floating_point())


def test_adamw_decouples_weight_decay(specs):
    def final(optimizer, weight_decay):
        with run(specs, 1, optimizer=optimizer, weight_decay=weight_decay, lr=1e-2) as s:
            return state(s, 0)["model"]

    adam, adamw = final("adam", 0.1), final("adamw", 0.1)
    assert any(not torch.allclose(adam[k], adamw[k]) for k in adam if adam[k].is_floating_point())
    # Without weight decay the two are the same optimizer.
    adam0, adamw0 = final("adam", 0.0), final("adamw", 0.0)
    assert all(torch.allclose(adam0[k], adamw0[k]) for k in adam0)


def test_early_stopping_stops_and_stays_stopped(specs):
    # A min_delta no epoch can beat: epoch 1 sets the val_loss to beat, 2 and 3 fail, patience
    # 2 stops.
    with run(specs, 10, patience=2, min_delta=1e9) as session:
        assert [m["epoch"] for m in session.metrics] == [1, 2, 3]
        assert [m["early_stopped"] for m in session.metrics] == [False, False, True]
        assert session.metrics[-1]["stopped_by"] == "patience"
        # Patience only stops: the selected epoch is still the best val_accuracy (earliest on
        # a tie), whatever val_loss did.
        accuracies = [m["val_accuracy"] for m in session.metrics]
        assert session.metrics[-1]["best_epoch"] == accuracies.index(max(accuracies)) + 1
        assert session.metrics[-1]["best_val_accuracy"] == max(accuracies)
        data, model = specs
        with LocalSession(resume_from=session.latest_checkpoint) as again:
            assert train_loop({"patience": 2, "min_delta": 1e9}, data, model, 10, again) == {}
            assert again.metrics == []


class _Crash(RuntimeError):
    pass


class CrashingSession(LocalSession):
    """Dies right after reporting epoch ``after``, like a preempted trial."""

    def __init__(self, after):
        super().__init__()
        self.after = after

    def report(self, metrics, checkpoint_dir=None):
        super().report(metrics, checkpoint_dir)
        if metrics["epoch"] == self.after:
            raise _Crash


def test_resume_continues_at_the_next_epoch_and_matches_an_unbroken_run(specs):
    config = dict(
        lr=1e-2,
        warmup_epochs=1,
        schedule="cosine",
        clip_norm=1.0,
        freeze_epochs=1,
        backbone_lr_mult=0.3,
        seed=3,
        patience=3,
    )
    data, model = specs
    with run(specs, 4, **config) as unbroken, CrashingSession(after=2) as crashed:
        with pytest.raises(_Crash):
            train_loop({"batch_size": 32, **config}, data, model, 4, crashed)
        with LocalSession(resume_from=crashed.latest_checkpoint) as resumed:
            train_loop({"batch_size": 32, **config}, data, model, 4, resumed)
            assert [m["epoch"] for m in resumed.metrics] == [3, 4]
            for got, want in zip(resumed.metrics, unbroken.metrics[2:], strict=True):
                assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-5)
                assert got["lr"] == pytest.approx(want["lr"])


def test_resume_continues_the_random_streams_of_a_model_with_dropout():
    # small_cnn has no dropout; mobilenet_v3_small's classifier does. Its masks draw from the
    # global RNG, which the checkpoint did not keep: a resumed run reseeded it and built the
    # model, so its epochs after the resume trained with other masks than an unbroken run's.
    data = resolve_dataset("digits-transfer", train_limit=64)
    model = resolve_model("mobilenet_v3_small", "none", data)
    config = {"batch_size": 32, "patience": 0, "lr": 1e-3, "seed": 2, "freeze_epochs": 0}
    with LocalSession() as unbroken, CrashingSession(after=1) as crashed:
        train_loop(dict(config), data, model, 2, unbroken)
        with pytest.raises(_Crash):
            train_loop(dict(config), data, model, 2, crashed)
        with LocalSession(resume_from=crashed.latest_checkpoint) as resumed:
            train_loop(dict(config), data, model, 2, resumed)
            (got,) = resumed.metrics
            want = unbroken.metrics[1]
            assert got["epoch"] == want["epoch"] == 2
            # Other masks moved the losses by about 1e-3 (relative); the same masks leave only
            # what float arithmetic may leave.
            assert got["train_loss"] == pytest.approx(want["train_loss"], rel=1e-6)
            assert got["val_loss"] == pytest.approx(want["val_loss"], rel=1e-6)


def test_same_seed_same_run_other_seed_other_run(specs):
    with run(specs, 1, seed=5) as a, run(specs, 1, seed=5) as b, run(specs, 1, seed=6) as c:
        assert a.metrics[0]["val_loss"] == b.metrics[0]["val_loss"]
        assert a.metrics[0]["val_loss"] != c.metrics[0]["val_loss"]


@pytest.mark.parametrize(
    "bad", [{"optimizer": "sgd"}, {"schedule": "linear"}, {"lr": 0}, {"one_minus_beta2": 1.5}]
)
def test_bad_config_names_the_key(bad):
    key = next(iter(bad))
    with pytest.raises(ValueError, match=key.split("_")[0]):
        resolve_config(bad)


def test_defaults_cover_every_space_parameter():
    from search_spaces.adam_finetune import SPACE

    missing = [name for name in SPACE.params if name not in DEFAULTS]
    assert missing == []
    assert math.isclose(1 - DEFAULTS["one_minus_beta2"], 0.999)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_learns_and_keeps_fp32_weights(specs, precision):
    """bf16/fp16 autocast (fp16 with its gradient scaler) on the CPU: the loop learns as fp32
    does, reports throughput, and checkpoints fp32 weights a plain fp32 model loads."""
    data, model = specs
    with LocalSession() as session:
        train_loop({"batch_size": 32, "patience": 0, "lr": 1e-2}, data, model, 4, session,
                   precision)
        first, last = session.metrics[0], session.metrics[-1]
        assert last["train_loss"] < first["train_loss"]
        assert last["val_accuracy"] > 0.6
        assert all(m["samples_per_second"] > 0 for m in session.metrics)
        assert all(math.isfinite(m["grad_norm"]) for m in session.metrics)
        saved = state(session, -1)
        weights = saved["model"]
        assert all(t.dtype == torch.float32 for t in weights.values() if t.is_floating_point())
        assert (saved["scaler"] is not None) == (precision == "fp16")
        net = build_from_spec(model)
        net.load_state_dict(weights)


def test_unknown_precision_is_refused(specs):
    data, model = specs
    with pytest.raises(ValueError, match="precision must be one of fp32, bf16, fp16"):
        train_loop({}, data, model, 1, LocalSession(), "fp8")
