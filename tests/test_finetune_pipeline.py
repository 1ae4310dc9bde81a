"""python -m pipelines.finetune end to end on a local Ray, and its bad-input paths."""

import json

import pandas as pd
import pytest

from search_spaces.loader import load_space
from tests.helpers import run_module


@pytest.mark.ray
def test_finetune_cli_writes_epochs_checkpoints_and_compares_with_svm(tmp_path):
    proc = run_module("pipelines.finetune", "--algo", "random", "--num-samples", "2", "--epochs", "2",
                      "--seed", "0", "--output", str(tmp_path), "--name", "ft", "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "ft"
    trials = pd.read_parquet(exp / "trials.parquet")
    epochs = pd.read_parquet(exp / "epochs.parquet")
    assert len(trials) == 2
    assert trials["checkpoint"].notna().all()
    assert set(epochs.columns) >= {"epoch", "train_loss", "val_loss", "val_accuracy", "lr",
                                   "epoch_seconds", "samples_per_second"}
    # The diagnostics a user tuning warm-up, clipping or precision reads, per epoch.
    assert epochs["frozen"].dtype == bool and epochs["skipped_steps"].eq(0).all()  # fp32
    assert epochs["clip_fraction"].between(0.0, 1.0).all()
    assert (epochs["grad_norm"] > 0).all() and epochs["train_accuracy"].between(0.0, 1.0).all()
    assert (epochs.loc[epochs["frozen"], "backbone_lr"] == 0).all()
    per_trial = epochs.groupby("trial_id")["epoch"].apply(list)
    assert all(e == list(range(1, len(e) + 1)) for e in per_trial)
    assert (trials["best_val_accuracy"] >= trials["val_accuracy"] - 1e-12).all()
    assert trials["param_lr"].between(1e-5, 1e-1).all()
    info = json.loads((exp / "experiment.json").read_text())
    best = info["best"]
    assert 0.0 < best["test_accuracy"] <= 1.0 and 0.0 < best["svm_test_accuracy"] <= 1.0
    assert (exp / "best_model.pt").is_file()
    assert "tuned SVM baseline" in proc.stdout and f"{best['test_accuracy']:.4f}" in proc.stdout
    # One selection rule: the tested weights are the epoch the ranking chose.
    row = trials.set_index("trial_id").loc[best["trial_id"]]
    assert best["epoch"] == row["best_iteration"]
    assert best["val_accuracy"] == row["best_val_accuracy"] == trials["best_val_accuracy"].max()
    _moved_then_resumed_is_tested_on_its_own_checkpoint(tmp_path, "ft", info)


def _moved_then_resumed_is_tested_on_its_own_checkpoint(tmp_path, name, info):
    """The user moves the experiment's folder, here to a machine smaller than the one that
    trained; the driver had been killed during the final evaluation (status running, no best).
    --resume from the new place tests the copied checkpoint, never the one left behind."""
    import shutil

    moved = tmp_path / "moved"
    moved.mkdir()
    shutil.copytree(tmp_path / name, moved / name)
    # The copy left behind is not the experiment's any more: its weights must not be read.
    spoiled = list((tmp_path / name).rglob("state.pt"))
    assert spoiled
    for path in spoiled:
        path.write_bytes(b"not a checkpoint")
    stored = dict(info, status="running")
    stored.pop("best")
    # As if it had trained on a bigger machine than this one: scoring the best trial needs none.
    stored["flags"] = dict(stored["flags"], gpus_per_worker=64)
    (moved / name / "experiment.json").write_text(json.dumps(stored))
    proc = run_module("pipelines.finetune", "--resume", "--name", name, "--output", str(moved))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    again = json.loads((moved / name / "experiment.json").read_text())
    assert again["status"] == "finished"
    assert again["best"]["test_accuracy"] == pytest.approx(info["best"]["test_accuracy"])
    assert again["best"]["trial_id"] == info["best"]["trial_id"]
    assert again["locations"] == [str(tmp_path / name), str(moved / name)]
    trials = pd.read_parquet(moved / name / "trials.parquet")
    assert trials["checkpoint"].str.startswith(str(moved / name) + "/").all()


@pytest.mark.ray
def test_ddp_trials_record_their_checkpoint_and_are_tested(tmp_path):
    # Two trials one after the other: the second runs in the first one's reused trial actor,
    # with a Train controller and workers of its own.
    proc = run_module("pipelines.finetune", "--workers-per-trial", "2", "--algo", "random",
                      "--num-samples", "2", "--epochs", "2", "--seed", "0", "--no-baseline",
                      "--output", str(tmp_path), "--name", "ddp", "--num-cpus", "2",
                      "--max-concurrent", "1", "--keep-checkpoints", "1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "ddp"
    trials = pd.read_parquet(exp / "trials.parquet")
    assert len(trials) == 2 and (trials["status"] == "finished").all()
    assert trials["checkpoint"].notna().all() and trials["checkpoint"].nunique() == 2
    assert all(c.startswith(str(exp)) for c in trials["checkpoint"])
    epochs = pd.read_parquet(exp / "epochs.parquet")
    assert sorted(epochs.groupby("trial_id").size()) == [2, 2]
    info = json.loads((exp / "experiment.json").read_text())
    assert 0.0 < info["best"]["test_accuracy"] <= 1.0
    best = trials.set_index("trial_id").loc[info["best"]["trial_id"]]
    assert info["best"]["epoch"] == best["best_iteration"]
    assert (exp / "best_model.pt").is_file()
    # --keep-checkpoints 1 keeps each trial's selected epoch (by val_accuracy), and the latest.
    from pipelines.finetune_trial import train_checkpoint_config
    from trainables.finetune import CHECKPOINT_SCORE, load_checkpoint_state

    rule = train_checkpoint_config(1)
    assert (rule.num_to_keep, rule.checkpoint_score_attribute, rule.checkpoint_score_order) == \
        (1, CHECKPOINT_SCORE, "max")
    for trial in trials.itertuples():
        kept = {load_checkpoint_state(str(path.parent))["epoch"]
                for path in exp.glob(f"*{trial.trial_id}*/**/state.pt")}
        assert {trial.best_iteration, 2} <= kept, (trial.trial_id, kept)
    # A Train run's checkpoints sit one folder deeper; a moved experiment finds them too.
    _moved_then_resumed_is_tested_on_its_own_checkpoint(tmp_path, "ddp", info)


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--dataset", "MNIST", "--data-root", "{tmp}/nowhere"], "MNIST"),
        (["--dataset", "{tmp}/no_such_folder"], "no_such_folder"),
        (["--model", "resnet18", "--weights", "{tmp}/missing.pth"], "missing.pth"),
        (["--epochs", "0"], "--epochs"),
        (["--train-fraction", "0"], "--train-fraction"),
        (["--precision", "fp8"], "--precision"),
        (["--val-fraction", "0.9"], "use a val fraction below 0.75"),
        (["--scheduler", "asha", "--grace-period", "9", "--epochs", "3"], "--grace-period (9) exceeds"),
        # No trial would reach ASHA's full budget: the searcher would never see a final score.
        (["--scheduler", "asha", "--max-t", "5", "--epochs", "3"], "--max-t (5) differs from --epochs (3)"),
        # Below: every trial stopped there as "finished", its schedule planned for --epochs.
        (["--scheduler", "asha", "--max-t", "2", "--epochs", "3"], "--max-t (2) differs from --epochs (3)"),
        # More than the machine holds: the trial would wait forever on the local Ray.
        (["--gpus-per-worker", "64"], "one trial needs 64 GPUs"),
        (["--num-cpus", "2", "--workers-per-trial", "2", "--cpus-per-worker", "2"],
         "one trial needs 4 CPUs (--workers-per-trial x --cpus-per-worker) and the local Ray has 2"),
    ],
)
def test_finetune_bad_input_is_one_line_exit_2(tmp_path, args, expected):
    argv = [a.format(tmp=tmp_path) for a in args] + ["--output", str(tmp_path / "out")]
    proc = run_module("pipelines.finetune", *argv, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], proc.stderr
    assert not (tmp_path / "out").exists()


def test_a_best_trial_without_a_checkpoint_is_an_error_not_a_skipped_test():
    import argparse

    from pipelines.finetune import _evaluate
    from pipelines.runner import EvaluationError

    args = argparse.Namespace(no_baseline=True, name="x")
    with pytest.raises(EvaluationError, match="best trial abc recorded no checkpoint"):
        _evaluate(args, {"data_spec": None, "model_spec": None}, {"trial_id": "abc"}, {})


def test_an_experiment_started_with_another_max_t_still_resumes():
    # Experiments from before the rule that --max-t equals --epochs keep their budget on
    # --resume (which refuses changing either): the check is for new runs.
    from pipelines.finetune import _check, build_parser

    args = build_parser().parse_args(["--scheduler", "asha", "--max-t", "3", "--epochs", "6"])
    with pytest.raises(ValueError, match="differs from --epochs"):
        _check(args)
    args.resume = True
    _check(args)


def test_a_baseline_that_cannot_run_leaves_the_tuned_networks_test_score(tmp_path):
    # Few labels: class "a" has one train + val image, too few to cross-validate an SVM. The
    # network's test score (already computed) is kept, and the summary says why no SVM ran.
    import argparse

    import numpy as np
    from PIL import Image

    from pipelines.finetune import _evaluate, _summary, svm_baseline
    from pipelines.storage import Storage
    from trainables.finetune import train_loop
    from trainables.image_data import resolve_dataset
    from trainables.image_models import resolve_model
    from trainables.session import LocalSession

    rng = np.random.default_rng(0)
    for split, counts in {"train": {"a": 1, "b": 6}, "test": {"a": 2, "b": 2}}.items():
        for label, n in counts.items():
            folder = tmp_path / "data" / split / label
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 60, (8, 8)) + (150 if label == "b" else 0)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    data = resolve_dataset(str(tmp_path / "data"))
    model = resolve_model("small_cnn", "none", data)
    with pytest.raises(ValueError, match="at least 2 train \\+ val rows of every class"):
        svm_baseline(data)
    with LocalSession() as session:
        train_loop({"batch_size": 4, "patience": 0}, data, model, 1, session)
        args = argparse.Namespace(no_baseline=False, name="e", split_seed=0, model="small_cnn",
                                  _storage=Storage(str(tmp_path / "out")))
        result = _evaluate(args, {"data_spec": data, "model_spec": model},
                           {"trial_id": "t", "checkpoint": session.checkpoints[-1]}, {})
    assert 0.0 <= result["test_accuracy"] <= 1.0 and (tmp_path / "out" / "e" / "best_model.pt").is_file()
    assert "svm_test_accuracy" not in result and "at least 2" in result["svm_baseline_error"]
    lines = _summary(args, {}, {"iterations": 1, "best_val_accuracy": 1.0}, result)
    assert any(line.startswith("tuned SVM baseline not run: the SVM baseline needs") for line in lines)


@pytest.mark.parametrize(
    "name, param, expected",
    [
        ("optimizer", 'Categorical(["adamw", "sgd"])', "config 'optimizer' must be one of"),
        ("schedule", 'Categorical(["none", "linear"])', "config 'schedule' must be one of"),
        ("batch_size", "Float(16, 128)", "is a Float, but trials read it as a whole number"),
        ("batch_size", "Categorical([32, 48.5])", "config 'batch_size' must be a whole number, got 48.5"),
        ("freeze_epochs", "Fixed(0.5)", "config 'freeze_epochs' must be a whole number"),
        ("clip_norm", "Float(-1.0, 1.0)", "config 'clip_norm' must be >= 0 or None, got -1.0"),
        ("beta1", "Float(0.9, 1.2)", "config 'beta1' must be in [0, 1)"),
        ("step_size", "Fixed(0)", "config 'step_size' must be >= 1, got 0"),
    ],
)
def test_space_values_the_trials_would_refuse_are_refused_before_ray(name, param, expected):
    # Every trial would error (or train on a truncated value) minutes later; refused up front.
    from pipelines.finetune import _check_space
    from search_spaces.space import Categorical, Fixed, Float, LogFloat, Space

    kinds = {"Categorical": Categorical, "Fixed": Fixed, "Float": Float}
    space = Space(name="s", lr=LogFloat(1e-4, 1e-2),
                  **{name: eval(param, {}, kinds)}).validate()
    with pytest.raises(ValueError) as info:
        _check_space(space)
    assert str(info.value).startswith(f"parameter '{name}'") and expected in str(info.value)


def test_the_shipped_space_passes_the_value_check_and_a_bad_file_is_one_line(tmp_path):
    from pipelines.finetune import _check_space

    _check_space(load_space("adam_finetune"))
    space = tmp_path / "bad.py"
    space.write_text("from search_spaces.space import Categorical, LogFloat, Space\n"
                     "SPACE = Space(name='bad', lr=LogFloat(1e-4, 1e-2), "
                     "optimizer=Categorical(['adamw', 'sgd']))\n")
    proc = run_module("pipelines.finetune", "--space", str(space), "--algo", "random",
                      "--output", str(tmp_path / "out"), timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines == [f"error: space '{space}': parameter 'optimizer': config 'optimizer' must be "
                     "one of ('adam', 'adamw'), got 'sgd'"], proc.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.ray
def test_keep_checkpoints_keeps_the_selected_epoch_when_val_accuracy_ties(tmp_path):
    # A frozen backbone and a learning rate of 1e-9 change no prediction: both epochs tie on
    # val_accuracy, and the selection rule picks the first. Ray's checkpoint manager keeps the
    # newest of tied scores, so --keep-checkpoints 1 deleted the selected epoch's own checkpoint.
    from trainables.finetune import load_checkpoint_state

    (tmp_path / "tie.py").write_text(
        "from search_spaces.space import Fixed, Space\n"
        "SPACE = Space(name='tie', lr=Fixed(1e-9), freeze_epochs=Fixed(2))\n")
    proc = run_module("pipelines.finetune", "--algo", "grid", "--space", str(tmp_path / "tie.py"),
                      "--epochs", "2", "--keep-checkpoints", "1", "--no-baseline", "--num-cpus",
                      "2", "--output", str(tmp_path), "--name", "tie", "--no-report")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    exp = tmp_path / "tie"
    epochs = pd.read_parquet(exp / "epochs.parquet")
    assert epochs["val_accuracy"].nunique() == 1 and len(epochs) == 2  # the tie this is about
    (trial,) = pd.read_parquet(exp / "trials.parquet").itertuples()
    assert trial.best_iteration == 1
    kept = {load_checkpoint_state(str(path.parent))["epoch"]
            for path in exp.glob(f"*{trial.trial_id}*/**/state.pt")}
    assert 1 in kept, kept
    assert trial.checkpoint and load_checkpoint_state(trial.checkpoint)["epoch"] in kept
