"""The flags every pipeline shares, and the one-line-and-exit-2 rule for bad input.

Everything here runs before Ray starts: a bad flag, space or dataset prints one line naming the
problem on stderr and exits with code 2, and nothing is written.
"""

from __future__ import annotations

import argparse
import math
import os
import re
import sys
from collections.abc import Callable
from datetime import datetime, timezone
from typing import NoReturn

from pipelines.searchers import ALGORITHMS

SCHEDULERS = ("fifo", "asha")
EXIT_BAD_INPUT = 2


class UsageError(Exception):
    """Bad input: its message is the one line the user sees."""


def fail(message: str) -> NoReturn:
    """Print one line and exit 2 (before Ray starts, nothing written).

    Line breaks inside the message (a user's exception text, a value echoed from argv) become
    spaces: the product promises one line.
    """
    print(f"error: {' '.join(str(message).split())}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


# What call_main says of a Ctrl-C it catches, by default (the tuning pipelines).
RESUME_HINT = ("what was written is kept: an experiment that exists continues with --resume "
               "--name NAME")


def call_main(main: Callable[[], int | None], *, interrupted: str = RESUME_HINT) -> int | None:
    """``main()`` for a ``__main__`` block, where a reader that closed our stdout early
    (``... | head``) ends the process quietly with exit code 1 instead of a BrokenPipeError
    traceback, the way Python's documentation gives (SIGPIPE stays ignored).

    Only a broken stdout is taken for that: a BrokenPipeError from anything else (a socket, a
    worker's pipe) still raises with its traceback. The summary lines come after every result
    is written; with ``--verbose`` Ray Tune also prints its table to stdout during the run,
    where a closed reader stops the run as before (resumable with ``--resume``), quietly now.
    """
    try:
        code = main()
        sys.stdout.flush()  # so a write still in the buffer fails here, inside the guard
        return code
    except KeyboardInterrupt:
        # Ctrl-C outside the points the runner answers itself (Ray's start, Tune's run): the
        # files are written whole or not at all, so a line says so instead of a traceback.
        print(f"interrupted  (Ctrl-C); {interrupted}",
              file=sys.stderr, flush=True)
        return 130
    except Exception as exc:
        unavailable = storage_unavailable(exc)
        if unavailable is None:
            if isinstance(exc, BrokenPipeError) and _stdout_reader_gone():
                # Point stdout at /dev/null: the interpreter's own last flush would fail again.
                devnull = os.open(os.devnull, os.O_WRONLY)
                os.dup2(devnull, sys.stdout.fileno())
                return 1
            raise
        # The object store stopped answering mid-run (for longer than its retries): what it
        # holds is the journal so far, which --resume continues from.
        print(f"error: {' '.join(str(unavailable).split())}; what reached the store is kept: "
              "once it answers, the experiment continues with --resume --name NAME --output URI",
              file=sys.stderr, flush=True)
        return 1


def storage_unavailable(exc: BaseException):
    """The ``StorageUnavailable`` in ``exc``'s chain (Ray Tune wraps a callback's error)."""
    from pipelines.storage import StorageUnavailable

    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, StorageUnavailable):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def _stdout_reader_gone() -> bool:
    """Whether stdout is a pipe whose reading end is closed (poll reports an error on it)."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, OSError, ValueError):  # no poll, or no real file behind stdout
        return False


def exit_process(code: int | None) -> NoReturn:
    """End a pipeline's process with ``code`` once ``main`` returned: skip the interpreter's
    teardown, keep everything a normal exit does for the user.

    After Ray's shutdown, tearing down the interpreter (freeing the modules of Ray, pyarrow,
    scikit-learn and their C++ runtimes) takes about 1 s on this 2-core machine, and adds
    nothing: every result file is closed by then. So: stop threads as the interpreter does
    (threading's shutdown hooks, then joining the non-daemon threads) and run the ``atexit``
    hooks (logging's flush, Ray's, any a library registered), as ``sys.exit`` would,
    flush stdout and stderr, then ``os._exit``. Only used from ``if __name__ == "__main__"``, never
    in-process (tests call ``main``), and only after ``main`` returned: an exception still exits
    the normal way, with its traceback.
    """
    import atexit
    import threading

    # The interpreter's own order (Py_FinalizeEx): threading's shutdown first, which runs the
    # hooks libraries registered with it (joblib's loky stops its executor's manager thread
    # there) and then joins the non-daemon threads; then the atexit hooks.
    shutdown = getattr(threading, "_shutdown", None)
    if shutdown is not None:
        shutdown()
    else:  # pragma: no cover - every CPython this project supports has it
        for thread in threading.enumerate():
            if thread is not threading.current_thread() and not thread.daemon:
                thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: the reader left
            pass
    os._exit(0 if code is None else int(code))


# Flags that say how and where to run, not what the experiment is: --resume may change them.
# The trackers (--tensorboard, --mlflow) are views of this run's trials, never part of the
# experiment: a resume turns them on or off as its own command line says.
RESUMABLE_FLAGS = frozenset({"resume", "name", "output", "address", "num_cpus", "verbose",
                             "max_concurrent", "max_failures", "no_report", "tensorboard",
                             "mlflow", "configs_per_trial"})

_UNSET = object()


class OneLineParser(argparse.ArgumentParser):
    """argparse prints usage plus the error; the product promises one clear line.

    ``parse_args`` also records which flags the command line gave (``args._given``), so
    ``--resume`` can tell a contradicting flag from a default.
    """

    def error(self, message: str) -> NoReturn:
        fail(f"{message} (see --help)")

    def parse_args(self, args=None, namespace=None):  # noqa: D102
        parsed = super().parse_args(args, namespace)
        # argparse fills in a default only where the namespace has no value yet: parsing again
        # into a namespace of sentinels leaves exactly the given flags set.
        probe = argparse.Namespace(**{a.dest: _UNSET for a in self._actions
                                      if a.dest is not argparse.SUPPRESS})
        given = super().parse_args(args, probe)
        parsed._given = {k for k, v in vars(given).items() if v is not _UNSET}
        return parsed


def _int_at_least(minimum: int, meaning: str):
    """An argparse type for whole numbers >= ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {meaning}, got {value}")
        return value

    return parse


positive_int = _int_at_least(1, "at least 1")
non_negative_int = _int_at_least(0, "0 or more")


def configs_per_trial(text: str) -> int | str:
    """``auto`` or a whole number >= 1 (``--configs-per-trial``)."""
    if text == "auto":
        return text
    try:
        return positive_int(text)
    except argparse.ArgumentTypeError as exc:
        raise argparse.ArgumentTypeError(f"{exc} (or 'auto')") from None


def seed_int(text: str) -> int:
    """A seed numpy and scikit-learn accept: 0 to 2**32 - 1."""
    value = non_negative_int(text)
    if value > 2**32 - 1:
        raise argparse.ArgumentTypeError(f"must be at most {2**32 - 1}, got {value}")
    return value


def _float_where(check: Callable[[float], bool], meaning: str):
    """An argparse type for numbers that pass ``check`` (a nan passes no comparison)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not check(value):
            raise argparse.ArgumentTypeError(f"must be {meaning}, got {value}")
        return value

    return parse


_reduction_factor = _float_where(lambda v: 1 < v < math.inf, "a number greater than 1")
positive_float = _float_where(lambda v: 0 < v < math.inf, "a number above 0")
fraction = _float_where(lambda v: 0 < v <= 1, "above 0 and at most 1")  # a share


def _name(text: str) -> str:
    if len(text) > 100:
        raise argparse.ArgumentTypeError(f"must be at most 100 characters, got {len(text)}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", text):
        raise argparse.ArgumentTypeError(
            f"{text!r} must start with a letter or digit and hold only letters, digits, '.', '_', '-'"
        )
    return text


def base_parser(prog: str, description: str, *, default_space: str) -> OneLineParser:
    """The parser with every shared flag; a pipeline adds its own flags to it."""
    parser = OneLineParser(prog=prog, description=description)
    search = parser.add_argument_group("search")
    search.add_argument("--algo", choices=ALGORITHMS, default="grid",
                        help="search algorithm (default: grid)")
    search.add_argument("--space", default=default_space,
                        help=f"search-space module name or path/to/file.py (default: {default_space})")
    search.add_argument("--num-samples", type=positive_int, default=20,
                        help="trials for --algo random and bayesopt (default: 20)")
    search.add_argument("--seed", type=seed_int, default=0,
                        help="seed of the search (random draws, the BO searcher) (default: 0)")
    search.add_argument("--max-concurrent", type=positive_int, default=None,
                        help="cap on trials running at once (default: what the cluster's resources allow)")
    search.add_argument("--bo-init", type=positive_int, default=None,
                        help="bayesopt: random points before the model takes over (default: by dimension)")
    search.add_argument("--warm-start", default=None, metavar="TRIALS_PARQUET",
                        help="bayesopt: seed the model with an earlier experiment's trials.parquet")
    sched = parser.add_argument_group("early stopping")
    sched.add_argument("--scheduler", choices=SCHEDULERS, default="fifo",
                       help="fifo runs every trial to the end; asha stops poor ones early (default: fifo)")
    sched.add_argument("--grace-period", type=positive_int, default=1,
                       help="asha: reports (epochs or fidelity levels) before a trial can be stopped (default: 1)")
    sched.add_argument("--reduction-factor", type=_reduction_factor, default=3.0,
                       help="asha: keep the top 1/factor at each rung (default: 3, as HalvingGridSearchCV)")
    sched.add_argument("--max-t", type=positive_int, default=None,
                       help="asha: the most reports a trial makes (default: the task's full budget)")
    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default=None, help="dataset name or path (see the pipeline's help)")
    data.add_argument("--split-seed", type=seed_int, default=0,
                      help="seed of the held-out test split, kept apart from --seed so runs with "
                           "different search seeds are scored on the same test rows (default: 0)")
    out = parser.add_argument_group("output and cluster")
    out.add_argument("--output", "--storage", dest="output", default="results",
                     help="where experiments go: a directory or an object-store URI such as "
                          "s3://bucket/prefix (default: ./results)")
    out.add_argument("--name", type=_name, default=None,
                     help="experiment name (default: <task>-<algo>-<UTC timestamp>)")
    out.add_argument("--resume", action="store_true",
                     help="continue the experiment --name from where it stopped")
    out.add_argument("--address", default=None,
                     help="Ray cluster address (default: $RAY_ADDRESS, else start a local Ray)")
    out.add_argument("--num-cpus", type=positive_int, default=None,
                     help="CPUs for a local Ray (default: all of this machine's)")
    out.add_argument("--verbose", action="store_true", help="show Ray's own logs and progress")
    out.add_argument("--no-report", action="store_true",
                     help="skip writing report.html (python -m pipelines.report) at the end")
    out.add_argument("--max-failures", type=non_negative_int, default=0,
                     help="retries of a failed trial, from its last checkpoint where it has one "
                          "(default: 0)")
    from pipelines import trackers

    trackers.add_flags(parser)
    return parser


def check_cross_flags(args: argparse.Namespace) -> None:
    """Flags that only one algorithm or scheduler uses (one line, exit 2 otherwise)."""
    flag = lambda name: getattr(args, name, None)  # noqa: E731 - a partial namespace has fewer
    if flag("algo") != "bayesopt":
        if flag("bo_init") is not None:
            fail("--bo-init applies only to --algo bayesopt")
        if flag("warm_start") is not None:
            fail("--warm-start applies only to --algo bayesopt")
    if flag("scheduler") == "fifo" and flag("max_t") is not None:
        fail("--max-t applies only to --scheduler asha")
    if flag("algo") == "grid" and "num_samples" in (flag("_given") or ()):
        # Ray Tune would repeat the grid num_samples times; this grid runs each combination
        # once, so a number here is a question the run would answer wrongly: refuse it.
        fail("--num-samples applies only to --algo random and bayesopt; "
             "--algo grid runs every combination of the space once")


def finish_args(args: argparse.Namespace, task: str) -> argparse.Namespace:
    """Cross-flag checks and defaults that argparse cannot express."""
    if args.resume and not args.name:
        fail("--resume needs --name of the experiment to continue")
    if not args.resume:
        # On --resume the algorithm and scheduler come from experiment.json: the runner checks
        # these once it has adopted them (``check_cross_flags``), not against today's defaults.
        check_cross_flags(args)
    if args.warm_start is not None and "://" not in args.warm_start:
        if os.path.isdir(args.warm_start):
            # An experiment's folder, most likely: its trials.parquet is the file to read.
            inside = os.path.join(args.warm_start, "trials.parquet")
            hint = f"; pass {inside}" if os.path.isfile(inside) else ""
            fail(f"--warm-start '{args.warm_start}' is a folder, not a trials Parquet file{hint}")
        if not os.path.isfile(args.warm_start):
            fail(f"--warm-start file '{args.warm_start}' does not exist")
    if args.address is None:
        args.address = os.environ.get("RAY_ADDRESS") or None
    if args.name is None:
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        args.name = f"{task}-{args.algo}-{stamp}"
    return args
