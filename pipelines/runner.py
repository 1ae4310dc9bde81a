"""Run one experiment: validate, start or join Ray, tune, write results, score the best once.

Every pipeline describes itself as a ``Task``; ``run`` does the rest in the same order for all:

1. validate everything (space, algorithm, dataset, storage, flags) before Ray starts;
2. start a local Ray (or join ``--address``) while the data loads;
3. build the Tuner in one place from TuneConfig and RunConfig and run it, writing Parquet as
   trials finish;
4. refit or reload the best trial and score it once on the held-out test split;
5. print a summary and write ``experiment.json`` and ``report.html``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import json
import logging
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from pipelines import cli, trackers
from pipelines.faults import pause_point
from pipelines.journal import JOURNAL_VERSION
from pipelines.results import (
    EXPERIMENT_FILE,
    SCHEMA_VERSION,
    STATUS_ERROR,
    STATUS_STOPPED,
    MetricColumns,
    ResultsWriter,
    SchemaVersionError,
    best_row,
    check_schema_version,
    package_versions,
    write_experiment_json,
)
from pipelines.storage import Storage, StorageError
from search_spaces.loader import load_space
from search_spaces.space import Space, SpaceError


class EvaluationError(RuntimeError):
    """The best trial cannot be scored on the test split; the message is one line."""


@dataclass
class Task:
    """What a pipeline contributes; the runner does the rest.

    Parameters
    ----------
    name : str
        Short task name (``svm``, ``finetune``).
    metrics : MetricColumns
        The searched metric, its mode, and the metric columns of the Parquet files.
    check : callable(args) -> None
        Cheap validation of the task's own flags and data before Ray starts; raises
        ValueError with a one-line message.
    load : callable(args) -> data
        Loads the data (runs while Ray starts).
    trainable : callable(args, data) -> (trainable, resources)
        The Tune function trainable (already bound to its data) and per-trial resources.
    max_t : callable(args) -> int
        Reports a trial makes at full budget (the ASHA ``max_t`` default).
    evaluate : callable(args, data, best_row, best_config) -> dict
        Scores the best trial once on the held-out test split. ``best_config`` is the row's
        config read through the run's own space (the one in experiment.json), never the space
        file again: an edited or moved file must not change what the test score belongs to.
    summary : callable(args, data, best_row, evaluation) -> list of str
        Extra summary lines.
    needs_dashboard : callable(args) -> bool
        Whether a local Ray must start its dashboard (Ray Train inside Tune needs it).
    reuse_actors : callable(args) -> bool
        Keep trial actors between trials (cheap trials pay Ray's actor start only once).
    unset_means : mapping, optional
        What a flag left unset (None) stands for (``dataset``: the built-in default), so a
        resume that names it explicitly does not contradict the experiment.
    config_keys : callable() -> frozenset of str, optional
        The config keys the trainable reads (a callable: the trainable's module loads lazily).
        A space param outside them (a typo such as ``gama``) would be searched, recorded and
        reported with no effect on training: it is bad input. None accepts any key.
    """

    name: str
    metrics: MetricColumns
    check: Callable[[argparse.Namespace], None]
    load: Callable[[argparse.Namespace], Any]
    trainable: Callable[[argparse.Namespace, Any], tuple[Any, Any]]
    max_t: Callable[[argparse.Namespace], int]
    evaluate: Callable[[argparse.Namespace, Any, dict, dict], dict]
    summary: Callable[[argparse.Namespace, Any, dict, dict], list[str]] = lambda *a: []
    needs_dashboard: Callable[[argparse.Namespace], bool] = lambda args: False
    reuse_actors: Callable[[argparse.Namespace], bool] = lambda args: False
    config_keys: Callable[[], frozenset[str]] | None = None
    # Raises ValueError naming a parameter whose values the trials would refuse (new runs).
    check_space: Callable[[Space], None] | None = None
    unset_means: Mapping[str, Any] = field(default_factory=dict)
    extra_info: Callable[[argparse.Namespace, Any], dict] = lambda args, data: {}
    # A digest of the data the trials score (None: nothing a user can change in place, a
    # built-in dataset). --resume refuses data whose digest differs from the experiment's.
    fingerprint: Callable[[argparse.Namespace, Any], str | None] = lambda args, data: None
    checkpoint_config: Callable[[argparse.Namespace], Any] = lambda args: None
    demand: Callable[[argparse.Namespace], dict] | None = None
    # The result key that numbers a trial's reports, for the journal and ASHA: a trial resumed
    # from a checkpoint in a new Tune run continues its own ``epoch``, while Tune's
    # ``training_iteration`` starts again at 1.
    time_attr: str = "training_iteration"
    # Each report already grows the budget by the reduction factor (the SVM's row fractions
    # 1/27, 1/9, 1/3, 1): ASHA then judges at every report from the grace period on, where
    # its own milestones, geometric in reports, would skip rungs (1 and 3 of 4).
    rung_every_report: bool = False


@dataclass
class Prepared:
    """Everything validated before Ray starts."""

    args: argparse.Namespace
    space: Space
    storage: Storage
    searcher: Any
    num_trials: int
    warm_start: list | None = None
    flags: dict = field(default_factory=dict)
    previous: dict | None = None  # experiment.json of the experiment --resume continues


def check_same_data(before: str | None, now: str | None, args: argparse.Namespace) -> None:
    """Refuse (ValueError, one line) to resume on data other than the experiment's own.

    Its trials so far scored one dataset; continued on an edited file, the rest would score
    another, and the two would rank side by side as one search. An experiment from before
    fingerprints were kept has none to compare, and goes on.
    """
    if before and now and before != now:
        dataset = getattr(args, "dataset", None) or "the dataset"
        raise ValueError(f"{dataset} is not the data experiment '{args.name}' began with (its "
                         f"rows or split differ: fingerprint {now}, the experiment's "
                         f"{before}; a package upgrade can change a split too); resuming "
                         "would rank trials scored on two datasets as one search: put the "
                         "original data back, or start a new experiment")


def describe_config(config: Mapping[str, Any] | None) -> str:
    if not config:
        return ""
    return " ".join(f"{k}={_short(v)}" for k, v in config.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def config_from_row(row: Mapping[str, Any], space: Space) -> dict[str, Any]:
    """The config of a trials.parquet row (``param_`` columns; a null is an inactive parameter
    or a categorical's choice None, ``Space.from_record``)."""
    return space.from_record({name: row.get(f"param_{name}") for name in space.params
                              if f"param_{name}" in row})


def full_budget(task: Task, args: argparse.Namespace) -> int:
    """Reports a trial makes at full budget: ``--max-t``, else the task's own."""
    return args.max_t or task.max_t(args)


def _flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def adopt_experiment_settings(task: Task, args: argparse.Namespace, info: Mapping[str, Any]) -> None:
    """``--resume`` runs the experiment as it was started: its space, algorithm, scheduler,
    seed, budget and task flags come from its experiment.json. A flag given on the command line
    that contradicts them is bad input (one line, exit 2); only how and where to run
    (``cli.RESUMABLE_FLAGS``) may change."""
    if info.get("task") != task.name:
        cli.fail(f"--resume: experiment '{args.name}' is a {info.get('task')!r} experiment, "
                 f"not {task.name!r}")
    stored = info.get("flags") or {}
    given = getattr(args, "_given", set())
    for key in sorted(given - cli.RESUMABLE_FLAGS):
        value = getattr(args, key)
        same_default = stored.get(key) is None and \
            getattr(task, "unset_means", {}).get(key) == value
        if key == "num_samples" and stored.get("algo") == "grid":
            continue  # no contradiction to a grid: check_cross_flags below refuses the flag
        if key in stored and stored[key] != value and not same_default and \
                not _same_space(key, value, info):
            was = "default" if stored[key] is None else f"{_flag(key)} {stored[key]}"
            cli.fail(f"--resume: {_flag(key)} {value} contradicts the experiment's "
                     f"{was}; leave it out to continue the experiment as it was started")
    for key, value in stored.items():
        if not hasattr(args, key) or key.startswith("_") or key in _THIS_RUN_ONLY:
            continue
        # A flag that may change (--max-concurrent, say) keeps the experiment's value unless
        # given again: ASHA's cuts depend on how many trials run at once.
        if key not in cli.RESUMABLE_FLAGS or key not in given:
            setattr(args, key, value)
    cli.check_cross_flags(args)  # with the experiment's algorithm and scheduler


def _same_space(key: str, given: Any, info: Mapping[str, Any]) -> bool:
    """``--space`` named another way (a module's file path, say) that defines the space the
    experiment was run with is no contradiction."""
    if key != "space" or "space" not in info:
        return False
    try:
        return load_space(given).to_dict() == info["space"]
    except Exception:  # noqa: BLE001 - not loadable: the contradiction stands
        return False


# Ray's prestart_worker_first_driver setting (read by the raylet from its environment).
PRESTART_ENV = "RAY_prestart_worker_first_driver"
# How Ray's processes retry connecting to a local socket (the object store's, the raylet's):
# Ray waits raylet_client_connect_timeout_milliseconds (1000) between at most
# raylet_client_num_connect_attempts (10) tries. Every Ray process reads both from its environment.
CONNECT_WAIT_ENV = "RAY_raylet_client_connect_timeout_milliseconds"
CONNECT_TRIES_ENV = "RAY_raylet_client_num_connect_attempts"
# Retry every 20 ms, 500 times: the same 10 s of patience as Ray's default.
CONNECT_RETRY = {CONNECT_WAIT_ENV: "20", CONNECT_TRIES_ENV: "500"}

# Where and how this process runs: never taken from the stored experiment.
_THIS_RUN_ONLY = frozenset({"resume", "name", "output", "address", "verbose", "no_report",
                            "tensorboard", "mlflow"})


def prepare(task: Task, args: argparse.Namespace) -> Prepared:
    """Validate everything; on bad input print one line and exit 2 before Ray starts."""
    try:
        storage = Storage(args.output)
        storage.check_writable()
    except StorageError as exc:
        cli.fail(str(exc))
    exists = storage.exists(args.name, EXPERIMENT_FILE) if not storage.is_local else \
        os.path.exists(storage.path(args.name))
    if exists and not args.resume:
        cli.fail(f"experiment '{args.name}' already exists in {storage.display}; "
                 "choose another --name or add --resume")
    if args.resume and not exists:
        cli.fail(f"--resume: no experiment '{args.name}' in {storage.display}")
    previous = None
    if args.resume:
        try:
            previous = json.loads(storage.read_bytes(f"{args.name}/{EXPERIMENT_FILE}"))
        except Exception:
            cli.fail(f"--resume: experiment '{args.name}' has no readable {EXPERIMENT_FILE}")
        if not isinstance(previous, dict) or "journal_version" not in previous:
            cli.fail(f"--resume: experiment '{args.name}' was written by an older version "
                     "without a journal; start a new experiment")
        try:
            check_schema_version(previous.get("schema_version"), f"experiment '{args.name}'")
        except SchemaVersionError as exc:
            cli.fail(f"--resume: {exc}")
        adopt_experiment_settings(task, args, previous)
    flags = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    try:
        space = Space.from_dict(previous["space"]) if previous else load_space(args.space)
    except (SpaceError, KeyError, TypeError) as exc:
        cli.fail(str(exc))
    try:
        task.check(args)
    except ValueError as exc:
        cli.fail(str(exc))
    warm_start = None
    if previous is not None and isinstance(previous.get("warm_start_rows"), list):
        # The rows the experiment started from, as it read them: the file may have moved or
        # changed since, and the resumed searcher must be the one the journal was made with.
        warm_start = previous["warm_start_rows"]
    elif args.warm_start:
        try:
            from pipelines.searchers._bayesopt_box import warm_start_from_parquet

            # A resumed experiment without its rows kept was started by an older version:
            # read the file as that version did, so the searcher is the one it ran with.
            warm_start = warm_start_from_parquet(args.warm_start, space, task.metrics.metric,
                                                 select=task.metrics.select,
                                                 legacy=previous is not None)
        except (SpaceError, ValueError, OSError) as exc:
            cli.fail(f"--warm-start: {exc}")
    # Check the space serves the algorithm with pure code; the Searcher itself (Ray Tune's
    # import, seconds) is built while Ray starts.
    try:
        if args.algo == "grid":
            num_trials = len(space.grid())
        else:
            num_trials = args.num_samples
            if args.algo == "bayesopt":
                from search_spaces.transform import UnitTransform

                UnitTransform(space)
    except SpaceError as exc:
        cli.fail(f"space '{args.space}' cannot be used with --algo {args.algo}: {exc}")
    # On --resume the space is the experiment's, fixed when it started: not judged again.
    known = task.config_keys() if task.config_keys is not None and previous is None else None
    unknown = sorted(set(space.params) - known) if known is not None else []
    if unknown:
        cli.fail(f"space '{args.space}': {task.name} trials do not use "
                 f"{', '.join(repr(k) for k in unknown)}; they read {', '.join(sorted(known))}")
    if task.check_space is not None and previous is None:
        try:
            task.check_space(space)
        except ValueError as exc:
            cli.fail(f"space '{args.space}': {exc}")
    if args.scheduler == "asha":
        max_t = full_budget(task, args)
        if args.grace_period > max_t:
            cli.fail(f"--grace-period ({args.grace_period}) exceeds --max-t ({max_t})")
    if joins_cluster(args):
        _probe_address(args.address)
    trackers.check(args)  # last: opening an MLflow store may write (a sqlite file)
    return Prepared(args, space, storage, None, num_trials, warm_start, flags, previous)


def build_searcher(task: Task, prep: Prepared) -> None:
    """Build the Searcher (imports Ray Tune); the space was already checked by ``prepare``."""
    from pipelines.searchers import make_searcher

    args = prep.args
    prep.searcher, prep.num_trials = make_searcher(
        args.algo, prep.space, metric=task.metrics.metric, mode=task.metrics.mode,
        seed=args.seed, num_samples=args.num_samples, bo_init=args.bo_init,
        warm_start=prep.warm_start, fidelity_key=task.time_attr,
        # With ASHA, a trial below the full budget was cut: BO models it per rung, never as final.
        max_fidelity=full_budget(task, args) if args.scheduler == "asha" else None,
        select=task.metrics.select, configs_per_trial=configs_per_trial(args),
    )


def configs_per_trial(args: argparse.Namespace) -> int | str:
    """Configs per Tune trial (``pipelines.packs``): ``--configs-per-trial`` where the task has
    it, for grid and random search under FIFO without a tracker (TensorBoard and MLflow log one
    run per Tune trial, with the Tune trial's config); 1 otherwise."""
    if args.scheduler != "fifo" or args.algo not in ("grid", "random") or \
            getattr(args, "tensorboard", False) or getattr(args, "mlflow", None):
        return 1
    return getattr(args, "configs_per_trial", 1)


def quiet_ray(verbose: bool) -> None:
    """Ray is chatty by default; the product keeps its own short log unless --verbose."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    # Our Parquet files replace Tune's per-trial JSON/CSV/TensorBoard logs.
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    if not verbose:
        os.environ.setdefault("RAY_DEDUP_LOGS", "1")
        os.environ.setdefault("TUNE_WARN_EXCESSIVE_EXPERIMENT_CHECKPOINT_SYNC_THRESHOLD_S", "100000")
        os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
        os.environ.setdefault("PYTHONWARNINGS", "ignore")
        warnings.filterwarnings("ignore")
        for name in ("ray", "ray.tune", "ray.train", "ray.data", "ray.air"):
            logging.getLogger(name).setLevel(logging.ERROR)
        # A failed trial is a row with its error, a count in the summary and its traceback in
        # Tune's error.txt beside the trial: Tune's own tracebacks of it on stderr (one per
        # attempt, dozens of lines each) are Ray's noise, for --verbose.
        for name in ("ray.tune.execution.tune_controller", "ray.tune.tune"):
            logger = logging.getLogger(name)
            if not any(isinstance(f, _TrialFailureNoise) for f in logger.filters):
                logger.addFilter(_TrialFailureNoise())


class _TrialFailureNoise(logging.Filter):
    """Drops Tune's log records of a trial's failure (the pipeline reports it itself)."""

    PREFIXES = ("Trial task failed for trial", "Trials did not complete")

    def filter(self, record: logging.LogRecord) -> bool:
        if str(record.msg).startswith(self.PREFIXES):
            return False
        # An object store down for longer than the retries: the run ends with one line
        # (cli.call_main) instead of Tune's traceback of the callback that could not write.
        error = record.exc_info[1] if record.exc_info else None
        return error is None or cli.storage_unavailable(error) is None


def skip_unsent_telemetry() -> None:
    """Skip Ray Tune's callback usage tag when usage statistics are off.

    To name the callbacks a run uses, ``Tuner.fit`` imports the MLflow, W&B and Comet
    integrations, and through them MLflow itself: 1.2 s on the main thread before the first trial
    when mlflow is installed (the trackers extra), even with ``RAY_USAGE_STATS_ENABLED=0``, when
    the tag is never sent. The product turns usage statistics off by default (``quiet_ray``), so
    the tag is dropped then; a user who turned them on keeps it. Ray-internal
    (``ray.air._internal.usage``): if it moves, nothing breaks and the import comes back.
    """
    if os.environ.get("RAY_USAGE_STATS_ENABLED") != "0":
        return
    try:
        from ray.air._internal import usage
    except ImportError:
        return
    if hasattr(usage, "tag_callbacks"):
        usage.tag_callbacks = lambda callbacks: False


def joins_cluster(args: argparse.Namespace) -> bool:
    """Whether this run joins a Ray someone started (``--address``/``RAY_ADDRESS``), not a new
    local one (no address, or ``local``)."""
    return bool(args.address) and args.address != "local"


def _probe_address(address: str, timeout_s: float = 5.0) -> None:
    """A ``HOST:PORT`` nothing answers at is one line and exit 2: Ray's own connect retries
    the GCS for minutes, printing a log line each time. ``auto`` and ``ray://`` addresses are
    left to Ray (it answers those at once)."""
    import socket

    host, _, port = address.rpartition(":")
    if "://" in address or not host or not port.isdigit() or \
            (":" in host and not host.startswith("[")):  # a bare IPv6 address, no port
        return
    try:
        conn = socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s)
    except OSError as exc:
        reason = " ".join((exc.strerror or str(exc) or type(exc).__name__).split())
        cli.fail(f"cannot connect to Ray at {address}: nothing answers there ({reason}); "
                 "start a head with 'ray start --head', or leave --address out to start one here")
    # Ray's GCS speaks gRPC (HTTP/2). A port that answers HTTP/2's opening with an HTTP/1
    # status line is a web server, such as the dashboard at 8265 (for 'ray job submit'): Ray's
    # connect would retry it for minutes.
    try:
        with conn:
            conn.settimeout(2.0)
            conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + b"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
            answer = conn.recv(16)
    except OSError:
        return  # no answer in time: left to Ray
    if answer.startswith((b"HTTP/", b"<")):  # a status line, or a bare HTML error page
        cli.fail(f"cannot connect to Ray at {address}: it answers HTTP, so it is a web server "
                 "(the dashboard's port, 8265, is for 'ray job submit'), not the head's GCS; "
                 "use the port 'ray start --head' printed (6379 by default)")


def start_ray(args: argparse.Namespace, task: Task) -> None:
    import ray

    level = logging.INFO if args.verbose else logging.ERROR
    if args.address:
        try:
            with usage_records_locked():
                ray.init(address=args.address, logging_level=level,
                         log_to_driver=args.verbose)
        except Exception as exc:
            hint = ""
            if "auth" in str(exc).lower() or not os.environ.get("RAY_AUTH_MODE") or \
                    os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
                # A wrong token reads as "Failed to connect to Ray cluster": say what to check.
                hint = ("; a cluster with token authentication also needs RAY_AUTH_MODE=token "
                        "and its token, the same as the head's (RAY_AUTH_TOKEN, a file named by "
                        "RAY_AUTH_TOKEN_PATH, or ~/.ray/auth_token)")
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            cli.fail(f"cannot connect to Ray at {args.address}: {first}{hint}")
    else:
        # A new raylet starts one idle worker process per CPU when the first driver connects,
        # with no runtime_env. Tune gives every trial actor a runtime_env (env_vars), so its
        # actors never take those workers: they start their own, and the prestarted ones
        # (2 here, 64 on a 64-core machine) take CPU while Ray starts and are then stopped
        # unused. Off for the Ray this process starts (an exported value wins); a Ray joined
        # with --address keeps its own setting. tests/test_local_ray.py checks Ray reads it.
        os.environ.setdefault(PRESTART_ENV, "0")
        # A new raylet starts its object store on a thread and connects to it at once; when it
        # asks before the store listens, Ray's retry sleeps a full second (7 of 10 fresh starts
        # here lost it, docs/measurements.md). Retrying every 20 ms keeps the same patience.
        # Either one exported leaves both to the user (and Ray's defaults).
        if CONNECT_WAIT_ENV not in os.environ and CONNECT_TRIES_ENV not in os.environ:
            os.environ.update(CONNECT_RETRY)
        # address="local": always a fresh local Ray, never a cluster someone else started here.
        # Without --verbose nothing reads the workers' logs (log_to_driver is off), and a Ray
        # on one machine has nothing to autoscale: neither monitor is started then.
        needs_dashboard = task.needs_dashboard(args)
        with prompt_node_wait(), dashboard_beside_raylet(), usage_records_locked(), \
                dashboard_deps_by_spec(), \
                without_monitors(logs=not args.verbose, autoscaler=not needs_dashboard):
            ray.init(address="local", num_cpus=args.num_cpus,
                     include_dashboard=needs_dashboard, logging_level=level,
                     log_to_driver=args.verbose)
    if not args.verbose:
        for name in ("ray", "ray.tune", "ray.train"):
            logging.getLogger(name).setLevel(logging.ERROR)


def asha_every_report(task: Task, prep: Prepared) -> bool:
    """Whether ASHA judges every report (``Task.rung_every_report``). An experiment started
    before that rule (its experiment.json has no ``asha_every_report``) resumes with the rungs it
    started with: changing them midway would cut the rest by another rule."""
    previous = prep.previous
    if previous is not None and previous.get("scheduler") == "asha":
        return bool(previous.get("asha_every_report", False))
    return task.rung_every_report


def build_tuner(task: Task, prep: Prepared, data: Any, writer: ResultsWriter, progress,
                num_samples: int, log: Any = None):
    """The one place the Tuner is built from TuneConfig and RunConfig.

    A resumed experiment is a new Tune run in the same folder: the searcher and the scheduler
    are rebuilt from the journal (``log``), never restored from Tune's lagging state.
    """
    from ray import tune

    args = prep.args
    trainable, resources = task.trainable(args, data)
    demand = task.demand(args) if task.demand is not None else resources
    max_concurrent = args.max_concurrent or default_concurrency(demand)
    if getattr(prep.searcher, "packs", False):
        prep.searcher.slots = max_concurrent  # sizes the packs (guided self-scheduling)
    writer.run_info["resources"] = " ".join(
        f"{k}={_short(v)}" for k, v in ray_resource_names(demand).items() if v
    )
    trainable = tune.with_resources(trainable, resources)
    from pipelines.callbacks import ResultsCallback
    from pipelines.schedulers import build_scheduler

    scheduler = build_scheduler(args, full_budget(task, args), time_attr=task.time_attr,
                                every_report=asha_every_report(task, prep))
    if scheduler is not None and log is not None:
        scheduler.seed_from_journal(log, task.metrics.metric, task.metrics.mode)
    if progress is not None:
        progress.scheduler = scheduler
        progress.members = getattr(prep.searcher, "members", None)
        progress.placement = getattr(prep.searcher, "placement", None)
    results = ResultsCallback(writer, scheduler, prep.searcher)
    callbacks = [results]
    callbacks += [progress] if progress is not None else []
    callbacks += trackers.callbacks(
        args, task.name, prep.storage.uri_of(args.name),
        identify=results._journal_id,  # the trackers name a trial as the journal does
        step_key=task.time_attr,
        folder=prep.storage.path(args.name) if prep.storage.is_local else None)
    storage_path, storage_fs = prep.storage.tune_storage()
    run_config = tune.RunConfig(
        name=args.name,
        storage_path=storage_path,
        storage_filesystem=storage_fs,
        callbacks=callbacks,
        verbose=1 if args.verbose else 0,
        checkpoint_config=task.checkpoint_config(args),
        failure_config=tune.FailureConfig(max_failures=args.max_failures),
    )
    tune_config = tune.TuneConfig(
        metric=task.metrics.metric,
        mode=task.metrics.mode,
        search_alg=prep.searcher,
        scheduler=scheduler,
        num_samples=num_samples,
        # Also lets Tune keep that many trials pending: with a custom searcher it otherwise
        # starts one trial at a time.
        max_concurrent_trials=max_concurrent,
        reuse_actors=task.reuse_actors(args),
        trial_dirname_creator=lambda trial: trial.trial_id,
    )
    return tune.Tuner(trainable, tune_config=tune_config, run_config=run_config)


def checkpoint_exists(storage: Storage):
    """``exists(path)`` for checkpoint paths as the journal records them (local or URI)."""
    import pyarrow.fs as pafs

    def exists(path: str) -> bool:
        try:
            if "://" in path:
                return storage.fs.get_file_info(path.split("://", 1)[1]).type != pafs.FileType.NotFound
            return os.path.exists(path)
        except Exception:
            return False

    return exists


def ray_resource_names(resources: Mapping[str, Any]) -> dict[str, float]:
    """``tune.with_resources`` takes "cpu"/"gpu" as well as Ray's own "CPU"/"GPU"."""
    return {k.upper() if k in ("cpu", "gpu") else k: float(v) for k, v in resources.items()}


def _check_one_trial_fits(args: argparse.Namespace, demand: Mapping[str, Any]) -> None:
    """A trial bigger than the whole Ray would wait forever, silently: on the local Ray this
    process started (nothing will join it) that is one error line and exit 2, before anything
    is written; on a cluster (--address), where an autoscaler may add nodes, a warning."""
    import ray

    have = ray.cluster_resources()
    short = {k: v for k, v in ray_resource_names(demand).items() if v > have.get(k, 0.0)}
    if not short:
        return
    needs = ", ".join(f"{k}={_short(v)}" for k, v in short.items())
    has = ", ".join(f"{k}={_short(have.get(k, 0.0))}" for k in short)
    if joins_cluster(args):
        print(f"warning: one trial needs {needs} and the cluster has {has} now: trials wait "
              "until nodes with them join", file=sys.stderr, flush=True)
        return
    stop_ray()
    cli.fail(f"one trial needs {needs} and this machine's Ray has {has}: ask for less "
             "(--gpus-per-worker, --workers-per-trial, --cpus-per-*) or use a cluster (--address)")


def default_concurrency(resources: Any) -> int:
    """How many trials of this size the cluster holds at once (at least 1)."""
    import ray

    if not isinstance(resources, Mapping):
        bundles = getattr(resources, "bundles", None) or [{}]
        need: dict[str, float] = {}
        for bundle in bundles:
            for key, value in bundle.items():
                need[key] = need.get(key, 0.0) + value
    else:
        need = ray_resource_names(resources)
    have = ray.cluster_resources()
    fits = [int(have.get(key, 0.0) // value) for key, value in need.items() if value > 0]
    return max(1, min(fits) if fits else 1)


def _write_report(location: str) -> str | None:
    """Write the experiment's report.html; returns where, or None after one warning line.

    The report is a view of results already written: its failure never fails the run.
    """
    try:
        from pipelines.report import write_report as write

        return write([location])
    except Exception as exc:
        first = " ".join(str(exc).split()) or type(exc).__name__
        print(f"warning      report not written: {first} (retry: python -m pipelines.report "
              f"{location})", file=sys.stderr)
        return None


# What the last ``prompt_node_wait`` saw: how many times it polled, and whether it saw the node.
NODE_WAIT: dict[str, Any] = {}


@contextlib.contextmanager
def prompt_node_wait(poll_s: float = 0.02, most_s: float = 5.0):
    """While ``ray.init`` starts a local Ray, notice the raylet's registration within ``poll_s``.

    After launching the raylet, ``ray.init`` asks the GCS for the new node
    (``ray._private.services.get_node``), and the GCS client behind it checks once a second
    (a fixed sleep in Ray's C++ ``GlobalStateAccessor::GetNode``). The raylet registers about
    0.8-1.1 s after it starts here, so ``ray.init`` waited a whole second, two when the raylet
    took a little over one. Inside this context ``get_node`` first polls the GCS's node table
    every ``poll_s`` until the node is alive (for at most ``most_s``, then Ray's own wait goes
    on), then calls Ray's. Ray internals; if they move, Ray's own wait is all that is left, and
    tests/test_local_ray.py fails (it checks that the poll saw the node). Not reentrant: the
    pipeline starts one Ray per process, from the main thread.
    """
    NODE_WAIT.clear()
    try:
        from ray._private import services, state
        original = services.get_node
        client_options = services._get_gcs_client_options
    except (ImportError, AttributeError):
        original = None
    if original is None:
        yield
        return
    NODE_WAIT.update(polls=0, seen=False)

    def get_node(gcs_address, node_id, *rest, **kwargs):
        try:
            NODE_WAIT["seen"] = _poll_node(state.GlobalState(), client_options(gcs_address),
                                           node_id, poll_s, most_s)
        except Exception as exc:  # Ray's own wait below still finds the node
            logging.getLogger(__name__).debug("polling for the new Ray node failed: %s", exc)
        return original(gcs_address, node_id, *rest, **kwargs)

    services.get_node = get_node
    try:
        yield
    finally:
        services.get_node = original


def _poll_node(global_state, options, node_id: str, poll_s: float, most_s: float) -> bool:
    global_state._initialize_global_state(options)
    try:
        end = time.monotonic() + most_s
        while time.monotonic() < end:
            NODE_WAIT["polls"] += 1
            nodes = global_state.node_table()
            if not all(isinstance(n, dict) and "NodeID" in n for n in nodes):
                return False  # a table this code does not know: leave it to Ray
            if any(n["NodeID"] == node_id and n.get("Alive") for n in nodes):
                return True
            time.sleep(poll_s)
        return False
    finally:
        global_state.disconnect()


# Whether the last ``dashboard_beside_raylet`` started the dashboard on its own thread.
DASHBOARD_START: dict[str, Any] = {}


@contextlib.contextmanager
def dashboard_beside_raylet():
    """While ``ray.init`` starts a local Ray, start its dashboard process beside the raylet.

    A new head starts the GCS, then the dashboard process (even with ``include_dashboard=False``
    a minimal one, for usage statistics), and waits, polling every 0.1 s, until the dashboard
    has written its address to the GCS (about 1 s here: a Python process importing Ray and
    aiohttp); only then does it launch the raylet, which needs another 0.8-1 s to register.
    The raylet does not use the dashboard, so the two waits need not add up: inside this
    context ``Node.start_api_server`` (the launch and that wait) runs on a thread, and
    ``Node.start_ray_processes`` (the raylet's launch) waits for it before returning, so
    ``ray.init`` still returns a node whose dashboard has started (or raises its error). The
    thread then stays parked for the life of the process (see ``run``). Ray
    internals; if they move, the plain sequential start is all that is left, and
    tests/test_local_ray.py fails (it checks the dashboard started on the thread). Not
    reentrant: the pipeline starts one Ray per process, from the main thread.
    """
    DASHBOARD_START.clear()
    try:
        from ray._private.node import Node
        start_api_server, start_ray_processes = Node.start_api_server, Node.start_ray_processes
    except (ImportError, AttributeError):
        yield
        return
    started: dict[int, tuple[threading.Event, dict]] = {}

    def start_api_server_on_a_thread(node, *args, **kwargs):
        outcome: dict[str, BaseException] = {}
        done = threading.Event()

        def run() -> None:
            try:
                start_api_server(node, *args, **kwargs)
            except BaseException as exc:  # re-raised where ray.init would have raised it
                outcome["error"] = exc
            finally:
                done.set()
            # Ray launches the dashboard with PR_SET_PDEATHSIG (it dies with its parent), and
            # Linux takes the parent to be the thread that forked it: this thread must live as
            # long as the process, or the dashboard is killed the moment it returns.
            threading.Event().wait()

        threading.Thread(target=run, name="ray-dashboard", daemon=True).start()
        started[id(node)] = (done, outcome)
        DASHBOARD_START["threaded"] = True

    def start_ray_processes_then_join(node, *args, **kwargs):
        try:
            return start_ray_processes(node, *args, **kwargs)
        finally:
            _join_dashboard_start(started.pop(id(node), None))

    Node.start_api_server = start_api_server_on_a_thread
    Node.start_ray_processes = start_ray_processes_then_join
    try:
        yield
    finally:
        Node.start_api_server, Node.start_ray_processes = start_api_server, start_ray_processes
        for done, _ in list(started.values()):  # ray.init failed before the raylet's launch
            done.wait()
        started.clear()


def _join_dashboard_start(pending: tuple[threading.Event, dict] | None) -> None:
    """Wait until the dashboard's start (``Node.start_api_server``) has returned; its error."""
    if pending is None:
        return
    done, outcome = pending
    done.wait()
    if "error" in outcome:
        raise outcome["error"]


# Whether the last ``usage_records_locked`` found Ray's hook to wrap.
USAGE_HOOK: dict[str, bool] = {}


@contextlib.contextmanager
def usage_records_locked():
    """While ``ray.init`` runs, its hook that copies the usage records made before it (Ray's
    ``usage_lib.put_pre_init_usage_stats``) holds the locks that guard those records.

    The pipeline imports Ray Tune (and the task's libraries) on a thread beside ``ray.init``;
    those imports record library usage and usage tags into a set and a dict, under a lock. The
    hook at the end of ``ray.init`` iterates over both without that lock, and when a record
    lands meanwhile ``ray.init`` fails with "dictionary changed size during iteration" (seen
    once in the test suite, after the faster start above made the two overlap). Inside this
    context the hook runs with both locks held, so a record made meanwhile waits for it. Ray
    internals; if they move, the hook runs as Ray wrote it (tests/test_local_ray.py fails).
    """
    try:
        from ray._common.usage import usage_lib
        from ray._private import worker
        hooks = worker._post_init_hooks
        locks = (usage_lib._recorded_library_usages_lock,
                 usage_lib._recorded_extra_usage_tags_lock)
        original = usage_lib.put_pre_init_usage_stats
    except (ImportError, AttributeError):
        yield
        return

    def locked_hook() -> None:
        with locks[0], locks[1]:
            original()

    replaced = [i for i, hook in enumerate(hooks) if hook is original]
    for i in replaced:
        hooks[i] = locked_hook
    USAGE_HOOK["locked"] = bool(replaced)
    try:
        yield
    finally:
        for i in replaced:
            if i < len(hooks) and hooks[i] is locked_hook:
                hooks[i] = original


# The monitors the last ``without_monitors`` kept from starting.
SKIPPED_MONITORS: list[str] = []


# What ``ray.dashboard.optional_deps`` imports (Ray 2.60): the packages that make an install
# ``ray[default]`` rather than minimal Ray. Submodules are listed where Ray imports them.
DASHBOARD_DEPENDENCIES = ("aiohttp", "aiohttp_cors", "grpc", "opencensus", "opentelemetry",
                          "opentelemetry.exporter.prometheus", "opentelemetry.proto",
                          "prometheus_client", "pydantic")


def dashboard_dependency_error() -> ImportError | None:
    """Ray's ``get_dashboard_dependency_error`` answered by finding the packages, not importing
    them: an ``ImportError`` naming the first one missing, or None when all are installed."""
    import importlib.util

    for name in DASHBOARD_DEPENDENCIES:
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            return ImportError(f"No module named '{name}'")
    return None


# Whether the last ``dashboard_deps_by_spec`` found Ray's check to replace.
DEPS_CHECK: dict[str, bool] = {}


@contextlib.contextmanager
def dashboard_deps_by_spec():
    """While ``ray.init`` starts a local Ray, Ray's check for the dashboard's packages finds
    them instead of importing them.

    Before launching the raylet, ``ray.init`` asks ``ray._private.utils.
    get_dashboard_dependency_error`` whether this is a minimal install (to pass ``--minimal``
    to the dashboard agent), and that check imports ``ray.dashboard.optional_deps``: aiohttp,
    gRPC, OpenTelemetry, Prometheus's client and pydantic, 0.6 s alone and about 0.9 s beside
    the data load here, in the driver, which uses none of them. ``dashboard_dependency_error``
    gives the same answer from the installed packages (``importlib.util.find_spec``, about a
    millisecond); the agent and the dashboard still import what they use in their own
    processes. Ray internals; if they move, Ray's own check runs (tests/test_local_ray.py
    fails, and checks that both answers agree).
    """
    DEPS_CHECK.clear()
    try:
        import ray._private.utils as ray_utils
        original = ray_utils.get_dashboard_dependency_error
    except (ImportError, AttributeError):
        yield
        return
    ray_utils.get_dashboard_dependency_error = dashboard_dependency_error
    DEPS_CHECK["replaced"] = True
    try:
        yield
    finally:
        ray_utils.get_dashboard_dependency_error = original


@contextlib.contextmanager
def without_monitors(logs: bool, autoscaler: bool):
    """While ``ray.init`` starts a local Ray, do not start its log monitor (``logs``) or its
    autoscaler monitor (``autoscaler``).

    Each is a Python process that imports Ray during the start (about 0.4 CPU-seconds each,
    on a start that is CPU-bound on a small machine once the dashboard starts beside the
    raylet). The log monitor tails the workers' log files and publishes new lines for drivers
    started with ``log_to_driver=True``; the pipeline's driver is, only with --verbose, and the
    log files are written either way. The autoscaler monitor scales a cluster that has a
    provider; a Ray started by ``ray.init`` on one machine has none. The pipeline keeps it where
    Ray Train runs (fine-tuning with several workers per trial): Train's scaling code has an
    autoscaler client, and that path was not tried without the monitor.
    ``ray.init`` has no argument for either (``ray start`` has ``--no-monitor``); the pipeline
    replaces ``Node.start_log_monitor`` and ``Node.start_monitor`` inside this context. Ray
    internals; if they move, both start as before and tests/test_local_ray.py fails.

    Not skipped: the dashboard process Ray starts even with ``include_dashboard=False`` (it
    loads only ``UsageStatsHead``, which does nothing with usage statistics off). Without it the
    raylet's dashboard agent, which ``ray[default]`` always runs, asks the GCS for the
    dashboard's address every second for the life of the cluster and logs an error traceback
    each time (docs/measurements.md, "Tried").
    """
    SKIPPED_MONITORS.clear()
    try:
        from ray._private.node import Node
        originals = {"start_log_monitor": Node.start_log_monitor,
                     "start_monitor": Node.start_monitor}
    except (ImportError, AttributeError):
        yield
        return

    def skip(name: str):
        def start(node, *args, **kwargs) -> None:
            SKIPPED_MONITORS.append(name)
        return start

    if logs:
        Node.start_log_monitor = skip("log_monitor")
    if autoscaler:
        Node.start_monitor = skip("monitor")
    try:
        yield
    finally:
        for name, method in originals.items():
            setattr(Node, name, method)


def stop_autoscaler_monitor() -> bool:
    """Kill the autoscaler monitor of a local Ray this process started; True if it did.

    ``ray.shutdown()`` stops a local Ray's processes in turn: the raylet, the GCS, then the
    autoscaler monitor with SIGTERM and up to a second's wait before SIGKILL. The monitor's
    SIGTERM handler first reports its own death to the GCS, which is already gone, so it never
    exits in that second: a full second of every shutdown (measured: 1.0 s of 1.3 s). A Ray on
    one machine has nothing to autoscale and the monitor keeps no state, so it is killed first,
    at once. Only a head node this process started lists the monitor among its processes: a
    Ray joined with ``--address`` (``connect_only``) is never touched. ``Node.kill_monitor`` is
    a Ray internal; tests/test_local_ray.py fails if a Ray upgrade moves it.
    """
    import ray._private.worker as ray_worker
    from ray._private import ray_constants

    node = getattr(ray_worker, "_global_node", None)
    if node is None or not node.is_head() or \
            ray_constants.PROCESS_TYPE_MONITOR not in node.all_processes:
        return False
    try:
        node.kill_monitor(check_alive=False)
    except Exception as exc:  # ray.shutdown() stops it anyway, a second later
        logging.getLogger(__name__).warning("stopping Ray's autoscaler monitor failed: %s", exc)
        return False
    return True


def stop_ray() -> None:
    """``ray.shutdown()``, after ``stop_autoscaler_monitor`` (no wait on a local Ray's monitor)."""
    import ray

    stop_autoscaler_monitor()
    ray.shutdown()


def _shutdown_ray_in_background() -> threading.Thread:
    """Start ``stop_ray()`` on a thread; join it before the process exits."""

    def stop() -> None:
        try:
            stop_ray()
        except Exception as exc:  # a failed shutdown must not lose the results already written
            logging.getLogger(__name__).warning("ray.shutdown failed: %s", exc)
        finally:
            _rearm_sigterm()

    thread = threading.Thread(target=stop, name="ray-shutdown")
    thread.start()
    return thread


_SIGTERM_ACTION: bytes | None = None  # the process's SIGTERM action once Python handles it


def _sigaction(signum: int, new: bytes | None = None) -> bytes | None:
    """The C-level ``struct sigaction`` of ``signum`` as bytes (setting ``new`` first, if given);
    None where POSIX ``sigaction`` cannot be called."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if new is not None and libc.sigaction(int(signum), new, None) != 0:
            return None
        action = ctypes.create_string_buffer(1024)  # any platform's struct sigaction fits
        if libc.sigaction(int(signum), None, action) != 0:
            return None
        return action.raw
    except (AttributeError, OSError, TypeError, ValueError):
        return None


def resume_flags(args: argparse.Namespace) -> str:
    """The flags that continue this experiment: ``--resume --name NAME``, and ``--output``
    where it is not the default (a copied line must find the experiment)."""
    import shlex

    flags = f"--resume --name {shlex.quote(args.name)}"
    output = getattr(args, "output", "results")
    return flags if output in (None, "results") else f"{flags} --output {shlex.quote(output)}"


def _rearm_sigterm() -> None:
    """Give SIGTERM back to Python's handler after ``ray.shutdown()``, which sets the process's
    SIGTERM action to the default (terminate) below Python: ``signal.getsignal`` still names the
    pipeline's handler, but a SIGTERM during the final evaluation would kill the driver with
    ``experiment.json`` left ``running``. Runs on the shutdown thread, where ``signal.signal``
    is not allowed, so the action ``sigterm_as_ctrl_c`` installed is written back as it was
    (Python's C handler, which queues the signal for the Python one)."""
    import ctypes
    import signal

    if _SIGTERM_ACTION is None or not callable(signal.getsignal(signal.SIGTERM)):
        return
    now = _sigaction(signal.SIGTERM)
    if now is not None and not ctypes.c_void_p.from_buffer_copy(now[:ctypes.sizeof(
            ctypes.c_void_p)]).value:  # SIG_DFL: something reset it
        _sigaction(signal.SIGTERM, _SIGTERM_ACTION)


def sigterm_as_ctrl_c() -> None:
    """Answer SIGTERM (``timeout``, Slurm, Kubernetes, systemd stopping the job) as Ctrl-C:
    whatever handles SIGINT at that moment (Tune's graceful stop while trials run, Python's
    KeyboardInterrupt elsewhere) handles it, so the experiment ends ``interrupted`` with the
    line that says how to continue. Called again after ``ray.init``, whose core worker installs
    a handler of its own (a stack dump, and no summary)."""
    import signal

    def forward(signum, frame):
        handler = signal.getsignal(signal.SIGINT)
        if callable(handler):
            handler(signal.SIGINT, frame)
        else:
            raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, forward)
    global _SIGTERM_ACTION
    _SIGTERM_ACTION = _sigaction(signal.SIGTERM)


def run(task: Task, args: argparse.Namespace) -> int:
    """Run the experiment described by ``args``; returns the process exit code."""
    started = time.time()
    sigterm_as_ctrl_c()
    # Seconds of each phase of this process, kept in experiment.json ("phases_s") for the
    # start-up benchmark (benchmarks/phases.py) and for users asking where a short run's time went.
    phases: dict[str, float] = {}
    prep = prepare(task, args)
    phases["prepare"] = time.time() - started
    quiet_ray(args.verbose)
    space, storage = prep.space, prep.storage

    def log(message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    # Loading data overlaps Ray's start-up (seconds of process launches on a small machine).
    loaded: dict[str, Any] = {}

    def load() -> None:
        load_started = time.time()
        try:
            loaded["data"] = task.load(args)
            loaded["fingerprint"] = task.fingerprint(args, loaded["data"])
            check_same_data((prep.previous or {}).get("data_fingerprint"),
                            loaded["fingerprint"], args)
            phases["data_load"] = time.time() - load_started
            build_searcher(task, prep)
            import pipelines.callbacks  # noqa: F401  (Ray Tune's import, off the critical path)

            skip_unsent_telemetry()
        except BaseException as exc:  # re-raised on the main thread
            loaded["error"] = exc

    # Ray's own import (0.3 s) comes before the loader's: beside the loader's imports (the
    # GIL taking turns) it took up to a second, and Ray's processes launched that much later,
    # where they can run on another core while the loader imports.
    ray_started = time.time()
    import ray  # noqa: F401

    loader = threading.Thread(target=load, daemon=True)
    loader.start()
    target = args.address or "a local Ray"
    log(f"{task.name}: {prep.num_trials} trials ({args.algo}, {args.scheduler}) on {target}; "
        f"results in {storage.uri_of(args.name)}")
    try:
        start_ray(args, task)
        sigterm_as_ctrl_c()  # ray.init put its own handler in place
        phases["ray_start"] = time.time() - ray_started
        pause_point("ray_start")  # the reliability tests press Ctrl-C here
        waited = time.time()
        loader.join()
        phases["wait_for_load"] = time.time() - waited
    except KeyboardInterrupt:
        # Ctrl-C before any trial: stop what Ray started, and say so in one line.
        with contextlib.suppress(Exception):
            stop_ray()
        log("interrupted  while Ray was starting; " + (
            f"the experiment is as it was: continue with {resume_flags(args)}"
            if args.resume else "nothing was written"))
        return 130
    if "error" in loaded:
        stop_ray()
        if isinstance(loaded["error"], ValueError):
            cli.fail(str(loaded["error"]))
        raise loaded["error"]
    data = loaded["data"]

    info: dict[str, Any] = {
        "name": args.name,
        "task": task.name,
        "schema_version": SCHEMA_VERSION,
        "status": "running",
        "started": datetime.fromtimestamp(started, timezone.utc).isoformat(),
        "algorithm": args.algo,
        "scheduler": args.scheduler,
        "seed": args.seed,
        "metrics": task.metrics.to_dict(),
        "space": space.to_dict(),
        "flags": dict(prep.flags),
        "argv": sys.argv[1:],
        "packages": package_versions(),
        "journal_version": JOURNAL_VERSION,
        "iteration_key": task.time_attr,
        **task.extra_info(args, data),
    }
    if loaded.get("fingerprint"):
        info["data_fingerprint"] = loaded["fingerprint"]
    if prep.warm_start is not None:
        info["warm_start_rows"] = prep.warm_start
    run_info = {"algorithm": args.algo, "scheduler": args.scheduler, "seed": args.seed}
    writer = ResultsWriter(storage, args.name, space, task.metrics, run_info,
                           metadata={"experiment": args.name, "task": task.name},
                           iteration_key=task.time_attr)
    remaining = prep.num_trials
    journal_log = None
    if args.resume:
        # Checkpoints recorded under a folder the experiment lived in before (a user may move
        # or copy it between runs; one from before 'locations' lived where they say) are read
        # from this one.
        earlier = [d for d in (prep.previous or {}).get("locations", []) if isinstance(d, str)]
        ended = writer.load_journal(moved_from=earlier)
        ended += writer.end_cut_trials()
        journal_log = writer.log
        prep.searcher.resume(journal_log, checkpoint_exists(storage))
        # The trials the journal holds as started and not ended: each searcher's resume()
        # counts its own way (the listed ones include the trials never started).
        reruns = len(journal_log.unfinished())
        n_started = len(journal_log.trials)
        remaining = max(0, prep.num_trials - n_started) + reruns
        log(f"resuming: {ended} ended trials kept, {reruns} to continue, "
            f"{remaining - reruns} not started yet")
        previous = prep.previous or {}
        info["started"] = previous.get("started", info["started"])
        info["resumed"] = datetime.now(timezone.utc).isoformat()
        info["resumes"] = int(previous.get("resumes", 0)) + 1
        # The command and the package versions that made the first trials stay; each resume
        # adds its own command and the packages that differ from them (a resume after an
        # upgrade shows which trials ran on what).
        first_packages = previous.get("packages") or info["packages"]
        info["argv"] = previous.get("argv", info["argv"])
        info["resume_history"] = [*previous.get("resume_history", []), {
            "resumed": info["resumed"],
            "argv": sys.argv[1:],
            "packages_changed": {k: v for k, v in info["packages"].items()
                                 if first_packages.get(k) != v},
        }]
        info["packages"] = first_packages
    here = storage.uri_of(args.name)  # every folder the experiment has lived in, this one last
    info["locations"] = [*[d for d in writer.lived_in if d != here], here]
    if args.scheduler == "asha":
        info["asha_every_report"] = asha_every_report(task, prep)
    if remaining > 0 and task.demand is not None:
        # Only where trials will run: a resume that only scores the best trial may run on a
        # smaller machine than the one that trained.
        _check_one_trial_fits(args, task.demand(args))
    write_experiment_json(storage, args.name, info)

    from pipelines.callbacks import ProgressCallback

    progress = ProgressCallback(prep.num_trials, task.metrics.metric, task.metrics.mode,
                                describe=describe_config, select=task.metrics.select,
                                step=task.metrics.step)
    progress.writer = writer
    progress.refresh_all()  # a resumed run's line counts and ranks the trials it kept, too
    tune_started = time.time()
    interrupted = False
    if remaining > 0:
        strict_check = os.environ.get("TUNE_DISABLE_STRICT_METRIC_CHECKING")
        if getattr(prep.searcher, "packs", False):
            # A pack's member that fails closes with a report that has no score
            # (ResultsCallback makes it an error row); Tune's check that every report holds the
            # metric (read on the driver at each result; documented among Tune's environment
            # variables) would fail the whole pack. Put back after the run.
            os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
        tuner = build_tuner(task, prep, data, writer, progress, remaining, journal_log)
        phases["tuner_build"] = time.time() - tune_started
        sigint_before = signal.getsignal(signal.SIGINT)
        try:
            tuner.fit()
        except KeyboardInterrupt:
            interrupted = True
        finally:
            # Tune leaves its SIGINT handler (a graceful stop of trials) installed after the
            # run: a Ctrl-C during the final evaluation would only set its flag.
            signal.signal(signal.SIGINT, signal.default_int_handler if sigint_before is None
                          else sigint_before)  # None: not set from Python
            writer.flush()
            if strict_check is None:
                os.environ.pop("TUNE_DISABLE_STRICT_METRIC_CHECKING", None)
            else:
                os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = strict_check
    else:
        writer.flush()
    tune_seconds = time.time() - tune_started
    if progress.first_start is not None:
        phases["first_trial_start"] = progress.first_start - tune_started - \
            phases.get("tuner_build", 0.0)
    phases["tune"] = tune_seconds - phases.get("tuner_build", 0.0)

    rows = writer.finished_rows()
    # Tune answers Ctrl-C by stopping cleanly and returning; fewer trials than planned means
    # the user stopped it.
    interrupted = interrupted or len(rows) < prep.num_trials
    best = best_row(rows, task.metrics)  # the rows just built, not built again
    # Ray's shutdown is mostly waiting (the raylet gets a second to stop its workers, then the
    # GCS): it runs beside the final evaluation, the last experiment.json and the report, none
    # of which needs Ray (the test split is scored in this process, from the checkpoint files).
    stopping = _shutdown_ray_in_background()
    evaluation: dict[str, Any] = {}
    evaluation_error = None
    evaluation_interrupted = False
    if best is not None and not interrupted:
        evaluation_started = time.time()
        try:
            pause_point("evaluate")  # the reliability tests kill or signal the driver here
            evaluation = task.evaluate(args, data, best, config_from_row(best, space))
        except EvaluationError as exc:
            evaluation_error = str(exc)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: --resume runs the evaluation again
            interrupted = evaluation_interrupted = True
        phases["evaluation"] = time.time() - evaluation_started

    counts = {
        "trials": len(rows),
        "finished": sum(r["status"] == "finished" for r in rows),
        "stopped_early": sum(r["status"] == STATUS_STOPPED for r in rows),
        "errors": sum(r["status"] == STATUS_ERROR for r in rows),
    }
    info.update({
        "status": "interrupted" if interrupted else
                  "evaluation_failed" if evaluation_error else "finished",
        "evaluation_error": evaluation_error,
        "finished": datetime.now(timezone.utc).isoformat(),
        "wall_time_s": time.time() - started,
        "tune_time_s": tune_seconds,
        "phases_s": {k: round(v, 4) for k, v in phases.items()},
        "counts": counts,
        "best": None if best is None else {
            "trial_id": best["trial_id"],
            "config": config_from_row(best, space),
            task.metrics.metric: best.get(task.metrics.score_column),
            **evaluation,
        },
    })
    write_experiment_json(storage, args.name, info)
    report_started = time.time()
    report = None if args.no_report else _write_report(storage.uri_of(args.name))
    phases["report"] = time.time() - report_started
    waited = time.time()
    stopping.join()
    # The part of Ray's shutdown that the writing above did not hide.
    phases["shutdown"] = time.time() - waited
    info["phases_s"]["shutdown"] = round(phases["shutdown"], 4)
    info["phases_s"]["report"] = round(phases["report"], 4)
    write_experiment_json(storage, args.name, info)

    out = sys.stdout
    metric = task.metrics.metric
    print(f"trials       {counts['trials']} ({counts['finished']} finished, "
          f"{counts['stopped_early']} stopped early, {counts['errors']} errors) "
          f"in {time.time() - started:.1f} s", file=out)
    how_to_continue = (f"interrupted  {len(rows)} of {prep.num_trials} trials ended; continue "
                       f"with {resume_flags(args)}")
    if evaluation_interrupted:
        how_to_continue = (f"interrupted  during the final evaluation (every trial ended); "
                           f"{resume_flags(args)} runs it")
    if best is None:
        first_error = next((r.get("error") for r in rows if r.get("error")), None)
        print("best         none yet: interrupted before a trial ended" if interrupted and
              not first_error else "best         none: no trial produced a score"
              + (f" (first error: {first_error})" if first_error else ""), file=out)
        print(f"results      {storage.uri_of(args.name)}", file=out)
        if report:
            print(f"report       {report}", file=out)
        if interrupted:  # Ctrl-C before any trial ended: the run continues with --resume
            print(how_to_continue, file=sys.stderr)
            return 130
        return 1
    print(f"best config  {describe_config(config_from_row(best, space))}", file=out)
    print(f"{metric:<12} {best[task.metrics.score_column]:.4f}", file=out)
    for key, value in evaluation.items():
        if isinstance(value, float) and key.startswith("test"):
            print(f"{key:<12} {value:.4f}", file=out)
    for line in task.summary(args, data, best, evaluation):
        print(line, file=out)
    print(f"results      {storage.uri_of(args.name)}/ (trials.parquet, epochs.parquet, "
          f"experiment.json)", file=out)
    if report:
        print(f"report       {report}", file=out)
    # Looked for only where the line is printed: a resume that ran no trial, on a local disk.
    events = not getattr(args, "tensorboard", False) or remaining > 0 or \
        not storage.is_local or any(
            glob.glob(os.path.join(storage.path(args.name), "*", "events.out.tfevents.*")))
    for line in trackers.summary_lines(args, storage.uri_of(args.name), events=events):
        print(line, file=out)
    if counts["errors"]:
        first_error = next((r.get("error") for r in rows if r.get("error")), "")
        print(f"warning      {counts['errors']} trials failed; first error: {first_error}",
              file=sys.stderr)
    if interrupted:
        print(how_to_continue, file=sys.stderr)
    if evaluation_error:
        print(f"error: {evaluation_error}", file=sys.stderr)
        return 1
    return 130 if interrupted else 0
