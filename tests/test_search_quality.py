"""benchmarks/search_quality.py's seed-by-seed comparison: the counts behind "is a gap between
two medians a pattern over seeds or a few of them"."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys

import pytest

from tests.helpers import REPO

BENCHMARKS = os.path.join(REPO, "benchmarks")


@pytest.fixture(scope="module")
def sq():
    saved = dict(os.environ)  # the module sets BLAS thread counts for its own process
    sys.path.insert(0, BENCHMARKS)
    try:
        yield importlib.import_module("search_quality")
    finally:
        sys.path.remove(BENCHMARKS)
        os.environ.clear()
        os.environ.update(saved)


def _cells(regrets: dict[tuple[str, str], list[float]]) -> dict:
    return {(problem, 1, 40, method): {"regrets": values}
            for (problem, method), values in regrets.items()}


def test_paired_counts_each_problem_and_seed_and_leaves_ties_out_of_the_test(sq):
    cells = _cells({
        ("p1", "bayesopt"): [0.1, 0.2, 0.0, 0.5],
        ("p1", "gp"): [0.2, 0.1, 0.0, 0.6],
        ("p2", "bayesopt"): [0.01, 0.02, 0.3 + 1e-12, 0.4],
        ("p2", "gp"): [0.02, 0.03, 0.3, 0.5],
        ("r1", "bayesopt"): [9.0] * 4,  # another group: never counted for "synthetic"
        ("r1", "gp"): [0.0] * 4,
    })
    kinds = {"p1": "synthetic", "p2": "synthetic", "r1": "real"}
    lower, tied, higher, p_value = sq.paired(cells, ["p1", "p2", "r1"], kinds, "synthetic", 1, 40,
                                             "bayesopt", "gp")
    assert (lower, tied, higher) == (5, 2, 1)
    assert p_value == pytest.approx(0.21875)  # two-sided, 5 of 6 untied pairs: 14/64
    assert sq.paired(cells, ["p1", "p2", "r1"], kinds, "all", 1, 40, "bayesopt", "gp")[:3] == \
        (5, 2, 5)
    # A method or budget the run lacks: no counts rather than counts over part of the group.
    assert sq.paired(cells, ["p1", "p2"], kinds, "synthetic", 1, 40, "bayesopt", "tpe") is None
    assert sq.paired(cells, ["p1", "p2"], kinds, "synthetic", 4, 40, "bayesopt", "gp") is None


def test_differences_of_polish_near_the_optimum_are_ties(sq):
    # Both methods at 1e-6 .. 1e-4 of the way from the optimum to a random draw: which is lower
    # says how far the last step was polished. Counted as wins, they made a sign test look
    # decisive on problems where every method had found the optimum.
    kinds = {"p": "synthetic"}
    cells = _cells({("p", "bayesopt"): [1e-6, 3e-6, 1.2e-5, 0.004, 0.0],
                    ("p", "gp"): [3e-6, 1.9e-5, 1e-5, 0.002, 0.1]})
    assert sq.paired(cells, ["p"], kinds, "synthetic", 1, 40, "bayesopt", "gp")[:3] == (1, 3, 1)


def test_paired_p_value_is_small_only_when_one_side_wins_consistently(sq):
    kinds = {"p": "synthetic"}
    always = _cells({("p", "bayesopt"): [0.0] * 10, ("p", "gp"): [1.0] * 10})
    half = _cells({("p", "bayesopt"): [0.0, 1.0] * 5, ("p", "gp"): [1.0, 0.0] * 5})
    assert sq.paired(always, ["p"], kinds, "synthetic", 1, 40, "bayesopt", "gp")[3] < 0.01
    assert sq.paired(half, ["p"], kinds, "synthetic", 1, 40, "bayesopt", "gp")[3] == 1.0


def test_the_run_prints_paired_records_for_every_pair_of_methods():
    proc = subprocess.run(
        [sys.executable, os.path.join(BENCHMARKS, "search_quality.py"), "--problems", "branin",
         "--budgets", "4,8", "--seeds", "3", "--methods", "random,bayesopt", "--parallel", "1",
         "--timing-repeats", "1"],
        capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    paired = [r for r in records if r["record"] == "paired"]
    assert sorted(r["budget"] for r in paired) == [4, 8]
    for r in paired:
        assert (r["method"], r["against"], r["group"]) == ("bayesopt", "random", "synthetic")
        assert r["lower"] + r["tied"] + r["higher"] == 3  # one problem, three seeds
        assert 0.0 <= r["sign_test_p"] <= 1.0
    assert "seed by seed" in proc.stdout


def test_the_ablation_leaves_out_only_the_candidates_near_the_incumbent(sq, monkeypatch):
    from pipelines.searchers import _bayesopt

    calls = []
    original = _bayesopt._MixedSpaceSearch._near

    def counted(self, centre, rng):
        calls.append(self.N_NEAR)
        return original(self, centre, rng)

    monkeypatch.setattr(_bayesopt._MixedSpaceSearch, "_near", counted)
    problem = sq.all_problems()["branin"]
    values, _ = sq.run_method("bayesopt", problem, 0, 8, 1)
    assert len(values) == 8 and calls and set(calls) == {_bayesopt._MixedSpaceSearch.N_NEAR}
    calls.clear()
    values, _ = sq.run_method("bo-no-near", problem, 0, 8, 1)
    assert len(values) == 8 and not calls
