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
import logging
import os
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


def callbacks(args: argparse.Namespace, task_name: str, results_uri: str) -> list[Any]:
    """Ray Tune callbacks for the trackers asked for (imports Ray Tune).

    Parameters
    ----------
    args : argparse.Namespace
        The pipeline's flags.
    task_name : str
        The task (``svm``, ``finetune``), set as a tag on every MLflow run.
    results_uri : str
        The experiment's folder, set as a tag so a run leads back to the Parquet results.

    Returns
    -------
    list
        ``TBXLoggerCallback`` for ``--tensorboard``: its event files go to each trial's folder,
        which Tune syncs into the experiment's storage. ``MLflowLoggerCallback`` for
        ``--mlflow``: one MLflow run per trial, named after it, with the trial's config as
        params, every numeric result key as a metric at each report, and FINISHED or FAILED.
    """
    found: list[Any] = []
    if getattr(args, "tensorboard", False):
        from ray.tune.logger import TBXLoggerCallback

        found.append(TBXLoggerCallback())
    if getattr(args, "mlflow", None):
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        quiet(args.verbose)
        found.append(MLflowLoggerCallback(
            tracking_uri=args.mlflow, experiment_name=args.name,
            tags={"task": task_name, "results": results_uri}))
    return found


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
