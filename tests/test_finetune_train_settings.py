"""The Ray Train settings of a multi-worker trial reach the processes that read them.

A setting Ray Train does not propagate, or reads under another name after an upgrade, would be
silently ignored; these tests fail instead. Fast: no Ray cluster.
"""

from __future__ import annotations

from pipelines.finetune_trial import TRAIN_SETTINGS, apply_train_settings

# Read by the trial's own process (the Train driver), not by the controller or the workers.
DRIVER_ONLY = {"RAY_TRAIN_METRICS_ENABLED"}


def test_every_setting_is_one_ray_train_reads():
    from ray.train.v2._internal import constants

    names = {v for k, v in vars(constants).items() if k.endswith("_ENV_VAR")}
    assert set(TRAIN_SETTINGS) <= names


def test_settings_reach_the_controller_and_workers(monkeypatch):
    from ray.train.v2._internal.constants import get_env_vars_to_propagate

    for name in TRAIN_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    apply_train_settings()
    # What fit() puts in the controller's runtime_env, and the controller in the workers'.
    propagated = get_env_vars_to_propagate()
    for name, value in TRAIN_SETTINGS.items():
        if name not in DRIVER_ONLY:
            assert propagated.get(name) == value, name


def test_metrics_callbacks_are_off_in_the_trial(monkeypatch):
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.metrics import (
        ControllerMetricsCallback,
        WorkerMetricsCallback,
    )

    for name in TRAIN_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    apply_train_settings()
    trainer = TorchTrainer(lambda: None, scaling_config=ray.train.ScalingConfig(num_workers=2))
    # The callbacks fit() hands the controller (a Train internal, read where it is decided).
    callbacks = trainer._create_default_callbacks()
    assert not [c for c in callbacks
                if isinstance(c, (ControllerMetricsCallback, WorkerMetricsCallback))]


def test_the_placement_group_cleaner_is_stopped_without_a_wait():
    """The trial's trainer swaps Train's cleaner callback for ours (a Train internal)."""
    import ray.train
    from ray.train.torch import TorchTrainer
    from ray.train.v2._internal.callbacks.placement_group_callback import (
        PlacementGroupCleanerCallback,
    )

    from pipelines.finetune_trial import _trainer_class
    from trainables.train_callbacks import PromptCleanerStop

    trainer = _trainer_class(TorchTrainer)(
        lambda: None, scaling_config=ray.train.ScalingConfig(num_workers=2)
    )
    callbacks = trainer._create_default_callbacks()
    cleaners = [c for c in callbacks if isinstance(c, PlacementGroupCleanerCallback)]
    assert len(cleaners) == 1 and type(cleaners[0]) is PromptCleanerStop
    # Ray's own callback still has the hook ours overrides (an upgrade that drops it fails here).
    assert "before_controller_shutdown" in vars(PlacementGroupCleanerCallback)


def test_a_value_the_user_exported_wins(monkeypatch):
    monkeypatch.setenv("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "3")
    assert apply_train_settings()["RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"] == "3"


def test_the_cpu_backend_keeps_torch_out_of_the_controller():
    """What Train's controller unpickles for a CPU trial's backend imports no torch."""
    import pickle
    import subprocess
    import sys

    from trainables.gloo_backend import GlooConfig

    payload = pickle.dumps(GlooConfig())
    code = (
        "import pickle, sys; config = pickle.loads(sys.stdin.buffer.read()); "
        "config.backend_cls; print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], input=payload, capture_output=True,
                         check=True)
    assert out.stdout.strip() == b"False"
