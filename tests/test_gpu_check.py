"""benchmarks/gpu_check.py is meant for a lent GPU machine that has PyTorch but no Ray: it must run
the trainables' loop with Ray (and the search packages) impossible to import. Here it runs on the
CPU, tiny, so only its wiring is checked, not any speed."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from tests.helpers import REPO as ROOT

# Blocks the packages the device machine lacks, then runs the script as ``python gpu_check.py``.
_RUN_WITHOUT_RAY = """
import runpy, sys
for name in ("ray", "bayes_opt", "optuna", "pyarrow"):
    sys.modules[name] = None  # any import of them raises ImportError
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_check_runs_the_loop_without_ray_and_prints_each_precision():
    script = os.path.join(ROOT, "benchmarks", "gpu_check.py")
    proc = subprocess.run(
        [sys.executable, "-c", _RUN_WITHOUT_RAY, script, "--device", "cpu", "--epochs", "2",
         "--images", "40", "--image-size", "16", "--batch-size", "16",
         "--precisions", "fp32,bf16"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert [(r["model"], r["precision"]) for r in rows] == [
        ("small_cnn", "fp32"), ("small_cnn", "bf16"), ("resnet18", "fp32"), ("resnet18", "bf16")]
    for row in rows:
        assert row["samples_per_second"] > 0 and row["device"] == "cpu"
        assert 0.0 <= row["val_accuracy"] <= 1.0
    # small_cnn learns the offline digits task even in two epochs: the loop really trained.
    assert all(r["val_accuracy"] > 0.5 for r in rows if r["model"] == "small_cnn")
    table = proc.stdout.split("\n\n")[-1].splitlines()
    assert table[0].split()[:5] == ["model", "precision", "samples/s", "vs", "fp32"]
    # Each model's fp32 row is its own baseline; the bf16 ratio is a measured speed, so only
    # its form is checked (it can itself read 1.00x on a CPU).
    ratios = {(cells[0], cells[1]): cells[3] for cells in map(str.split, table[1:]) if cells}
    assert set(ratios) == {(r["model"], r["precision"]) for r in rows}
    assert ratios[("small_cnn", "fp32")] == ratios[("resnet18", "fp32")] == "1.00x"
    assert all(re.fullmatch(r"\d+\.\d\dx", ratio) for ratio in ratios.values())


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.skipif(_has_cuda(), reason="this machine has a CUDA device")
def test_gpu_check_refuses_cuda_where_there_is_none():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "benchmarks", "gpu_check.py")],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: --device cuda but torch sees no CUDA device (use --device cpu)"]
