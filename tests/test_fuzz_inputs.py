"""Property-based fuzzing of the two places bad input enters: space files and CLI flags.

- ``load_space(path)`` either returns a validated Space or raises SpaceError with a one-line
  message, for any file: random spaces in the space language (bounds that are nan, inf,
  negative, swapped, huge or not numbers; random grids and ``when`` conditions; unknown names),
  syntax errors, files that raise at import, files without SPACE.
- ``main(argv)`` of ``pipelines.svm`` and ``pipelines.finetune``, given one bad flag among valid
  ones, exits with code 2 and one ``error:`` line on stderr, with no traceback and nothing
  written. Only inputs that must be rejected before Ray are generated, and ``prepare`` (the
  last step before Ray) is wrapped so that an input it accepts fails the test instead of
  starting Ray.

Derandomized (the same examples on every run) and without Hypothesis's example database, so CI
is reproducible (Hypothesis still keeps a small cache in .hypothesis/, which ignores itself).
The inputs the fuzzers once found escaping (ints beyond float range, numpy arrays, sys.exit at
import, messages and argv values with line breaks, flag values accepted until Ray failed on
them) are generated like any other and pinned by name at the end of the file as regression
tests. "One line" means one line by ``str.splitlines`` (any line break, not only ``\n``).
Runs in about 25-30 s on 2 busy cores.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import tempfile

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from search_spaces.loader import load_space
from search_spaces.space import Space, SpaceError

FUZZ = settings(deadline=None, derandomize=True, database=None, print_blob=False,
                suppress_health_check=[HealthCheck.function_scoped_fixture,
                                       HealthCheck.too_slow, HealthCheck.data_too_large])


def _src_list(items) -> str:
    return "[" + ", ".join(items) + "]"


# --- space files -----------------------------------------------------------------------------
_NAMES = ["a", "b", "kernel", "C", "gamma", "n"]
_BAD_NAMES = ["a b", "1x", "", "x-y", "class", "None", "1"]
# Values that make valid choices, grids and conditions.
_SMALL = ["'rbf'", "'linear'", "0", "1", "2", "3", "0.5", "True", "None", "'a b'"]
_SPECIAL_NUMBERS = ["float('nan')", "float('inf')", "-float('inf')", "math.nan", "math.inf",
                    "1e309", "-1e309", "np.nan", "np.float64('nan')", "np.float64(0.25)",
                    "np.int64(3)", "np.float32(2.5)", "2 ** 0.5 ** 2", "5e-324",
                    "1.7976931348623157e308", "-1e308", "0.1 + 0.2", "-0.0", "1e-300"]
_NON_NUMBERS = ["'a'", "'1'", "'nan'", "None", "True", "False", "[1, 2]", "{}", "(1,)", "1j",
                "b'x'", "object()", "Float", "...", "'a\\nb'", "lambda: 1", "range(3)",
                "np.array(0.5)", "[]", "set()"]
# Once escaped load_space (OverflowError, an array's ambiguous truth value): see the end.
_HUGE_INTS = ["10 ** 400", "-(10 ** 400)", "2 ** 1024", "int('9' * 400)"]
_ARRAYS = ["np.array([1, 2])", "np.zeros((2, 2))"]


def _literal():
    """Any value, mostly a wrong one: numbers of every kind, specials, non-numbers."""
    return st.one_of(
        st.integers(-10**6, 10**6).map(repr),
        st.floats(allow_nan=False, allow_infinity=False).map(repr),
        st.sampled_from(_SMALL),
        st.sampled_from(_SPECIAL_NUMBERS),
        st.sampled_from(_NON_NUMBERS),
        st.sampled_from(_HUGE_INTS),
        st.sampled_from(_ARRAYS),
    )


def _faulty(draw) -> bool:
    """Whether one field of a parameter is made wrong (about one field in eight)."""
    return draw(st.integers(0, 7)) == 0


@st.composite
def _numeric_param(draw, kind: str):
    """(source, values a condition may name or None for continuous)."""
    if kind == "Int":
        low = draw(st.integers(-3, 5))
        high = low + draw(st.sampled_from([1, 2, 5, 40]))
        grid_ok = [str(v) for v in range(low, high + 1)][:6]
        log_low = 1
    else:
        low = draw(st.sampled_from([0.001, 0.1, 1.0, 2.5] + ([] if kind == "LogFloat" else [-1.0, 0.0])))
        high = low + draw(st.sampled_from([0.5, 9.0, 1000.0]))
        grid_ok = [repr(low), repr(high), repr((low + high) / 2)]
        log_low = 0.001
    lo, hi = repr(low), repr(high)
    if _faulty(draw):
        lo, hi = draw(st.sampled_from([(hi, lo), (lo, lo), (draw(_literal()), hi),
                                       (lo, draw(_literal())), ("0", hi)]))
    args = [lo, hi]
    if kind != "LogFloat" and draw(st.booleans()):
        log = draw(st.sampled_from(["True", "False"]) if not _faulty(draw)
                   else st.sampled_from(["1", "None", "'yes'"]))
        if log == "True" and lo == repr(low) and low <= 0:
            args[0] = repr(log_low)  # a valid log range, unless a fault chose the bounds
        args.append(f"log={log}")
    if draw(st.booleans()):
        grid = draw(st.lists(st.sampled_from(grid_ok), min_size=1, max_size=3, unique=True))
        if _faulty(draw):
            grid.append(draw(_literal()))
        args.append(f"grid={_src_list(grid)}")
    values = None if kind != "Int" else grid_ok
    return f"{kind}({', '.join(args)}", values


@st.composite
def _discrete_param(draw, kind: str):
    if kind == "Categorical":
        choices = draw(st.lists(st.sampled_from(_SMALL), min_size=1, max_size=4, unique=True))
        if _faulty(draw):
            choices = draw(st.sampled_from([[], choices + choices[:1],
                                            choices + [draw(_literal())]]))
        choices_src = _src_list(choices)
        if draw(st.integers(0, 9)) == 0:
            choices_src = draw(_literal())  # not a list at all
        args = [choices_src]
        if draw(st.booleans()):
            grid = draw(st.lists(st.sampled_from(choices), max_size=3)) if choices else []
            if _faulty(draw):
                grid.append(draw(_literal()))
            args.append(f"grid={_src_list(grid)}")
        return f"Categorical({', '.join(args)}", choices
    value = draw(st.sampled_from(_SMALL))
    if _faulty(draw):
        value = draw(_literal())
    args = [value]
    if _faulty(draw):
        args.append(f"grid=[{value}]")
    return f"Fixed({', '.join(args)}", [value]


@st.composite
def _space_call(draw) -> str:
    """Space(...) source: mostly sound parameters with a fault here and there."""
    form = draw(st.sampled_from(["kwargs", "kwargs", "kwargs", "dict", "bad names"]))
    pool = _NAMES if form != "bad names" else _NAMES + _BAD_NAMES
    names = draw(st.lists(st.sampled_from(pool), min_size=0 if form != "kwargs" else 1,
                          max_size=4, unique=True))
    discrete: dict[str, list[str]] = {}  # name -> values a condition on it may list
    rendered = []
    for name in names:
        kind = draw(st.sampled_from(["Float", "LogFloat", "Int", "Categorical"] * 3
                                    + ["Fixed", "other"]))
        if kind == "other":
            rendered.append((name, draw(st.one_of(_literal(), st.sampled_from(
                ["Float", "Space()", "Float(0, 1, bogus=1)", "Float(0)", "Categorical()",
                 "Int(1, 2, 3)", "Space(a=Float(0, 1))", "Fixed()"])))))
            continue
        if kind in ("Float", "LogFloat", "Int"):
            src, values = draw(_numeric_param(kind))
        else:
            src, values = draw(_discrete_param(kind))
        if draw(st.booleans()):
            src += ", when=" + draw(_when(name, names, discrete))
        rendered.append((name, src + ")"))
        if values:  # a condition needs a discrete parent with values to name
            discrete[name] = values
    if form == "kwargs":
        inner = [f"{name}={param}" for name, param in rendered]
    else:
        items = [f"{name!r}: {param}" for name, param in rendered]
        if form == "bad names" and draw(st.booleans()):
            items.append("1: Float(0, 1)")
        inner = ["{" + ", ".join(items) + "}"]
    space_name = draw(st.sampled_from(["", "", "name='x'", "name=5"]))
    return f"Space({', '.join(inner + ([space_name] if space_name else []))})"


def _when(name: str, names: list[str], discrete: dict):
    @st.composite
    def build(draw) -> str:
        if discrete and not _faulty(draw):
            parent = draw(st.sampled_from(sorted(discrete)))
            values = draw(st.lists(st.sampled_from(discrete[parent]), min_size=1, max_size=3))
            return "{" + f"{parent!r}: {_src_list(values)}" + "}"
        fault = draw(st.sampled_from(["unknown", "self", "later", "continuous", "empty",
                                      "value", "scalar", "not a mapping"]))
        parent = {"unknown": "unknown", "self": name}.get(fault)
        if parent is None:
            parent = draw(st.sampled_from(names))  # maybe later (a cycle) or continuous
        if fault == "not a mapping":
            return draw(_literal())
        values = {"empty": "[]", "scalar": draw(_literal())}.get(
            fault, _src_list([draw(_literal())]))
        return "{" + f"{parent!r}: {values}" + "}"

    return build()


_HEADERS = ["from search_spaces.space import *"] * 12 + [
    "from search_spaces.space import Categorical, Fixed, Float, Int, LogFloat, Space",
    "from search_spaces.space import Space",
    "",
]
_EXCEPTIONS = ["ValueError", "TypeError", "RuntimeError", "ImportError", "KeyError",
               "ZeroDivisionError", "Exception", "SpaceError", "OSError", "AssertionError",
               "UnicodeError", "NotImplementedError", "SystemExit", "BaseException"]
_RAISING = ["1 / 0", "import no_such_module_for_fuzzing", "open('/no/such/dir/file')",
            "assert False, 'nope'", "def f():\n    return f()\nf()", "[][1]", "{}['k']",
            "Space().validate()", "int('x')", "None.x", "Float(0, 1).check()",
            # BaseException at import, and a message on several lines
            "raise SystemExit(3)", "import sys; sys.exit('bye')", "sys.exit()",
            "raise GeneratorExit('g')", "raise ValueError('first line\\nsecond line')",
            "raise RuntimeError('a\\r\\nb\\u2028c\\x85d')"]


@st.composite
def _raising(draw) -> str:
    if draw(st.booleans()):
        return draw(st.sampled_from(_RAISING))
    exc = draw(st.sampled_from(_EXCEPTIONS))
    # Any text, line breaks of every kind included (\n, \r, \x0b, \x1c, \x85, \u2028, ...).
    message = draw(st.text(st.characters(exclude_categories=["Cs"]), max_size=20))
    return f"raise {exc}({message!r})"


_MANGLES = ["(", ")", "]", "}", ":", "=", "'", '"""', "\\", "\t", " if", ",,", "λ", "\x00",
            "\n  ", "@", "$", "SPACE ="]


@st.composite
def space_files(draw):
    """Source (str, or bytes for undecodable files) of a space module."""
    kind = draw(st.sampled_from(["space"] * 6 + ["no SPACE", "raises", "syntax", "garbage"]))
    if kind == "garbage":
        return draw(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
    lines = [draw(st.sampled_from(_HEADERS))]
    lines += [line for line in ("import math", "import numpy as np", "import sys")
              if draw(st.integers(0, 19))]
    call = draw(_space_call())
    if kind == "space":
        lines.append(f"SPACE = {call}")
    elif kind == "no SPACE":
        template = draw(st.sampled_from(["OTHER = {s}", "SPACE = {v}", "SPACE = Space",
                                         "SPACE = [{s}]", "def SPACE():\n    return {s}",
                                         "space = {s}", "pass"]))
        lines.append(template.format(s=call, v=draw(_literal())))
    elif kind == "raises":
        lines.append(draw(_raising()))
        lines.append(f"SPACE = {call}")
    else:
        body = f"SPACE = {call}"
        at = draw(st.integers(0, len(body)))
        junk = draw(st.sampled_from(_MANGLES))
        body = body[:at] + junk + body[at:] if draw(st.booleans()) else body[:at]
        lines.append(body)
    return "\n".join(lines) + "\n"


def _write_space(folder: str, source) -> str:
    # One name per content: importlib keeps bytecode by path, size and mtime, so rewriting one
    # path within a second could load another example's code; and a failure's replay must see
    # the same path (it is in the error message).
    data = source if isinstance(source, bytes) else source.encode("utf-8", "surrogatepass")
    path = os.path.join(folder, f"space_{hashlib.sha1(data).hexdigest()}.py")
    with open(path, "wb") as f:
        f.write(data)
    return path


def check_load_space(path: str) -> None:
    """The loader's contract for one file."""
    escaped = None
    try:
        space = load_space(path)
    except SpaceError as exc:
        message = str(exc)
        assert message.splitlines() == [message], repr(message)  # one line, no line break
        return
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: B036 (SystemExit included: it is a finding)
        escaped = f"{type(exc).__name__}: {exc!r}"
    # Raised outside the handler, so Hypothesis keys the failure on this line alone.
    assert escaped is None, f"load_space raised {escaped}"
    assert isinstance(space, Space)
    assert sorted(space.order) == sorted(space.params)  # validated: conditions ordered


@settings(FUZZ, max_examples=400)
@given(source=space_files())
def test_load_space_returns_a_space_or_one_line_space_error(tmp_path, source):
    check_load_space(_write_space(str(tmp_path), source))


def test_space_strategy_reaches_both_outcomes(tmp_path):
    # The strategy is only useful if it makes valid spaces as well as broken ones.
    valid = "from search_spaces.space import *\nSPACE = Space(kernel=Categorical(['rbf', 'linear']), C=LogFloat(0.1, 10, grid=[1], when={'kernel': ['rbf']}))\n"
    assert isinstance(load_space(_write_space(str(tmp_path), valid)), Space)
    outcomes = set()

    @settings(FUZZ, max_examples=150)
    @given(source=space_files())
    def collect(source):
        try:
            load_space(_write_space(str(tmp_path), source))
            outcomes.add("space")
        except SpaceError:
            outcomes.add("error")

    collect()
    assert outcomes == {"space", "error"}


# --- CLI flags -------------------------------------------------------------------------------
# Every generated command line is valid flags plus exactly one fault that must be rejected
# before Ray (README: "one line starting `error:`, exit code 2, before Ray starts, nothing
# written"). Flags come from the pipelines' real parsers, so a new typed flag is fuzzed too.
_PIPELINES = ("svm", "finetune")


def _module(pipeline: str):
    import importlib

    return importlib.import_module(f"pipelines.{pipeline}")


def _actions(pipeline: str) -> dict[str, argparse.Action]:
    parser = _module(pipeline).build_parser()
    return {a.dest: a for a in parser._actions if a.option_strings and a.dest != "help"}


def _long_options(pipeline: str) -> list[str]:
    return [o for a in _actions(pipeline).values() for o in a.option_strings]


def _label(action: argparse.Action) -> str:
    return "argument " + "/".join(action.option_strings)


def _parses(kind, text: str) -> bool:
    try:
        kind(text)
        return True
    except (ValueError, OverflowError):
        return False


# Text a user might pass: anything but NUL and surrogates (argv cannot hold them), line breaks
# of every kind included (an argv value is echoed into the one error line).
_ARG_TEXT = st.text(st.characters(exclude_categories=["Cs"], exclude_characters="\x00"),
                    max_size=12)
_LINE_BREAKS = ["\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028",
                "\u2029"]


@st.composite
def _with_line_break(draw, prefix: str = "", suffix: str = "") -> str:
    """prefix + text holding at least one line break + suffix (never an existing name)."""
    text = draw(_ARG_TEXT.filter(lambda t: "/" not in t))
    at = draw(st.integers(0, len(text)))
    return prefix + text[:at] + draw(st.sampled_from(_LINE_BREAKS)) + text[at:] + suffix
_NOT_INT = st.one_of(_ARG_TEXT, st.sampled_from(["1.5", "1e3", "0x10", "one", "", " ", "nan"])) \
    .filter(lambda t: not _parses(int, t))
_NOT_FLOAT = st.one_of(_ARG_TEXT, st.sampled_from(["one", "1,5", "", "0x1", "1/2", "--"])) \
    .filter(lambda t: not _parses(float, t))


def _parse_faults(pipeline: str):
    """Faults argparse itself rejects, derived from the parser's actions."""
    from pipelines import cli

    strategies = []
    for action in _actions(pipeline).values():
        flag, label = action.option_strings[0], _label(action)
        bad = None
        if action.type is cli.positive_int:
            bad = st.one_of(st.integers(max_value=0).map(str), _NOT_INT)
        elif action.type is cli.configs_per_trial:  # "auto" or a whole number >= 1
            bad = st.one_of(st.integers(max_value=0).map(str),
                            _NOT_INT.filter(lambda t: t != "auto"),
                            st.sampled_from(["Auto", "AUTO", "auto ", "0", "-1"]))
        elif action.type is cli.non_negative_int:
            bad = st.one_of(st.integers(max_value=-1).map(str), _NOT_INT)
        elif action.type is cli.seed_int:  # 0 .. 2**32 - 1, what numpy and scikit-learn take
            bad = st.one_of(st.integers(max_value=-1).map(str),
                            st.integers(min_value=2**32).map(str),
                            st.sampled_from([str(2**32), str(2**64), "1" + "0" * 400]), _NOT_INT)
        elif action.type is int:
            bad = _NOT_INT
        elif action.type is float:
            bad = _NOT_FLOAT
        elif action.type is cli._reduction_factor:
            bad = st.one_of(st.floats(max_value=1).map(repr),
                            st.sampled_from(["nan", "inf", "Infinity", "1e400", "-1e400"]),
                            _NOT_FLOAT)
        elif action.type is cli.fraction:  # above 0, at most 1
            bad = st.one_of(st.floats(max_value=0).map(repr),
                            st.floats(min_value=1, exclude_min=True).map(repr),
                            st.sampled_from(["nan", "inf", "-0.0", "1.0000001", "1e400"]),
                            _NOT_FLOAT)
        elif action.type is cli._name:
            bad = st.one_of(
                st.one_of(_ARG_TEXT, _with_line_break("a"),
                          st.sampled_from(["-x", ".hidden", "a/b", "a b", "é", "", "a\nb"]))
                .filter(lambda t: not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", t)),
                # well-formed but too long: at most 100 characters
                st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._-]{100,140}", fullmatch=True))
        elif action.choices is not None:
            bad = _ARG_TEXT.filter(lambda t, c=tuple(action.choices): t not in c)
        elif action.type is not None:
            raise AssertionError(f"{flag}: a flag type without a bad-value strategy here")
        if bad is not None:
            strategies.append(bad.map(lambda v, f=flag, lab=label: ([f, v], lab)))
        if action.nargs == 0:  # store_true: a value is an error
            strategies.append(st.just(([f"{flag}=yes"], "ignored explicit argument")))
        else:  # a flag with no value at the end of the line
            strategies.append(st.just(([flag], f"{label}: expected one argument")))
    options = _long_options(pipeline)
    unknown = st.from_regex(r"--[a-z][a-z0-9-]{0,10}", fullmatch=True).filter(
        lambda f: not any(o.startswith(f) for o in options))
    strategies.append(unknown.map(lambda f: ([f], "unrecognized arguments")))
    strategies.append(st.sampled_from(["positional", "-x", "-Z9"]).map(
        lambda f: ([f], "unrecognized arguments")))
    strategies.append(_with_line_break("--x").map(lambda f: ([f], "unrecognized arguments")))
    return st.one_of(*strategies)


_INT_1_9 = st.integers(1, 9).map(str)


def _range_faults(pipeline: str):
    """Checks main() runs right after parsing, before anything else."""
    nums = lambda values: st.sampled_from(values)  # noqa: E731
    # --flag=value: argparse would read a separate "-inf" as an option, not a value.
    if pipeline == "svm":
        return st.one_of(
            st.integers(max_value=1).map(lambda v: ([f"--cv={v}"], "--cv must be at least 2")),
            nums(["0", "-1", "-0.5", "nan", "-inf", "-1e400", "inf", "1e400", "Infinity"]).map(
                lambda v: ([f"--cpus-per-trial={v}"], "--cpus-per-trial must be a number above 0")),
            nums(["0", "1", "-0.2", "1.5", "nan", "inf", "-inf"]).map(
                lambda v: ([f"--test-size={v}"], "--test-size must be between 0 and 1")),
        )
    message = "--gpus-per-worker must be a number >= 0 and --cpus-per-worker a number > 0"
    return st.one_of(
        nums(["-1", "-0.5", "-inf", "nan", "inf", "1e400"]).map(
            lambda v: ([f"--gpus-per-worker={v}"], message)),
        nums(["0", "-1", "-inf", "-0.0", "nan", "inf", "1e400"]).map(
            lambda v: ([f"--cpus-per-worker={v}"], message)),
    )


def _flag_faults():
    """finish_args: cross-flag rules."""
    return st.one_of(
        st.just((["--resume"], "--resume needs --name")),
        st.tuples(st.sampled_from(["grid", "random"]), _INT_1_9).map(
            lambda t: (["--algo", t[0], "--bo-init", t[1]], "--bo-init applies only to --algo bayesopt")),
        st.sampled_from(["grid", "random"]).map(
            lambda a: (["--algo", a, "--warm-start", "{work}/data.csv"],
                       "--warm-start applies only to --algo bayesopt")),
        _INT_1_9.map(lambda t: (["--scheduler", "fifo", "--max-t", t],
                                "--max-t applies only to --scheduler asha")),
        _INT_1_9.map(lambda n: (["--algo", "grid", "--num-samples", n],
                                "--num-samples applies only to --algo random and bayesopt")),
        st.just((["--algo", "bayesopt", "--warm-start", "{work}/missing.parquet"],
                 "does not exist")),
    )


_BAD_STORAGE = [("s3://bucket/prefix?region=x", "must not carry '?'"),
                ("s3:///prefix", "names no bucket"),
                ("nosuchscheme://x/y", "cannot be opened"),
                ("{work}/afile/sub", "is not a writable directory")]


# Built-in datasets: rows in the smallest and the largest class (more folds than the largest
# class has training rows cannot be made), and test sizes no stratified split of them can take
# (fewer test or train rows than classes): 150 rows/3 classes, 178/3, 569/2, 1797/10.
_SMALLEST_CLASS = {"iris": 50, "wine": 48, "breast_cancer": 212, "digits": 174}
_LARGEST_CLASS = {"iris": 50, "wine": 71, "breast_cancer": 357, "digits": 183}
_UNSPLITTABLE_TEST_SIZES = {"iris": ["0.001", "0.01", "0.99", "0.999"],
                            "wine": ["0.001", "0.01", "0.99", "0.999"],
                            "breast_cancer": ["0.0001", "0.001", "0.9999"],
                            "digits": ["0.0001", "0.001", "0.005", "0.999"]}


def _prepare_faults(pipeline: str):
    """prepare(): storage, experiment name, space, dataset, warm start, algorithm, ASHA."""
    name = st.from_regex(r"[a-z][a-z0-9_-]{0,8}", fullmatch=True)
    common = [
        st.sampled_from(_BAD_STORAGE).map(lambda s: (["--output", s[0]], s[1])),
        name.map(lambda n: (["--name", n], "already exists", n)),  # its folder is made first
        name.map(lambda n: (["--resume", "--name", n], "--resume: no experiment")),
        st.from_regex(r"nospace_[a-z0-9_]{0,8}", fullmatch=True).map(
            lambda s: (["--space", s], f"unknown space '{s}'")),
        st.sampled_from(["{work}/missing.py", "{work}/missing_dir/space.py"]).map(
            lambda s: (["--space", s], "does not exist")),
        st.sampled_from(["bad name!", "1abc", "a-b", "..", "-"]).map(
            lambda s: (["--space", s], "is not a module name")),
        st.just((["--space", "{work}/broken.py"], "failed to import")),
        st.just((["--space", "{work}/exits.py"], "failed to import: SystemExit")),
        st.just((["--space", "{work}/multiline.py"], "failed to import: ValueError")),
        st.sampled_from(["huge_bound.py", "huge_grid.py", "array_grid.py"]).map(
            lambda f: (["--space", "{work}/" + f], "parameter 'a': invalid definition")),
        _with_line_break("{work}/", ".py").map(lambda s: (["--space", s], "does not exist")),
        st.just((["--algo", "grid", "--space", "{work}/nogrid.py"],
                 "cannot be used with --algo grid")),
        st.just((["--algo", "bayesopt", "--space", "{work}/fixed_only.py"],
                 "cannot be used with --algo bayesopt")),
        st.just((["--algo", "bayesopt", "--warm-start", "{work}/junk.parquet"], "--warm-start:")),
        st.tuples(st.integers(1, 5), st.integers(1, 5)).map(
            lambda t: (["--scheduler", "asha", "--max-t", str(t[0]),
                        "--grace-period", str(t[0] + t[1])]
                       # fine-tuning's --max-t must be its --epochs (refused otherwise)
                       + (["--epochs", str(t[0])] if pipeline == "finetune" else []),
                       "exceeds --max-t")),
    ]
    if pipeline == "svm":
        task = [
            st.from_regex(r"nodataset_[a-z0-9]{0,6}", fullmatch=True).map(
                lambda d: (["--dataset", d], "unknown dataset")),
            st.just((["--dataset", "{work}/missing.csv", "--target", "y"], "does not exist")),
            st.just((["--dataset", "{work}/data.csv"], "needs --target")),
            st.just((["--dataset", "{work}/data.csv", "--target", "nope"], "is not in")),
            st.just((["--dataset", "{work}/notes.txt", "--target", "y"], "must end in .csv")),
            st.sampled_from(["iris", "wine", "digits"]).map(
                lambda d: (["--dataset", d, "--target", "y"], "--target applies only")),
            _with_line_break("{work}/", ".csv").map(
                lambda d: (["--dataset", d, "--target", "y"], "does not exist")),
            # splits the data cannot take: checked (by loading the data) before Ray
            st.tuples(st.sampled_from(sorted(_UNSPLITTABLE_TEST_SIZES)), st.integers(2, 5)).flatmap(
                lambda t: st.sampled_from(_UNSPLITTABLE_TEST_SIZES[t[0]]).map(
                    lambda ts: (["--dataset", t[0], f"--test-size={ts}", f"--cv={t[1]}"],
                                f"dataset '{t[0]}' cannot be split with test size {ts} and "
                                f"{t[1]}-fold CV"))),
            st.sampled_from(sorted(_SMALLEST_CLASS)).flatmap(
                lambda d: st.integers(_SMALLEST_CLASS[d], 10**6).map(
                    lambda cv: (["--dataset", d, f"--cv={cv}"],
                                f"too few for a test split and {cv}-fold CV"))),
            st.sampled_from(sorted(_LARGEST_CLASS)).flatmap(
                lambda d: st.integers(_LARGEST_CLASS[d] // 2 + 2, 10**4).map(
                    lambda cv: (["--dataset", d, "--test-size=0.5", f"--cv={cv}"],
                                f"{cv}-fold CV"))),
        ]
    else:
        task = [
            st.from_regex(r"nodataset_[a-z0-9]{0,6}", fullmatch=True).map(
                lambda d: (["--dataset", d], "unknown dataset")),
            st.just((["--dataset", "{work}/missing_dir/"], "does not exist")),
            st.sampled_from(["MNIST", "fashionmnist", "CIFAR10"]).map(
                lambda d: (["--dataset", d, "--data-root", "{work}/empty_root"], "not found")),
            st.from_regex(r"nomodel_[a-z0-9]{0,6}", fullmatch=True).map(
                lambda m: (["--model", m], f"unknown model '{m}'")),
            st.just((["--weights", "{work}/missing.pt"], "does not exist")),
            st.from_regex(r"noweights_[a-z]{0,6}", fullmatch=True).map(
                lambda w: (["--weights", w], "unknown weights")),
        ]
    return st.one_of(*common, *task)


def _benign(pipeline: str):
    """Valid values for flags that can neither cause nor hide a rejection."""
    values = {
        # No --num-samples: the default --algo grid refuses it.
        "seed": st.integers(0, 99).map(str),
        "max_concurrent": _INT_1_9, "split_seed": st.integers(0, 9).map(str),
        # Sizes a trial always fits in (a trial bigger than the machine is refused, on purpose).
        "num_cpus": st.integers(2, 9).map(str), "max_failures": st.integers(0, 3).map(str),
        "reduction_factor": st.sampled_from(["2", "3", "4.5"]),
        "algo": st.sampled_from(["grid", "random", "bayesopt"]),
        "scheduler": st.sampled_from(["fifo", "asha"]),
        # No HOST:PORT: prepare() probes one, and nothing listens here.
        "address": st.sampled_from(["ray://head:10001", "auto"]),
        "verbose": None,
        # svm
        "cv": st.integers(2, 5).map(str), "cpus_per_trial": st.sampled_from(["0.5", "1"]),
        "test_size": st.sampled_from(["0.1", "0.25", "0.5"]),
        # finetune
        "epochs": st.integers(1, 6).map(str), "no_baseline": None,
        "workers_per_trial": st.integers(1, 2).map(str), "keep_checkpoints": st.integers(1, 3).map(str),
        "gpus_per_worker": st.just("0"),
        "cpus_per_worker": st.sampled_from(["0.5", "1"]),
    }
    actions = _actions(pipeline)
    flags = []
    for dest, value in values.items():
        if dest not in actions:
            continue
        flag = actions[dest].option_strings[0]
        flags.append(st.just([flag]) if value is None else value.map(lambda v, f=flag: [f, v]))
    return st.lists(st.one_of(*flags), max_size=4).map(lambda xs: [t for x in xs for t in x])


@st.composite
def bad_command_lines(draw, pipeline: str):
    """(argv template, expected fragment of the error line, experiment folder to pre-create)."""
    # Pick the stage first: one_of flattens nested choices, and argparse's many flags would
    # otherwise crowd out the later checks.
    stage = draw(st.sampled_from(["parse"] * 3 + ["range", "flags"] * 1 + ["prepare"] * 3))
    fault = draw({"parse": _parse_faults, "range": _range_faults,
                  "flags": lambda p: _flag_faults(), "prepare": _prepare_faults}[stage](pipeline))
    tokens, expected, existing = (fault + (None,))[:3]
    argv = ["--output", "{work}/out"] + draw(_benign(pipeline)) + list(tokens)
    return argv, expected, existing


class AcceptedBeforeRay(Exception):
    """prepare() returned: the input passed every check and Ray would start next."""


def _make_work(root: str) -> str:
    work = tempfile.mkdtemp(dir=root)
    files = {
        "data.csv": "a,b,y\n1,2,0\n3,4,1\n",
        "notes.txt": "not a dataset\n",
        "junk.parquet": "not parquet\n",
        "afile": "a regular file\n",
        "broken.py": "from search_spaces.space import *\nSPACE = Space(C=Float(0, 1)\n",
        "nogrid.py": "from search_spaces.space import *\nSPACE = Space(lr=LogFloat(1e-4, 1e-1))\n",
        "fixed_only.py": "from search_spaces.space import *\nSPACE = Space(k=Fixed('rbf'))\n",
        # once escaped load_space (see the end of the file)
        "huge_bound.py": "from search_spaces.space import *\nSPACE = Space(a=Float(0, 10 ** 400))\n",
        "huge_grid.py": "from search_spaces.space import *\nSPACE = Space(a=Int(0, 5, grid=[10 ** 400]))\n",
        "array_grid.py": "from search_spaces.space import *\nimport numpy as np\n"
                         "SPACE = Space(a=Categorical(['rbf'], grid=[np.array([1, 2])]))\n",
        "exits.py": "import sys\nsys.exit('bye')\n",
        "multiline.py": "raise ValueError('first line\\nsecond line')\n",
    }
    for name, text in files.items():
        with open(os.path.join(work, name), "w") as f:
            f.write(text)
    os.mkdir(os.path.join(work, "empty_root"))
    return work


def _snapshot(root: str) -> set[str]:
    found = set()
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != "__pycache__"]  # Python's own bytecode of a space
        found.update(os.path.relpath(os.path.join(folder, n), root) for n in dirs + files)
    return found


@pytest.fixture
def before_ray_only(monkeypatch):
    """Ray can never start: an input prepare() accepts raises AcceptedBeforeRay instead."""
    import ray

    import pipelines.runner as runner

    real_prepare = runner.prepare

    def prepare(task, args):
        real_prepare(task, args)
        raise AcceptedBeforeRay(f"accepted: {vars(args)}")

    def start_ray(*args, **kwargs):
        raise AcceptedBeforeRay("start_ray called")

    monkeypatch.setattr(runner, "prepare", prepare)
    # Belt and braces, should run() ever reach Ray another way.
    monkeypatch.setattr(runner, "start_ray", start_ray)
    monkeypatch.setattr(ray, "init", start_ray)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return monkeypatch


def run_main(pipeline: str, argv: list[str], capsys) -> tuple[str | None, object, str, str]:
    """main(argv) in-process: (what went wrong other than an exit, exit code, stdout, stderr)."""
    capsys.readouterr()
    problem, code = None, None
    try:
        code = _module(pipeline).main(argv)
        problem = f"main returned {code!r} instead of exiting"
    except SystemExit as exc:
        code = exc.code
    except AcceptedBeforeRay as exc:
        problem = f"not rejected before Ray ({exc})"
    except Exception as exc:
        problem = f"escaped with a traceback: {type(exc).__name__}: {exc}"
    captured = capsys.readouterr()
    return problem, code, captured.out, captured.err


def check_rejected(pipeline: str, template: list[str], expected: str, existing: str | None,
                   root: str, monkeypatch, capsys) -> None:
    work = _make_work(root)
    if existing:
        os.makedirs(os.path.join(work, "out", existing))
    monkeypatch.chdir(work)  # relative defaults (./results, ./data) land in the sandbox
    argv = [t.replace("{work}", work) for t in template]
    before = _snapshot(work)
    problem, code, out, err = run_main(pipeline, argv, capsys)
    assert problem is None, f"{pipeline} {argv}: {problem}"
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, (argv, code, err)
    assert out == "", (argv, out)
    assert len(lines) == 1 and lines[0].startswith("error: "), (argv, err)
    assert "Traceback" not in err
    assert expected.replace("{work}", work) in lines[0], (argv, expected, lines[0])
    assert _snapshot(work) == before, (argv, sorted(_snapshot(work) ^ before))


@pytest.mark.parametrize("pipeline", _PIPELINES)
def test_bad_command_lines_exit_2_with_one_line_before_ray(pipeline, tmp_path, before_ray_only,
                                                           capsys):
    @settings(FUZZ, max_examples=200)
    @given(case=bad_command_lines(pipeline))
    def fuzz(case):
        template, expected, existing = case
        check_rejected(pipeline, template, expected, existing, str(tmp_path), before_ray_only,
                       capsys)

    fuzz()


@pytest.mark.parametrize("pipeline", _PIPELINES)
def test_the_sandbox_would_catch_an_accepted_input(pipeline, tmp_path, before_ray_only, capsys):
    # Valid flags reach the end of prepare(): the wrapper stops them there, so a fault the
    # pipeline failed to reject would show up as "not rejected before Ray", never as a Ray run.
    work = _make_work(str(tmp_path))
    before_ray_only.chdir(work)
    problem, code, _, err = run_main(pipeline, ["--output", f"{work}/out", "--seed", "1"], capsys)
    assert problem is not None and problem.startswith("not rejected before Ray"), (problem, err)
    assert not os.path.exists(os.path.join(work, "out"))


# --- regressions: inputs the fuzzers above once found escaping (now fixed in the source) ------
# Each is also generated by the strategies above; naming them here keeps them checked whatever
# Hypothesis draws. (input, a fragment the one-line SpaceError must hold)
_SPACE_REGRESSIONS = {
    # ints beyond float range: OverflowError in the Float/Int checks
    "huge bound": ("SPACE = Space(a=Float(0.001, 10 ** 400))", "parameter 'a': invalid definition"),
    "huge negative bound": ("SPACE = Space(a=Int(-(10 ** 400), 5))", "parameter 'a': invalid definition"),
    "huge int grid": ("SPACE = Space(a=Int(0, 5, grid=[10 ** 400]))", "parameter 'a': invalid definition"),
    "huge condition value": ("SPACE = Space(n=Int(0, 5), a=Float(0, 1, when={'n': [10 ** 400]}))",
                             "parameter 'a': condition value"),
    # numpy arrays compared with ==: "truth value of an array is ambiguous"
    "array in grid": ("SPACE = Space(a=Categorical(['rbf'], grid=[np.array([1, 2])]))",
                      "parameter 'a': invalid definition (ValueError"),
    "array fixed parent": ("SPACE = Space(k=Fixed(np.array([1, 2])), a=Float(0, 1, when={'k': [1]}))",
                           "parameter 'k': value array([1, 2]) is a ndarray"),
    # the space file ends the process: SystemExit is a BaseException, not an Exception
    "SystemExit at import": ("raise SystemExit(3)", "failed to import: SystemExit: 3"),
    "sys.exit at import": ("import sys; sys.exit('bye')", "failed to import: SystemExit: bye"),
    "bare sys.exit at import": ("import sys; sys.exit()", "failed to import: SystemExit"),
    # messages with line breaks: an import error's own text, a 2-D array's repr
    "multi-line import error": ("raise ValueError('first line\\nsecond line')",
                                "failed to import: ValueError: first line second line"),
    "other line breaks": ("raise RuntimeError('a\\r\\nb\\u2028c\\x85d\\x1ce')",
                          "failed to import: RuntimeError: a b c d e"),
    "multi-line repr": ("SPACE = Space(a=Float(np.zeros((2, 2)), 0.5))",
                        "parameter 'a': low and high must be numbers"),
}


@pytest.mark.parametrize("case", sorted(_SPACE_REGRESSIONS))
def test_former_space_loader_escapes_are_one_line_space_errors(case, tmp_path):
    code, fragment = _SPACE_REGRESSIONS[case]
    source = f"from search_spaces.space import *\nimport numpy as np\n{code}\n"
    path = _write_space(str(tmp_path), source)
    check_load_space(path)  # a Space or a one-line SpaceError, nothing else
    with pytest.raises(SpaceError) as info:
        load_space(path)
    assert fragment in str(info.value), str(info.value)


# Bad input that every check before Ray once accepted (prepare() returned: Ray would start and
# fail later, or be handed nan/inf resources), that escaped prepare() as a traceback, or whose
# error took two lines (an argv value's line break echoed). Each is now one ``error:`` line,
# exit 2, nothing written, before Ray. (pipeline, flags, a fragment of the error line)
_CLI_REGRESSIONS = {
    "space file with an int beyond float range": (
        "svm", ["--space", "{work}/huge_bound.py"], "parameter 'a': invalid definition (OverflowError"),
    "space file that calls sys.exit": (
        "finetune", ["--space", "{work}/exits.py"], "failed to import: SystemExit: bye"),
    "svm test-size leaves no test row per class": (
        "svm", ["--test-size", "0.001"], "dataset 'digits' cannot be split with test size 0.001"),
    "svm test-size leaves no train row per class": (
        "svm", ["--dataset", "iris", "--test-size", "0.99"],
        "dataset 'iris' cannot be split with test size 0.99"),
    "svm cv folds above class sizes": (
        "svm", ["--cv", "1000"], "too few for a test split and 1000-fold CV"),
    "svm cv folds above the train split's class sizes": (
        "svm", ["--dataset", "iris", "--test-size", "0.5", "--cv", "30"],
        "dataset 'iris' cannot be split with test size 0.5 and 30-fold CV"),
    "svm split seed 2**32": ("svm", ["--split-seed", str(2**32)],
                             "argument --split-seed: must be at most 4294967295"),
    "finetune split seed 2**32": ("finetune", ["--split-seed", str(2**32)],
                                  "argument --split-seed: must be at most 4294967295"),
    "svm seed 2**32": ("svm", ["--seed", str(2**32)], "argument --seed: must be at most 4294967295"),
    "finetune seed 2**64": ("finetune", ["--seed", str(2**64)], "argument --seed: must be at most"),
    "svm packs with asha": (
        "svm", ["--scheduler", "asha", "--configs-per-trial", "8"],
        "--configs-per-trial applies only to --algo grid or random with --scheduler fifo"),
    "svm packs with a tracker": (
        "svm", ["--configs-per-trial", "2", "--tensorboard"],
        "--configs-per-trial above 1 cannot be used with --tensorboard or --mlflow"),
    "svm zero configs per trial": (
        "svm", ["--configs-per-trial", "0"], "argument --configs-per-trial: must be at least 1"),
    "svm infinite cpus per trial": (
        "svm", ["--cpus-per-trial", "inf"], "--cpus-per-trial must be a number above 0, got inf"),
    "svm nan cpus per trial": (
        "svm", ["--cpus-per-trial", "nan"], "--cpus-per-trial must be a number above 0, got nan"),
    "finetune nan cpus per worker": (
        "finetune", ["--cpus-per-worker", "nan"],
        "--gpus-per-worker must be a number >= 0 and --cpus-per-worker a number > 0, got 0.0 and nan"),
    "finetune nan gpus per worker": (
        "finetune", ["--gpus-per-worker", "nan"],
        "--gpus-per-worker must be a number >= 0 and --cpus-per-worker a number > 0, got nan and 1.0"),
    "finetune infinite gpus per worker": (
        "finetune", ["--gpus-per-worker", "inf"], "a number > 0, got inf and 1.0"),
    "svm infinite reduction factor": (
        "svm", ["--scheduler", "asha", "--reduction-factor", "inf"],
        "argument --reduction-factor: must be a number greater than 1, got inf"),
    "finetune infinite reduction factor": (
        "finetune", ["--reduction-factor", "1e400"],
        "argument --reduction-factor: must be a number greater than 1, got inf"),
    "a 101-character name": ("svm", ["--name", "n" * 101],
                             "argument --name: must be at most 100 characters, got 101"),
    "a 101-character name (finetune)": ("finetune", ["--name", "a" * 100 + "1"],
                                        "argument --name: must be at most 100 characters"),
    "newline in --space": ("svm", ["--space", "x\ny.py"], "space file 'x y.py' does not exist"),
    "newline in --dataset": ("svm", ["--dataset", "a\nb.csv", "--target", "y"],
                             "dataset file 'a b.csv' does not exist"),
    "newline in an unknown flag": ("svm", ["--x\ny"], "unrecognized arguments: --x y"),
    "carriage return in --name": ("finetune", ["--name", "a\rb"], "argument --name:"),
    "line separator in --algo": ("svm", ["--algo", "grid\u2028"], "argument --algo: invalid choice"),
}


@pytest.mark.parametrize("case", sorted(_CLI_REGRESSIONS))
def test_former_cli_gaps_are_one_error_line_before_ray(case, tmp_path, before_ray_only, capsys):
    pipeline, tokens, fragment = _CLI_REGRESSIONS[case]
    check_rejected(pipeline, ["--output", "{work}/out", *tokens], fragment, None, str(tmp_path),
                   before_ray_only, capsys)


@pytest.mark.parametrize("pipeline", _PIPELINES)
def test_the_limits_themselves_are_accepted(pipeline, tmp_path, before_ray_only, capsys):
    # The bounds the regressions above sit just past: a seed of 2**32 - 1, a 100-character name,
    # a reduction factor just above 1 reach the end of prepare().
    work = _make_work(str(tmp_path))
    before_ray_only.chdir(work)
    argv = ["--output", f"{work}/out", "--seed", str(2**32 - 1), "--split-seed", str(2**32 - 1),
            "--name", "n" * 100, "--scheduler", "asha", "--reduction-factor", "1.0001"]
    problem, code, _, err = run_main(pipeline, argv, capsys)
    assert problem is not None and problem.startswith("not rejected before Ray"), (problem, err)


# --- a user's own SpaceError text, and a path, with line breaks: still one line -----------------
_USER_TEXT_WITH_BREAKS = {
    "SpaceError with a line break raised at import": "raise SpaceError('a\\nb')",
    "SpaceError with a line separator raised at import": "raise SpaceError('a\\u2028b')",
}


@pytest.mark.parametrize("case", sorted(_USER_TEXT_WITH_BREAKS))
def test_a_user_space_error_with_line_breaks_is_one_line(case, tmp_path):
    source = f"from search_spaces.space import *\n{_USER_TEXT_WITH_BREAKS[case]}\n"
    check_load_space(_write_space(str(tmp_path), source))


def test_a_space_path_with_a_line_break_is_one_line(tmp_path):
    check_load_space(os.path.join(str(tmp_path), "no\nsuch.py"))
