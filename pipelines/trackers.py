"""Interop with the experiment trackers users already run: TensorBoard and MLflow.

Both go through Ray Tune's own logger callbacks (``TBXLoggerCallback``,
``MLflowLoggerCallback``), so what lands in them is what Ray Tune users get anywhere. Both are
optional (the ``trackers`` extra) and both are checked before Ray starts: a missing package or a
tracking store that cannot be opened is bad input (one line, exit 2).

The journal stays the experiment's one record; a tracker is a view for the user's own tools and
is never read back.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import logging
import os
from collections.abc import Callable
from typing import Any

from pipelines import cli

INSTALL_HINT = "pip install -c requirements.lock -e '.[trackers]'"

# How long the check before Ray may wait on a tracking server: MLflow's own default retries an
# unreachable server with backoff for minutes.
_PROBE_TIMEOUT_S = "10"


def add_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--tensorboard`` and ``--mlflow URI`` to a pipeline's parser."""
    group = parser.add_argument_group(f"trackers (optional: {INSTALL_HINT})")
    group.add_argument("--tensorboard", action="store_true",
                       help="also write Ray Tune's TensorBoard event files, one folder per trial "
                            "under the experiment's folder (needs tensorboardX)")
    group.add_argument("--mlflow", default=None, metavar="URI",
                       help="also log each trial as an MLflow run (params, per-report metrics, "
                            "status) to this tracking URI (http://HOST:5000, sqlite:///mlflow.db, "
                            "databricks), in the MLflow experiment named --name (needs mlflow)")


def _need(module: str, flag: str, package: str) -> None:
    """Import ``module`` or fail with the one line that says how to install it."""
    try:
        __import__(module)
    except ImportError:
        cli.fail(f"{flag} needs {package}: {INSTALL_HINT}")


@contextlib.contextmanager
def _one_quick_try():
    """One try at a tracking server, with a timeout, for the check before Ray."""
    saved = {k: os.environ.get(k) for k in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES",
                                            "MLFLOW_HTTP_REQUEST_TIMEOUT")}
    os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = "0"
    os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = _PROBE_TIMEOUT_S
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def quiet(verbose: bool) -> None:
    """MLflow (and alembic under its sqlite store) log INFO lines by default; the product keeps
    its own short log unless --verbose."""
    if not verbose:
        for name in ("mlflow", "alembic"):
            logging.getLogger(name).setLevel(logging.WARNING)


def check(args: argparse.Namespace) -> None:
    """Fail with one line (exit 2) unless every tracker asked for can be used.

    Parameters
    ----------
    args : argparse.Namespace
        The pipeline's flags after ``--resume`` adopted the experiment's settings.

    Notes
    -----
    ``--mlflow`` opens the tracking store and looks the experiment up, as Ray's callback will
    when the run starts: a store that cannot be opened (an unknown scheme, a server that does
    not answer, a file store MLflow refuses) fails here, before Ray, not as a traceback later.
    Opening a sqlite store creates its database file.
    """
    if getattr(args, "tensorboard", False):
        _need("tensorboardX", "--tensorboard", "tensorboardX")
    uri = getattr(args, "mlflow", None)
    if uri is None:
        return
    if not uri.strip():
        cli.fail("--mlflow needs a tracking URI, e.g. http://HOST:5000 or sqlite:///mlflow.db")
    _need("mlflow", "--mlflow", "mlflow")
    quiet(args.verbose)
    try:
        from mlflow.tracking import MlflowClient

        with _one_quick_try():
            MlflowClient(tracking_uri=uri).get_experiment_by_name(args.name)
    except Exception as exc:
        text = " ".join(str(exc).split()) or type(exc).__name__
        if "MLFLOW_ALLOW_FILE_STORE" in text:
            # MLflow 3's paragraph about its file store, in the words the user acts on.
            text = ("MLflow refuses a file store (a path or file:// URI) unless "
                    "MLFLOW_ALLOW_FILE_STORE=true is set; use a tracking server or "
                    "sqlite:///PATH/mlflow.db")
        elif len(text) > 400:
            text = text[:397] + "..."
        cli.fail(f"--mlflow {uri}: {text}")


def callbacks(args: argparse.Namespace, task_name: str, results_uri: str, *,
              identify: Callable[[Any], str] | None = None,
              step_key: str = "training_iteration", folder: str | None = None) -> list[Any]:
    """Ray Tune callbacks for the trackers asked for (imports Ray Tune).

    Parameters
    ----------
    args : argparse.Namespace
        The pipeline's flags.
    task_name : str
        The task (``svm``, ``finetune``), set as a tag on every MLflow run.
    results_uri : str
        The experiment's folder, set as a tag so a run leads back to the Parquet results.
    identify : callable, optional
        The id a Tune trial is journaled under (``trials.parquet``'s ``trial_id``): a trial
        ``--resume`` runs again under a new Tune id is logged under its first id, in its first
        MLflow run and event folder. Default: Tune's id.
    step_key : str
        The result key that numbers a trial's reports (the task's ``time_attr``): a trial
        continued from a checkpoint goes on with its epochs, where Tune's
        ``training_iteration`` starts at 1 again.
    folder : str, optional
        The experiment's folder on a local disk: event files are written there as they come
        (a run killed with SIGKILL keeps them). On an object store (None) they are written in
        each Tune trial's local folder, which Ray uploads, as Ray's callback does.

    Returns
    -------
    list
        Ray's ``TBXLoggerCallback`` for ``--tensorboard`` and ``MLflowLoggerCallback`` for
        ``--mlflow`` (one MLflow run per trial, named after it, with the trial's config as
        params, every numeric result key as a metric at each report, and FINISHED or FAILED),
        each keyed by the journal's trial id as above.
    """
    identify = identify or (lambda trial: trial.trial_id)
    found: list[Any] = []
    if getattr(args, "tensorboard", False):
        found.append(_tensorboard_class()(identify, step_key, folder))
    if getattr(args, "mlflow", None):
        quiet(args.verbose)
        found.append(_mlflow_class()(
            identify, step_key, tracking_uri=args.mlflow, experiment_name=args.name,
            tags={"task": task_name, "results": results_uri}))
    return found


def _resumed(trial: Any) -> bool:
    """Whether a Tune trial continues a journaled trial from its checkpoint (``--resume``)."""
    from pipelines.searchers._resume import RESUME_KEY

    return bool(trial.config.get(RESUME_KEY))


def _with_step(result: dict, step_key: str) -> dict:
    """``result`` with Tune's step (``training_iteration``) set to the trial's own count."""
    step = result.get(step_key)
    if step_key == "training_iteration" or step is None or result.get("timesteps_total"):
        return result
    return {**result, "training_iteration": step}


def _tensorboard_class() -> type:
    from ray.tune.logger import TBXLoggerCallback

    class TrialEvents(TBXLoggerCallback):
        """Ray's TensorBoard callback with each trial's events in ``<experiment>/<trial_id>/``
        under its journal id, stepped by its own report count (see ``callbacks``)."""

        def __init__(self, identify, step_key: str, folder: str | None):
            super().__init__()
            self._identify, self._step_key, self._folder = identify, step_key, folder
            self._seen: set[str] = set()  # Tune trials started before (Tune retries restart)
            self._starts = 0

        def log_trial_start(self, trial: Any) -> None:
            if trial in self._trial_writer:
                self._trial_writer[trial].close()
            first = trial.trial_id not in self._seen
            self._seen.add(trial.trial_id)
            trial.init_local_path()
            # On an object store Ray uploads each Tune trial's own local folder: a re-run
            # trial's events stay under its Tune id there.
            logdir = trial.local_path if self._folder is None else \
                os.path.join(self._folder, self._identify(trial))
            if self._folder is not None and first and not _resumed(trial):
                # Reports from 1 again: an earlier attempt's events go.
                for old in glob.glob(os.path.join(glob.escape(logdir), "events.out.tfevents.*")):
                    os.remove(old)
            # A name of its own: a writer started in the same second as the trial's earlier
            # one (a quick retry) would otherwise reuse its file name and overwrite it.
            self._trial_writer[trial] = self._summary_writer_cls(
                logdir, flush_secs=30, filename_suffix=f".{os.getpid()}.{self._starts}")
            self._starts += 1
            self._trial_result[trial] = {}

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, _with_step(result, self._step_key))

    return TrialEvents


def _mlflow_class() -> type:
    from ray.air.integrations.mlflow import MLflowLoggerCallback

    from pipelines.searchers._resume import RESUME_KEY

    class TrialRuns(MLflowLoggerCallback):
        """Ray's MLflow callback with one run per journaled trial: a trial ``--resume``
        continues from its checkpoint goes on in its first run (status RUNNING again, steps
        going on); one that starts over replaces its first run, which is deleted."""

        def __init__(self, identify, step_key: str, **kwargs: Any):
            super().__init__(**kwargs)
            self._identify, self._step_key = identify, step_key

        def log_trial_start(self, trial: Any) -> None:
            if trial in self._trial_runs:
                return
            name = str(trial).replace(trial.trial_id, self._identify(trial))
            from mlflow.tracking import MlflowClient

            client = MlflowClient(tracking_uri=self.tracking_uri)
            earlier = [run.info.run_id for run in client.search_runs(
                [self.mlflow_util.experiment_id], filter_string=f"tags.trial_name = '{name}'")]
            if earlier and _resumed(trial):
                client.update_run(earlier[0], status="RUNNING")
                self._trial_runs[trial] = earlier[0]
                return
            for run_id in earlier:
                client.delete_run(run_id)
            run = self.mlflow_util.start_run(tags={**self.tags, "trial_name": name},
                                             run_name=name)
            self._trial_runs[trial] = run.info.run_id
            if not self.log_params_on_trial_end:
                self.mlflow_util.log_params(
                    run_id=run.info.run_id,
                    params_to_log={k: v for k, v in trial.config.items() if k != RESUME_KEY})

        def log_trial_result(self, iteration: int, trial: Any, result: dict) -> None:
            super().log_trial_result(iteration, trial, _with_step(result, self._step_key))

    return TrialRuns


def summary_lines(args: argparse.Namespace, results_uri: str, *, events: bool = True) -> list[str]:
    """The lines the run prints at the end about its trackers. ``events`` False: no trial ran
    with ``--tensorboard`` (a finished experiment resumed with it), so there are no event files
    to point at, and the line says so instead."""
    lines = []
    if getattr(args, "tensorboard", False) and not events:
        lines.append("tensorboard  no event files: no trial ran in this run, and none ran "
                     "with --tensorboard before")
    elif getattr(args, "tensorboard", False):
        lines.append(f"tensorboard  {results_uri}/<trial>/events.out.tfevents.*; view with: "
                     f"tensorboard --logdir {results_uri}")
    if getattr(args, "mlflow", None):
        lines.append(f"mlflow       experiment '{args.name}' at {args.mlflow}")
    return lines
