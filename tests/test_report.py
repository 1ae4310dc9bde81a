"""python -m pipelines.report: the page renders in a real browser, and bad input is one line.

The browser is Debian's headless Chromium (``apt-get install -y chromium``; ``.ci/run``
installs it). Without it these tests fail, never skip: a report nobody can see is not tested.
"""

import json
import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser

import pytest

from pipelines import analysis, report
from tests.experiment_files import write_experiment
from tests.helpers import REPO, run_module
from tests.test_analysis import _fidelity_experiment, _five_trials, _synthetic

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync"]

# Appended to a copy of the page: once everything has loaded, write what each image decoded
# to into the DOM, which --dump-dom prints.
_IMAGE_PROBE = """<script>
window.addEventListener("load", function () {
  var found = Array.prototype.map.call(document.images, function (img) {
    return {src: img.getAttribute("src"), complete: img.complete,
            width: img.naturalWidth, height: img.naturalHeight};
  });
  var out = document.createElement("pre");
  out.id = "image-probe";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>"""


def images_in_browser(page: str, tmp_path) -> list[dict]:
    """Load ``page`` in headless Chromium; returns each <img>'s src and decoded size."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium with "
                    "`apt-get install -y chromium` (as root; .ci/run does it)")
    probe = os.path.join(os.path.dirname(page), "probe-" + os.path.basename(page))
    with open(page, encoding="utf-8") as f:
        text = f.read()
    assert text.count("</body>") == 1
    with open(probe, "w", encoding="utf-8") as f:
        f.write(text.replace("</body>", _IMAGE_PROBE + "</body>"))
    profile = tmp_path / f"chromium-profile-{os.path.basename(page)}"
    try:
        proc = subprocess.run(
            [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
             "--virtual-time-budget=10000", "--dump-dom", "file://" + os.path.abspath(probe)],
            capture_output=True, text=True, timeout=120)
    finally:
        os.remove(probe)
    match = re.search(r'<pre id="image-probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, f"chromium printed no probe (exit {proc.returncode}): {proc.stderr[-2000:]}"
    return json.loads(match.group(1).replace("&quot;", '"').replace("&amp;", "&"))


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.images: list[str] = []
        self.tables: list[list[list[str]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag, attrs):
        if tag == "img":
            self.images.append(dict(attrs)["src"])
        elif tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self._cell = []

    def handle_data(self, data):
        if self._cell is not None:
            self._cell.append(data)

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self.tables[-1][-1].append("".join(self._cell))
            self._cell = None


def parse(page: str) -> _Links:
    links = _Links()
    with open(page, encoding="utf-8") as f:
        links.feed(f.read())
    return links


def _table_with(links: _Links, header: str) -> list[list[str]]:
    return next(t for t in links.tables if t and header in t[0])


# --- the real run's report --------------------------------------------------------------------
@pytest.mark.ray
def test_the_run_writes_its_report_and_every_figure_loads_in_a_browser(svm_asha_run, tmp_path):
    folder, proc = svm_asha_run
    page = str(folder / "report.html")
    assert f"report       {page}" in proc.stdout.splitlines()
    links = parse(page)
    # Two best-so-far figures, then parallel coordinates, curves and importance.
    assert links.images == ["report_files/best_so_far_trials.png",
                            "report_files/best_so_far_time.png", "report_files/00-parallel.png",
                            "report_files/00-curves.png", "report_files/00-importance.png"]
    assert sorted(os.listdir(folder / "report_files")) == sorted(
        os.path.basename(src) for src in links.images)
    loaded = images_in_browser(page, tmp_path)
    assert [img["src"] for img in loaded] == links.images
    for img in loaded:
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img


@pytest.mark.ray
def test_the_tables_show_the_runs_best_config_and_test_result(svm_asha_run):
    folder, _ = svm_asha_run
    info = json.loads((folder / "experiment.json").read_text())
    links = parse(str(folder / "report.html"))
    top = _table_with(links, "rank")
    header = top[0]
    assert header[:3] == ["rank", "trial", "trial_id"] and "cv_accuracy" in header
    first = dict(zip(header, top[1], strict=True))
    assert first["trial_id"] == info["best"]["trial_id"]
    assert first["cv_accuracy"] == f"{info['best']['cv_accuracy']:.4g}"
    assert len(top) - 1 == min(10, len(analysis.ranked_trials(analysis.load_experiment(folder))))
    held_out = dict(row for row in _table_with(links, "value")[1:])
    assert held_out["test_accuracy"] == f"{info['best']['test_accuracy']:.4g}"
    summary = dict(zip(*_table_with(links, "experiment")[:2], strict=True))
    assert summary["trials"] == "20" and summary["scheduler"] == "asha"


@pytest.mark.ray
def test_several_experiments_overlay_on_one_page(svm_asha_run, tmp_path):
    folder, _ = svm_asha_run
    other = _fidelity_experiment(tmp_path)
    out = tmp_path / "compare" / "both.html"
    proc = run_module("pipelines.report", str(folder), other.location, "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out)
    links = parse(str(out))
    # The second experiment has 2 ranked trials: no importance figure, a reason instead.
    assert links.images == [f"both_files/{n}" for n in (
        "best_so_far_trials.png", "best_so_far_time.png", "00-parallel.png", "00-curves.png",
        "00-importance.png", "01-parallel.png", "01-curves.png")]
    assert "Not computed: 2 trials with a comparable score; importance needs at least 8." in \
        out.read_text()
    # Each experiment's best is labelled with its own metric (one column for both).
    assert "cv_accuracy (max)" in out.read_text() and "score (max)" in out.read_text()
    for img in images_in_browser(str(out), tmp_path):
        assert img["complete"] and img["width"] > 0 and img["height"] > 0, img
    assert not (folder.parent / "compare").exists() and "both.html" not in os.listdir(folder)


def test_the_same_experiment_twice_is_reported_once(svm_asha_run, tmp_path):
    folder, _ = svm_asha_run
    out = tmp_path / "twice.html"
    proc = run_module("pipelines.report", str(folder), str(folder) + "/", "--output", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert not any(name.startswith("01-") for name in os.listdir(tmp_path / "twice_files"))


def test_the_browser_check_sees_a_missing_figure(tmp_path):
    """The probe can fail: a figure that is gone decodes to zero pixels."""
    exp = _synthetic(tmp_path, 10)
    page = report.write_report([exp.location])
    os.remove(os.path.join(exp.location, "report_files", "00-curves.png"))
    loaded = {img["src"]: img for img in images_in_browser(page, tmp_path)}
    assert loaded["report_files/00-curves.png"]["width"] == 0
    assert loaded["report_files/00-parallel.png"]["width"] > 0


def test_writing_a_report_never_imports_ray(tmp_path):
    folder = _synthetic(tmp_path, 10).location
    code = ("import sys\n"
            "from pipelines.report import main\n"
            "assert main([sys.argv[1]]) == 0\n"
            "loaded = sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.'))\n"
            "assert not loaded, loaded\n")
    proc = subprocess.run([sys.executable, "-c", code, folder], cwd=REPO, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": REPO})
    assert proc.returncode == 0, proc.stderr
    assert os.path.isfile(os.path.join(folder, "report.html"))


# --- placing the page -------------------------------------------------------------------------
def test_a_failure_while_drawing_leaves_the_earlier_report_whole(tmp_path, monkeypatch):
    exp = _synthetic(tmp_path, 10)
    page = report.write_report([exp.location])
    before = {name: open(os.path.join(exp.location, "report_files", name), "rb").read()
              for name in os.listdir(os.path.join(exp.location, "report_files"))}
    html_before = open(page, encoding="utf-8").read()

    def broken(*args, **kwargs):
        raise RuntimeError("drawing failed")

    monkeypatch.setattr(report, "learning_curves_figure", broken)
    with pytest.raises(RuntimeError, match="drawing failed"):
        report.write_report([exp.location])
    assert open(page, encoding="utf-8").read() == html_before
    after = {name: open(os.path.join(exp.location, "report_files", name), "rb").read()
             for name in os.listdir(os.path.join(exp.location, "report_files"))}
    assert after == before
    assert not [n for n in os.listdir(exp.location) if n.startswith(".report-")]


def test_a_new_report_replaces_every_old_figure(tmp_path):
    first, second = _synthetic(tmp_path, 10), _five_trials(tmp_path)
    report.write_report([first.location, second.location])
    files = os.path.join(first.location, "report_files")
    assert "01-parallel.png" in os.listdir(files)
    report.write_report([first.location])
    assert not [n for n in os.listdir(files) if n.startswith("01-")]  # nothing stale
    assert sorted(os.listdir(files)) == sorted(
        os.path.basename(src) for src in parse(os.path.join(first.location, "report.html")).images)
    assert not [n for n in os.listdir(first.location) if n.startswith(".report-")]


def test_a_report_on_an_object_store_uploads_figures_and_page(tmp_path, s3_server, monkeypatch):
    for key, value in s3_server.env().items():
        if key.startswith("AWS_"):
            monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    bucket = s3_server.create_bucket()
    write_experiment(f"s3://{bucket}/runs", "remote", [
        {"params": {"lr": 1e-3, "opt": "adam"}, "score": 0.5, "epoch": 1}])
    uri = report.write_report([f"s3://{bucket}/runs/remote"])
    assert uri == f"s3://{bucket}/runs/remote/report.html"
    keys = set(s3_server.keys(bucket, "runs/remote/"))
    page = s3_server.read_bytes(bucket, "runs/remote/report.html").decode()
    links = _Links()
    links.feed(page)
    assert links.images and {f"runs/remote/{src}" for src in links.images} <= keys
    png = s3_server.read_bytes(bucket, f"runs/remote/{links.images[0]}")
    assert png.startswith(b"\x89PNG")


# --- bad input --------------------------------------------------------------------------------
def _cli(*args):
    return run_module("pipelines.report", *args, timeout=120)


def test_a_folder_that_is_not_an_experiment_is_one_line_and_exit_2(tmp_path):
    (tmp_path / "plain").mkdir()
    proc = _cli(str(tmp_path / "plain"))
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [
        f"error: '{tmp_path / 'plain'}' is not an experiment folder: it holds no experiment.json"]
    assert os.listdir(tmp_path / "plain") == []


def test_an_unreadable_second_experiment_writes_nothing(tmp_path):
    good = _five_trials(tmp_path).location
    bad = _fidelity_experiment(tmp_path).location
    with open(os.path.join(bad, "epochs.parquet"), "wb") as f:
        f.write(b"PAR1 torn")
    proc = _cli(good, bad)
    assert proc.returncode == 2
    assert len(proc.stderr.splitlines()) == 1
    assert proc.stderr.startswith(f"error: cannot read {bad}/epochs.parquet: ")
    assert sorted(os.listdir(good)) == ["epochs.parquet", "experiment.json", "trials.parquet"]


def test_bad_flags_are_one_line(tmp_path):
    good = _five_trials(tmp_path).location
    for args, fragment in [([], "the following arguments are required"),
                           ([good, "--top", "0"], "--top must be at least 1"),
                           ([good, "--top", "x"], "invalid int value")]:
        proc = _cli(*args)
        assert proc.returncode == 2, args
        assert len(proc.stderr.splitlines()) == 1 and fragment in proc.stderr, proc.stderr
    assert sorted(os.listdir(good)) == ["epochs.parquet", "experiment.json", "trials.parquet"]


def test_an_output_folder_gets_report_html_inside(tmp_path):
    exp = _synthetic(tmp_path, 10)
    (tmp_path / "out").mkdir()
    assert report.write_report([exp.location], str(tmp_path / "out")) == \
        str(tmp_path / "out" / "report.html")
    assert report.write_report([exp.location], str(tmp_path / "new") + "/") == \
        str(tmp_path / "new" / "report.html")
    assert sorted(os.listdir(tmp_path / "new")) == ["report.html", "report_files"]


def test_a_failed_move_puts_the_earlier_figures_back(tmp_path, monkeypatch):
    exp = _synthetic(tmp_path, 10)
    page = report.write_report([exp.location])
    html_before = open(page, encoding="utf-8").read()
    figures = sorted(os.listdir(os.path.join(exp.location, "report_files")))

    def replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report.os, "replace", replace)
    with pytest.raises(report.ReportError, match="No space left on device"):
        report.write_report([exp.location])
    monkeypatch.undo()
    assert open(page, encoding="utf-8").read() == html_before
    assert sorted(os.listdir(os.path.join(exp.location, "report_files"))) == figures
    assert not [n for n in os.listdir(exp.location) if n.startswith(".report-")]


# --- the pipelines' end-of-run report ---------------------------------------------------------
def test_a_failing_report_is_one_warning_line_not_a_failed_run(tmp_path, monkeypatch, capsys):
    from pipelines import runner

    def broken(locations, output=None, **kwargs):
        raise RuntimeError("disk full\nsecond line")

    monkeypatch.setattr(report, "write_report", broken)
    assert runner._write_report(str(tmp_path / "exp")) is None
    err = capsys.readouterr().err
    assert err.splitlines() == [
        f"warning      report not written: disk full second line (retry: python -m "
        f"pipelines.report {tmp_path / 'exp'})"]


@pytest.mark.ray
def test_no_report_skips_it(tmp_path):
    from tests.helpers import tiny_svm_space

    space = tiny_svm_space(tmp_path / "space.py")
    proc = run_module("pipelines.svm", "--space", space, "--dataset", "iris", "--output",
                      str(tmp_path / "out"), "--name", "quiet", "--num-cpus", "2", "--no-report")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert not (tmp_path / "out" / "quiet" / "report.html").exists()
    assert not (tmp_path / "out" / "quiet" / "report_files").exists()
    assert "report  " not in proc.stdout
    # The flag is how this run behaves, not what the experiment is.
    info = json.loads((tmp_path / "out" / "quiet" / "experiment.json").read_text())
    assert info["flags"]["no_report"] is True


def test_output_elsewhere_puts_the_figures_beside_the_page(tmp_path):
    """--output PATH: the page there, its figures in <stem>_files/ beside it, links relative."""
    exp = _synthetic(tmp_path, 10)
    target = tmp_path / "elsewhere" / "r.html"
    assert report.write_report([exp.location], str(target)) == str(target)
    assert sorted(os.listdir(target.parent)) == ["r.html", "r_files"]
    shutil.rmtree(target.parent / "r_files")
    report.write_report([exp.location], str(target))
    assert parse(str(target)).images[0] == "r_files/best_so_far_trials.png"
    assert os.path.isfile(target.parent / "r_files" / "best_so_far_trials.png")


def test_a_reader_that_leaves_early_ends_the_cli_quietly(tmp_path):
    """``python -m pipelines.report EXP | head -0``: the page is written, the closed pipe ends
    the process with exit 1 and no BrokenPipeError traceback."""
    good = _five_trials(tmp_path).location
    read_end, write_end = os.pipe()
    os.close(read_end)  # nobody will read: the first write to stdout fails with EPIPE
    try:
        env = dict(os.environ, PYTHONPATH=REPO)
        env.pop("RAY_ADDRESS", None)
        proc = subprocess.run([sys.executable, "-m", "pipelines.report", good], cwd=REPO,
                              env=env, stdout=write_end, stderr=subprocess.PIPE, text=True,
                              timeout=120)
    finally:
        os.close(write_end)
    assert proc.returncode == 1
    assert proc.stderr == ""
    assert os.path.isfile(os.path.join(good, "report.html"))


def test_a_broken_pipe_elsewhere_than_stdout_still_raises(tmp_path):
    """Only a closed stdout ends quietly: a dropped socket or worker pipe inside main (here a
    raised BrokenPipeError, stdout a healthy file) keeps its traceback."""
    code = ("import sys\nfrom pipelines import cli\n"
            "def main():\n    print('kept')\n    raise BrokenPipeError(32, 'a worker pipe')\n"
            "sys.exit(cli.call_main(main))\n")
    out = tmp_path / "out.txt"
    with open(out, "w") as stdout:
        proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=stdout,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env=dict(os.environ, PYTHONPATH=REPO))
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "BrokenPipeError: [Errno 32] a worker pipe"
    assert out.read_text() == "kept\n"


def test_the_test_result_note_says_why_there_is_none(tmp_path):
    # Every trial errored: the run finished, with no best trial to test (not "not finished").
    trials = [{"params": {"lr": 1e-3, "opt": "adam"}, "score": None, "status": "error",
               "error": "ValueError: C <= 0"} for _ in range(3)]
    cases = {"allerr": ({"status": "finished", "best": None}, "no trial produced a score"),
             "evalfail": ({"status": "evaluation_failed", "evaluation_error": "checkpoint gone"},
                          "checkpoint gone"),  # in the table, as evaluation_error
             "running": ({"status": "running"}, "has not finished its final evaluation")}
    for name, (info, expected) in cases.items():
        folder = write_experiment(tmp_path, name, trials, info=info)
        page = open(report.write_report([folder]), encoding="utf-8").read()
        assert expected in page, name
