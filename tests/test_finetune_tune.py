"""Real Ray Tune runs of the fine-tuning trial: in-process (N=1) and Ray Train DDP (N=2)."""

from __future__ import annotations

import os
import time

import pytest

ray = pytest.importorskip("ray")
pytest.importorskip("torch")

from ray import tune  # noqa: E402

from pipelines.finetune_trial import (  # noqa: E402
    checkpoint_of,
    checkpoint_path_of,
    evaluate_checkpoint,
    make_trial,
    save_best_model,
    trial_demand,
)
from trainables.finetune import load_checkpoint_state  # noqa: E402
from trainables.image_data import resolve_dataset  # noqa: E402
from trainables.image_models import build_model, resolve_model  # noqa: E402

pytestmark = pytest.mark.ray

CONFIG = {"batch_size": 32, "schedule": "cosine", "clip_norm": 1.0, "patience": 0}


@pytest.fixture(scope="module")
def cluster():
    # Train V2 inside Tune needs the state API (dashboard). Two CPUs, like this machine: the
    # N=2 trial's idle driver holds no CPU, so both workers still fit.
    ray.init(address="local", num_cpus=2, include_dashboard=True, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def specs():
    data = resolve_dataset("digits-transfer", train_limit=160)
    return data, resolve_model("small_cnn", "none", data)


def fit(trainable, resources, param_space, storage, **tune_kwargs):
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(metric="val_loss", mode="min", **tune_kwargs),
        run_config=tune.RunConfig(storage_path=str(storage), name="study", verbose=0),
    )
    return tuner.fit()


def test_one_worker_trials_report_epochs_and_checkpoints(cluster, specs, tmp_path):
    data, model = specs
    trainable, resources = make_trial(data, model, epochs=2)
    assert resources == {"cpu": 1, "gpu": 0}
    grid = fit(trainable, resources, {**CONFIG, "lr": tune.grid_search([3e-3, 1e-2])}, tmp_path)
    assert len(grid) == 2 and not grid.errors
    for result in grid:
        history = result.metrics_dataframe
        assert history["epoch"].tolist() == [1, 2]
        assert result.metrics["world_size"] == 1
        path = checkpoint_path_of(result)
        assert path and os.path.isfile(os.path.join(path, "state.pt"))
        scores = evaluate_checkpoint(path, data, model)
        assert scores["test_samples"] == 179 and 0.0 <= scores["test_accuracy"] <= 1.0
    best = grid.get_best_result()
    exported = save_best_model(checkpoint_path_of(best), model, tmp_path / "best.pt")
    # The export is a --weights file: a new model starts from the tuned backbone.
    import torch

    reloaded = build_model("small_cnn", 5, exported)
    tuned = load_checkpoint_state(checkpoint_path_of(best))["best_model"]
    assert torch.equal(reloaded.backbone[0].weight, tuned["backbone.0.weight"])


def assert_train_runs_left_nothing(wait_s: float = 20.0) -> None:
    """No placement group still reserved and no placement group cleaner actor still alive."""
    from ray.util.state import list_actors

    deadline = time.monotonic() + wait_s
    while True:
        groups = [g for g in ray.util.placement_group_table().values()
                  if g["state"] not in ("REMOVED",)]
        # This test's own Ray, by address: another Ray on the machine (a user's, a second
        # test run's) would make the state API's own lookup refuse to choose.
        cleaners = list_actors(address=ray.get_runtime_context().gcs_address,
                               filters=[("class_name", "=", "PlacementGroupCleaner"),
                                        ("state", "!=", "DEAD")])
        if not groups and not cleaners:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"left behind: groups {groups}, cleaners {cleaners}")
        time.sleep(0.5)


def test_two_worker_trial_runs_data_parallel_through_ray_train(cluster, specs, tmp_path):
    data, model = specs
    trainable, resources = make_trial(data, model, epochs=2, workers_per_trial=2)
    assert resources["cpu"] == 0  # the idle driver; Train V2 reserves the workers itself
    assert trial_demand(2) == {"cpu": 2.0, "gpu": 0.0}
    # Two trials in turn: the second's workers start only if the first's placement group was
    # removed (the cleaner is stopped without a wait: trainables.train_callbacks).
    grid = fit(trainable, resources, {**CONFIG, "lr": tune.grid_search([1e-2, 3e-3])}, tmp_path,
               max_concurrent_trials=1)
    assert len(grid) == 2 and not grid.errors, grid.errors
    assert_train_runs_left_nothing()
    result = grid[0]
    assert result.metrics_dataframe["epoch"].tolist() == [1, 2]
    assert result.metrics["world_size"] == 2
    path = checkpoint_path_of(result)
    assert path and path.startswith(result.path)  # the Train run lives inside the trial
    scores = evaluate_checkpoint(checkpoint_of(result), data, model, which="last")
    assert scores["checkpoint_epoch"] == 2 and scores["test_samples"] == 179
