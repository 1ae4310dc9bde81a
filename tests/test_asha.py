"""ASHA early stopping on SVM fidelity rungs, end to end on a local Ray."""

import pandas as pd
import pytest

from pipelines.svm import build_parser, fidelities
from tests.helpers import run_module

pytestmark = pytest.mark.ray


def test_fidelity_ladder_follows_reduction_factor():
    args = build_parser().parse_args(["--scheduler", "asha"])
    assert fidelities(args) == (1 / 27, 1 / 9, 1 / 3, 1.0)
    args = build_parser().parse_args(["--scheduler", "asha", "--reduction-factor", "2", "--max-t", "3"])
    assert fidelities(args) == (0.25, 0.5, 1.0)
    assert fidelities(build_parser().parse_args([])) == (1.0,)


def test_svm_asha_judges_every_fidelity_rung():
    # The SVM's reports are rungs of 1/27, 1/9, 1/3 and 1 of the rows: each report is a rung.
    # Ray's milestones (grace * rf**k reports: 1 and 3) would let a trial fit the 1/9 rung
    # whatever it scored there.
    from ray.tune.experiment import Trial

    from pipelines.runner import full_budget
    from pipelines.schedulers import build_scheduler
    from pipelines.svm import TASK

    args = build_parser().parse_args(["--scheduler", "asha"])
    asha = build_scheduler(args, full_budget(TASK, args), time_attr=TASK.time_attr,
                           every_report=TASK.rung_every_report)
    asha.set_search_properties("cv_accuracy", "max")
    assert [m for m, _ in asha._brackets[0]._rungs] == [3.0, 2.0, 1.0]
    trials = [Trial("__fake", trial_id=f"t{i}", stub=True) for i in range(10)]
    for trial in trials:
        asha.on_trial_add(None, trial)
    for trial in trials[:9]:
        for it in (1, 2):
            asha.on_trial_result(None, trial, {"training_iteration": it, "cv_accuracy": 0.9})
    bad = trials[9]
    assert asha.on_trial_result(None, bad, {"training_iteration": 1, "cv_accuracy": 0.95}) == "CONTINUE"
    assert asha.on_trial_result(None, bad, {"training_iteration": 2, "cv_accuracy": 0.1}) == "STOP"
    assert asha.stopped_early == {"t9"}
    # --grace-period 2: the first judgement at report 2.
    args = build_parser().parse_args(["--scheduler", "asha", "--grace-period", "2"])
    asha = build_scheduler(args, full_budget(TASK, args), every_report=True)
    assert [m for m, _ in asha._brackets[0]._rungs] == [3.0, 2.0]


def test_an_experiment_keeps_the_rungs_it_started_with_on_resume():
    # SVM experiments started before every rung was judged resume on Ray's milestones; the
    # rule is kept in experiment.json from then on.
    from pipelines.runner import Prepared, asha_every_report
    from pipelines.svm import TASK

    def prep(previous):
        return Prepared(args=None, space=None, storage=None, searcher=None, num_trials=1,
                        previous=previous)

    assert asha_every_report(TASK, prep(None)) is True
    assert asha_every_report(TASK, prep({"scheduler": "asha"})) is False  # an older experiment
    assert asha_every_report(TASK, prep({"scheduler": "asha", "asha_every_report": True})) is True
    assert asha_every_report(TASK, prep({"scheduler": "fifo"})) is True  # never ran ASHA


def test_a_patience_stop_on_a_rung_is_the_trials_own_not_ashas_cut():
    from ray.tune.experiment import Trial

    from pipelines.schedulers import RecordingASHA

    asha = RecordingASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=6,
                         grace_period=1, reduction_factor=2)
    good, patient, poor = (Trial("__fake", trial_id=name, stub=True)
                           for name in ("good", "patient", "poor"))
    for trial in (good, patient, poor):
        asha.on_trial_add(None, trial)
    asha.on_trial_result(None, good, {"epoch": 1, "val_accuracy": 0.9})
    # Both score below the rung's cutoff, so ASHA answers STOP to both; only one was its cut.
    assert asha.on_trial_result(None, patient, {"epoch": 1, "val_accuracy": 0.5,
                                                "early_stopped": True,
                                                "stopped_by": "patience"}) == "STOP"
    assert asha.on_trial_result(None, poor, {"epoch": 1, "val_accuracy": 0.4}) == "STOP"
    assert asha.stopped_early == {"poor"}


def test_a_rerun_after_resume_is_not_judged_again_at_a_rung_it_passed():
    from ray.tune.experiment import Trial

    from pipelines.journal import TrialLog, end_event, report_event, start_event
    from pipelines.schedulers import RecordingASHA

    # Before the crash: three trials passed the rungs at epochs 1, 2 and 4; "slow" (0.5 at
    # epoch 4, third of three) was running with a checkpoint at epoch 4.
    log = TrialLog("val_accuracy", "max", {"val_accuracy": None})
    for index, (name, scores) in enumerate([("a", [0.7, 0.8, 0.9]), ("b", [0.7, 0.8, 0.85]),
                                            ("slow", [0.2, 0.3, 0.5])]):
        log.apply(start_event(name, index, {}))
        for epoch, acc in zip((1, 2, 4), scores, strict=True):
            log.apply(report_event(name, epoch, {"val_accuracy": acc}))
        if name != "slow":
            log.apply(end_event(name, "finished"))

    def resumed_asha():
        asha = RecordingASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=8,
                             grace_period=1, reduction_factor=2)
        asha.seed_from_journal(log, "val_accuracy", "max")
        rerun = Trial("__fake", trial_id="new-id", stub=True)
        asha.on_trial_add(None, rerun)
        return asha, rerun

    asha, rerun = resumed_asha()
    asha.carry_over("slow", "new-id")
    # It continues at epoch 5: the unbroken run would not judge it before epoch 8.
    assert asha.on_trial_result(None, rerun, {"epoch": 5, "val_accuracy": 0.55}) == "CONTINUE"
    assert asha.stopped_early == set()
    # Without the carry-over Ray's bracket judges it at rung 4 with its epoch-5 score.
    asha, rerun = resumed_asha()
    assert asha.on_trial_result(None, rerun, {"epoch": 5, "val_accuracy": 0.55}) == "STOP"


def test_resume_puts_back_the_rungs_a_live_run_records_for_any_reduction_factor():
    from ray.tune.experiment import Trial

    from pipelines.journal import TrialLog, end_event, report_event, start_event
    from pipelines.schedulers import RecordingASHA

    def asha(rf):
        return RecordingASHA(time_attr="epoch", metric="val_accuracy", mode="max", max_t=10,
                             grace_period=1, reduction_factor=rf)

    for rf in (2.0, 2.5, 3.0):
        live, log = asha(rf), TrialLog("val_accuracy", "max", {"val_accuracy": None})
        for index in range(5):
            name = f"t{index}"
            trial = Trial("__fake", trial_id=name, stub=True)
            live.on_trial_add(None, trial)
            log.apply(start_event(name, index, {}))
            for epoch in range(1, 11):
                acc = 0.5 + 0.03 * index + 0.001 * epoch
                log.apply(report_event(name, epoch, {"val_accuracy": acc}))
                if live.on_trial_result(None, trial, {"epoch": epoch, "val_accuracy": acc}) != "CONTINUE":
                    break
            log.apply(end_event(name, "finished"))
        resumed = asha(rf)
        resumed.seed_from_journal(log, "val_accuracy", "max")
        # Milestones that are not whole epochs (2.5, 6.25) included: the same trials, the same
        # scores, at every rung.
        assert [(m, dict(r)) for m, r in resumed._brackets[0]._rungs] == \
            [(m, dict(r)) for m, r in live._brackets[0]._rungs], rf
        assert sum(len(r) for _, r in live._brackets[0]._rungs) > 5


def test_asha_stops_poor_trials_and_records_it(tmp_path):
    proc = run_module("pipelines.svm", "--algo", "random", "--num-samples", "12", "--seed", "0",
                      "--scheduler", "asha", "--output", str(tmp_path), "--name", "a",
                      "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    trials = pd.read_parquet(tmp_path / "a" / "trials.parquet")
    epochs = pd.read_parquet(tmp_path / "a" / "epochs.parquet")
    assert len(trials) == 12
    stopped = trials[trials["status"] == "stopped_early"]
    finished = trials[trials["status"] == "finished"]
    assert len(stopped) >= 3 and len(finished) >= 1
    assert (stopped["stopped_by"] == "scheduler").all()
    assert (stopped["fidelity"] < 1.0).all() and (finished["fidelity"] == 1.0).all()
    # Each trial's epochs climb the ladder in order, one row per rung reached.
    for _, group in epochs.groupby("trial_id"):
        assert group.sort_values("iteration")["fidelity"].is_monotonic_increasing
    assert epochs.groupby("trial_id").size().loc[stopped["trial_id"]].max() < 4
    # The reported best comes from a trial that reached the full fidelity.
    assert "stopped early" in proc.stdout
