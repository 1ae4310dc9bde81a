"""Shared pytest fixtures."""

import pytest


@pytest.fixture(scope="session")
def s3_server():
    """A real S3-compatible server (moto, in its own process) on 127.0.0.1; see tests/s3_server.py."""
    from tests.s3_server import S3Server

    server = S3Server()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def svm_asha_run(tmp_path_factory):
    """One real ``python -m pipelines.svm`` run with ASHA, report on (the default).

    20 seeded random trials on digits: ASHA cuts some at the first fidelity rung and lets
    more than 8 reach the full one, so every figure of the report has real data.
    Returns ``(experiment folder, finished process)``.
    """
    from tests.helpers import run_module

    out = tmp_path_factory.mktemp("report-results")
    proc = run_module("pipelines.svm", "--algo", "random", "--num-samples", "20", "--seed", "1",
                      "--scheduler", "asha", "--output", str(out), "--name", "asha",
                      "--num-cpus", "2")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out / "asha", proc
