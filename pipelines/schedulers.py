"""Trial schedulers: FIFO (run every trial to the end) or ASHA (stop poor trials early)."""

from __future__ import annotations

import argparse

from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from pipelines.journal import finite_number


class RecordingASHA(ASHAScheduler):
    """Ray's ASHAScheduler that remembers which trials it cut before their full budget.

    ASHA also answers STOP when a trial reaches ``max_t``; only a STOP below ``max_t`` is an
    early stop, and the results record it as ``status = stopped_early``.
    """

    def __init__(self, *args, every_report: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.stopped_early: set[str] = set()
        if every_report:
            # Reports whose budget already grows by the reduction factor each time (the SVM's
            # rows, 1/27, 1/9, 1/3, 1): a rung at every report from the grace period up to the
            # last below max_t, keeping the top 1/reduction_factor at each, as
            # HalvingGridSearchCV does. Ray's milestones, grace * rf**k reports, would judge
            # reports 1 and 3 of 4 and let every survivor fit the 1/9 rung unjudged.
            milestones = [float(m) for m in
                          reversed(range(int(kwargs.get("grace_period", 1)), int(self._max_t)))]
            for bracket in self._brackets:
                bracket._rungs = [(m, {}) for m in milestones]

    def seed_from_journal(self, log, metric: str, mode: str) -> int:
        """Put an earlier run's rung results back (``--resume``), so cutoffs after a resume
        compare against every trial of the experiment, not just the new run's. Returns how many
        rung results were put back."""
        sign = 1.0 if mode == "max" else -1.0
        seeded = 0
        for trial_id in log.trials:
            for report in log.epoch_reports(trial_id):
                value = finite_number(report["metrics"].get(metric))
                if value is None:
                    continue
                for bracket in self._brackets:
                    # Ray's own rule (``_Bracket.on_result``): a report records the trial at
                    # the highest milestone it has reached and not yet been recorded at. A
                    # milestone need not be a whole report (--reduction-factor 2.5: 2.5, 6.25).
                    for milestone, recorded in bracket._rungs:  # highest first
                        if report["iteration"] < milestone or trial_id in recorded:
                            continue
                        recorded[trial_id] = sign * value
                        seeded += 1
                        break
        return seeded

    def carry_over(self, journal_id: str, trial_id: str) -> None:
        """A trial ``--resume`` runs again under a new Tune id: its rung results (put back by
        ``seed_from_journal`` under its journal id) move to the new id, so ASHA neither judges
        it again at a rung it already passed (with a later epoch's score) nor counts it twice
        in a cutoff."""
        if journal_id == trial_id:
            return
        for bracket in self._brackets:
            for _, recorded in bracket._rungs:
                if journal_id in recorded:
                    recorded[trial_id] = recorded.pop(journal_id)

    def on_trial_result(self, tune_controller, trial, result):
        decision = super().on_trial_result(tune_controller, trial, result)
        # A trial whose result says it stopped itself (patience, on a rung epoch) ends there
        # anyway: ASHA's STOP did not cut it, and its row, the searcher's observation and a
        # resumed searcher all read it as the trial's own final score.
        stopped_itself = bool(result.get("stopped_by")) or result.get("early_stopped") is True
        if decision == TrialScheduler.STOP and result.get(self._time_attr, 0) < self._max_t \
                and not stopped_itself:
            self.stopped_early.add(trial.trial_id)
        return decision


def build_scheduler(args: argparse.Namespace, max_t: int,
                    time_attr: str = "training_iteration",
                    every_report: bool = False) -> RecordingASHA | None:
    """None for ``--scheduler fifo`` (Tune's FIFO), else ASHA on ``time_attr`` with ``max_t``
    the full budget (``runner.full_budget``: ``--max-t``, else the task's); ``every_report``:
    a rung at every report (``RecordingASHA``)."""
    if args.scheduler == "fifo":
        return None
    return RecordingASHA(
        time_attr=time_attr,
        max_t=max_t,
        grace_period=args.grace_period,
        reduction_factor=args.reduction_factor,
        every_report=every_report,
    )
