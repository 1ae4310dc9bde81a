"""Bad input: one clear line naming the problem, exit code 2, before Ray starts, nothing written."""

import pytest

from tests.helpers import run_module

SPACES = {
    "low_high": "SPACE = Space(C=Float(10, 1))",
    "log_zero": "SPACE = Space(C=LogFloat(0, 1))",
    "grid_out": "SPACE = Space(C=LogFloat(0.1, 10, grid=[1, 1000]))",
    "bad_cond": "SPACE = Space(kernel=Categorical(['rbf']), g=LogFloat(0.1, 1, when={'kern': ['rbf']}))",
    "no_grid": "SPACE = Space(C=LogFloat(1e-4, 1e-1))",
    # A typo: searched, recorded and reported, and SVC would never see it.
    "typo": "SPACE = Space(C=LogFloat(0.1, 10, grid=[1.0]), gama=LogFloat(1e-4, 1, grid=[1e-4, 1]))",
}


CASES = {
    "low>=high": (["--space", "{low_high}"], "parameter 'C': low (10) must be less than high (1)"),
    "log<=0": (["--space", "{log_zero}"], "parameter 'C': a log range must be above zero"),
    "grid outside": (["--space", "{grid_out}"], "parameter 'C': grid value 1000 is outside"),
    "unknown condition": (["--space", "{bad_cond}"], "condition on unknown parameter 'kern'"),
    "unknown module": (["--space", "no_such_space"], "unknown space 'no_such_space'"),
    "missing file": (["--space", "{tmp}/nope.py"], "nope.py' does not exist"),
    "bad algo": (["--algo", "annealing"], "argument --algo: invalid choice: 'annealing'"),
    "bad num-samples": (["--num-samples", "0"], "argument --num-samples: must be at least 1"),
    "unknown flag": (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    "missing dataset": (["--dataset", "{tmp}/nope.csv", "--target", "y"], "dataset file"),
    "unknown dataset": (["--dataset", "mnist-ish"], "unknown dataset 'mnist-ish'"),
    "missing target column": (["--dataset", "{csv}", "--target", "label"],
                              "--target column 'label' is not in"),
    "csv without target": (["--dataset", "{csv}"], "needs --target COLUMN"),
    "infinite feature": (["--dataset", "{inf_csv}", "--target", "y"],
                         "feature column 'a' has infinite values"),
    "target column alone": (["--dataset", "{y_csv}", "--target", "y"],
                            "has no feature columns besides 'y'"),
    "grid without values": (["--space", "{no_grid}"], "parameter 'C': has no grid values"),
    "param the trainable ignores": (["--space", "{typo}"], "svm trials do not use 'gama'"),
    "bo flag without bo": (["--bo-init", "3"], "--bo-init applies only to --algo bayesopt"),
    "warm start from a folder": (["--algo", "bayesopt", "--warm-start", "{tmp}"],
                                 "is a folder, not a trials Parquet file"),
    # Ray Tune would repeat the grid N times; this grid runs each combination once.
    "num-samples with the grid": (["--num-samples", "5"],
                                  "--num-samples applies only to --algo random and bayesopt"),
    "resume without name": (["--resume"], "--resume needs --name"),
    "bad cv": (["--cv", "1"], "--cv must be at least 2"),
    "trial bigger than the machine": (["--num-cpus", "1", "--cpus-per-trial", "2"],
                                      "--cpus-per-trial 2 is more than the local Ray's 1 CPUs"),
    # Ray's own connect retries for minutes; port 1 on this machine answers nothing.
    "nothing at --address": (["--address", "127.0.0.1:1"],
                             "cannot connect to Ray at 127.0.0.1:1: nothing answers there"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_is_one_line_exit_2_and_writes_nothing(tmp_path, case):
    csv = tmp_path / "data.csv"
    csv.write_text("a,b,y\n1,2,0\n3,4,1\n")
    paths = {"tmp": str(tmp_path), "csv": str(csv)}
    for key, text in {"inf_csv": "a,b,y\n1,2,0\ninf,4,1\n3,3,0\n5,1,1\n",
                      "y_csv": "y\n0\n1\n0\n1\n"}.items():
        (tmp_path / f"{key}.csv").write_text(text)
        paths[key] = str(tmp_path / f"{key}.csv")
    for key, body in SPACES.items():
        path = tmp_path / f"{key}.py"
        path.write_text("from search_spaces.space import *\n" + body + "\n")
        paths[key] = str(path)
    args, expected = CASES[case]
    out_dir = tmp_path / "out"
    argv = [a.format(**paths) for a in args] + ["--output", str(out_dir)]
    proc = run_module("pipelines.svm", *argv, timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: ")
    assert expected in lines[0]
    assert "Traceback" not in proc.stderr
    assert not out_dir.exists()  # nothing written
    assert "Ray" not in proc.stdout + proc.stderr.replace(expected, "")


def test_existing_experiment_is_not_overwritten(tmp_path):
    (tmp_path / "out" / "exp1").mkdir(parents=True)
    proc = run_module("pipelines.svm", "--output", str(tmp_path / "out"), "--name", "exp1", timeout=120)
    assert proc.returncode == 2
    assert "experiment 'exp1' already exists" in proc.stderr
    assert list((tmp_path / "out" / "exp1").iterdir()) == []


def test_exit_process_keeps_what_a_normal_exit_does(tmp_path):
    """The pipelines' fast exit still waits for threads, runs atexit hooks, flushes output,
    and passes the exit code on; with joblib's loky workers alive (the fine-tuning job's SVM
    baseline leaves them) it ends instead of waiting forever on their manager thread."""
    import subprocess
    import sys

    from tests.helpers import REPO

    marker = tmp_path / "atexit.txt"
    script = (
        "import atexit, threading, time, sys\n"
        "from pipelines import cli\n"
        f"atexit.register(lambda: open({str(marker)!r}, 'a').write('hook;'))\n"
        "def late():\n"
        "    time.sleep(0.3)\n"
        f"    open({str(marker)!r}, 'a').write('thread;')\n"
        "threading.Thread(target=late).start()\n"
        "from sklearn.datasets import load_iris\n"
        "from sklearn.model_selection import GridSearchCV\n"
        "from sklearn.svm import SVC\n"
        "GridSearchCV(SVC(), {'C': [1, 2]}, cv=2, n_jobs=2).fit(*load_iris(return_X_y=True))\n"
        "print('x' * 100000)\n"  # more than one pipe buffer, still in Python's buffer
        "cli.exit_process(3)\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 3
    assert proc.stdout == "x" * 100000 + "\n"
    assert marker.read_text() == "thread;hook;"


def test_an_output_nothing_can_be_written_to_is_one_line_even_for_root():
    # os.access says yes to root everywhere; /proc takes no new file from anyone.
    proc = run_module("pipelines.svm", "--output", "/proc/tune-pipeline-test", timeout=120)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "is not a writable directory" in lines[0], proc.stderr


def test_an_address_where_a_web_server_answers_is_one_line_not_minutes_of_retries(tmp_path):
    # The dashboard's port (8265, for ray job submit) given as --address: Ray's connect would
    # retry a port that answers, but not as the GCS, for minutes.
    import http.server
    import threading

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        address = f"127.0.0.1:{server.server_address[1]}"
        proc = run_module("pipelines.svm", "--address", address, "--output", str(tmp_path / "out"),
                          timeout=60)
    finally:
        server.shutdown()
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"error: cannot connect to Ray at {address}: it answers HTTP")
    assert not (tmp_path / "out").exists()
