"""The default Adam fine-tuning space: pure data, a small grid, sound ranges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from search_spaces.loader import load_space


def test_loads_and_has_a_small_grid():
    space = load_space("adam_finetune")
    grid = space.grid()
    assert 2 <= len(grid) <= 8
    assert len({tuple(sorted(c.items())) for c in grid}) == len(grid)
    assert {c["lr"] for c in grid} == {3e-3, 1e-2}
    for config in grid:
        assert space.check_config(config) == config


def test_schedule_parameters_are_conditional():
    space = load_space("adam_finetune")
    for config in space.sample(60, seed=0):
        schedule = config["schedule"]
        assert ("step_size" in config) == (schedule == "step")
        assert ("gamma_step" in config) == (schedule == "step")
        assert ("gamma_exp" in config) == (schedule == "exponential")
        assert 0.9 <= 1 - config["one_minus_beta2"] <= 0.9999
        assert config["optimizer"] in ("adam", "adamw")


def test_log_scale_spreads_learning_rates_over_decades():
    lrs = [c["lr"] for c in load_space("adam_finetune").sample(200, seed=1)]
    # Uniform in log10 over [-5, -1]: about a quarter of the draws per decade.
    below_1e4 = sum(lr < 1e-4 for lr in lrs) / len(lrs)
    assert 0.12 < below_1e4 < 0.38


def test_reading_the_space_imports_no_torch():
    code = (
        "import sys, search_spaces.adam_finetune as m; m.SPACE.validate(); "
        "sys.exit(1 if 'torch' in sys.modules or 'ray' in sys.modules else 0)"
    )
    assert (
        subprocess.run(
            [sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1]
        ).returncode
        == 0
    )
