"""cluster.yaml keeps the dashboard on the head's loopback and the working copy's data off nodes.

The rsync checks run the YAML's own ``rsync_exclude`` patterns twice: through a Python matcher
that follows rsync's exclude rules for the pattern forms the file uses (so they run on any
machine: CI builds only a Python venv and may have no rsync binary), and, where ``rsync`` is
installed, through the real ``rsync -a`` the launcher runs, which must agree with the matcher
file for file.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

import pytest
import yaml

from tests.helpers import REPO

CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")

# What must never reach a node, by category: paths relative to the repository root.
MUST_STAY_OFF = {
    "results": ["results/exp-1/trials.parquet", "results/x.parquet", "ray_results/t/result.json"],
    "data": ["data/train.csv", "data/MNIST/raw/train-images-idx3-ubyte", "datasets/d.parquet",
             "pipelines/data/cache.npz"],
    "checkpoints": ["run/checkpoint_000001/model.pt", "checkpoint_000002/state.json",
                    "best_model.pt", "model.pth", "epoch=3.ckpt", "weights.safetensors"],
    "virtual environments": [".venv/bin/python", "venv/lib/python3.11/site.py",
                             "env/bin/activate"],
    "secrets": [".env", ".env.local", "prod.env", "secrets.pem", "deploy/server.key",
                "cert.p12", "credentials", "credentials.json", ".aws/credentials"],
    "caches": ["pipelines/__pycache__/svm.cpython-311.pyc", ".cache/small_cnn.pt",
               ".pytest_cache/v/cache/lastfailed", ".ruff_cache/0.5/x", ".hypothesis/db/x"],
    "git": [".git/HEAD", "sub/.git/config"],
}
# Code and what the nodes install from: must arrive. Names chosen near the excluded ones.
MUST_ARRIVE = ["pipelines/a.py", "pipelines/results.py", "requirements.lock", "README.md",
               "pyproject.toml", "trainables/image_data.py", "tests/test_results.py",
               "search_spaces/svm.py", "benchmarks/many_nodes.py", "cluster.yaml",
               ".gitignore", "docs/environment.md", "pipelines/checkpoints.py"]


@pytest.fixture(scope="module")
def config():
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def excludes(config):
    patterns = config.get("rsync_exclude") or []
    assert patterns and all(isinstance(p, str) and p for p in patterns), patterns
    return patterns


# --- the dashboard ---------------------------------------------------------------------------
def _head_start(config) -> str:
    starts = [c for c in config["head_start_ray_commands"] if "ray start" in c]
    assert len(starts) == 1, starts
    return starts[0]


def test_dashboard_binds_to_loopback_on_the_head(config):
    start = _head_start(config)
    assert "--head" in start
    hosts = re.findall(r"--dashboard-host[= ](\S+)", start)
    assert hosts == ["127.0.0.1"], start
    assert "0.0.0.0" not in start and "::" not in start.replace("::1", "")
    # Ray Train V2 inside Tune needs the dashboard's state API: it must still start.
    assert not re.search(r"--include-dashboard[= ](false|False|0)", start), start
    # Workers start no dashboard server of their own and are not told to bind one.
    for command in config["worker_start_ray_commands"]:
        assert "--dashboard-host" not in command, command


# --- rsync exclude semantics in Python -------------------------------------------------------
def _glob_to_regex(pattern: str) -> str:
    """rsync wildcards: ``*`` stops at "/", ``**`` does not, ``?`` is one non-"/" character;
    a leading ``**/`` also matches no folder at all (rsync's wildmatch)."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i) and i == 0:
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape("["))
                i += 1
            else:
                body = pattern[i + 1:end]
                out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
                i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return "".join(out)


def rsync_excluded(relpath: str, is_dir: bool, patterns: list[str]) -> bool:
    """Whether ``rsync --exclude P`` (for each P) leaves out ``relpath`` itself.

    Rules from rsync(1), "INCLUDE/EXCLUDE PATTERN RULES", for exclude-only lists: a trailing
    "/" matches only folders; a leading "/" anchors at the transfer root; a pattern with a "/"
    or "**" inside is matched against the whole path (unanchored: against any trailing run of
    whole path components), any other pattern against the last component only.
    """
    for raw in patterns:
        pattern = raw
        dir_only = pattern.endswith("/")
        pattern = pattern.rstrip("/")
        if dir_only and not is_dir:
            continue
        anchored = pattern.startswith("/")
        pattern = pattern.lstrip("/")
        regex = re.compile(_glob_to_regex(pattern) + r"\Z", re.DOTALL)
        if anchored:
            candidates = [relpath]
        elif "/" in pattern or "**" in pattern:
            parts = relpath.split("/")
            candidates = ["/".join(parts[k:]) for k in range(len(parts))]
        else:
            candidates = [relpath.rsplit("/", 1)[-1]]
        if any(regex.match(c) for c in candidates):
            return True
    return False


def transferred(root: str, patterns: list[str]) -> set[str]:
    """Files a recursive copy of ``root`` sends with those excludes (excluded folders pruned)."""
    sent = set()
    for folder, dirs, files in os.walk(root):
        rel = os.path.relpath(folder, root)
        prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        dirs[:] = [d for d in dirs if not rsync_excluded(prefix + d, True, patterns)]
        sent.update(prefix + f for f in files if not rsync_excluded(prefix + f, False, patterns))
    return sent


def _make_tree(root, paths) -> None:
    for rel in paths:
        path = os.path.join(root, *rel.split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w") as f:
            f.write(rel)


def _all_paths():
    return [p for paths in MUST_STAY_OFF.values() for p in paths] + MUST_ARRIVE


def test_matcher_follows_rsync_rules():
    # The rule forms the matcher claims, on their own (documented rsync behaviour).
    assert rsync_excluded("a/results", True, ["results/"])
    assert not rsync_excluded("pipelines/results.py", False, ["results/"])
    assert not rsync_excluded("results", False, ["results/"])  # a file named results
    assert rsync_excluded("deep/x/.env", False, [".env"])
    assert rsync_excluded(".git", True, ["**/.git"]) and rsync_excluded("a/.git", True, ["**/.git"])
    assert rsync_excluded("a/b/c.pt", False, ["*.pt"]) and not rsync_excluded("a.pts", False, ["*.pt"])
    assert not rsync_excluded("a/results", True, ["/results/"])
    assert rsync_excluded("a/b", True, ["a/*"]) and not rsync_excluded("a/b/c", False, ["a/*"])


@pytest.mark.parametrize("category", sorted(MUST_STAY_OFF))
def test_rsync_exclude_keeps_each_category_off_the_nodes(excludes, category, tmp_path):
    _make_tree(tmp_path, MUST_STAY_OFF[category] + MUST_ARRIVE)
    sent = transferred(str(tmp_path), excludes)
    leaked = sorted(set(MUST_STAY_OFF[category]) & sent)
    assert not leaked, f"{category} would be copied to the nodes: {leaked}"


def test_only_code_arrives(excludes, tmp_path):
    _make_tree(tmp_path, _all_paths())
    assert transferred(str(tmp_path), excludes) == set(MUST_ARRIVE)


def test_every_tracked_file_still_reaches_the_nodes(excludes):
    # The repository's own code, tests, docs and requirements.lock: nothing git tracks is a
    # secret, a result or a checkpoint, so no exclude may drop any of it.
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, check=True)
    tracked = [p for p in listed.stdout.decode().split("\0") if p]
    assert "requirements.lock" in tracked
    dropped = []
    for path in tracked:
        parts = path.split("/")
        # Excluded if the file or any folder above it is.
        for k in range(1, len(parts) + 1):
            if rsync_excluded("/".join(parts[:k]), k < len(parts), excludes):
                dropped.append(path)
                break
    assert not dropped, f"excluded although git tracks them: {dropped}"


def test_code_mount_and_token_mount_are_unchanged(config, excludes):
    mounts = config["file_mounts"]
    assert mounts.get("~/tune-pipeline") == "."
    assert mounts.get("~/.ray/auth_token") == "~/.ray/auth_token"
    # A single-file mount is its own transfer root: its name must not match any exclude.
    assert not rsync_excluded("auth_token", False, excludes)
    assert config.get("rsync_filter") == [".gitignore"]


# --- the real rsync --------------------------------------------------------------------------
needs_rsync = pytest.mark.skipif(
    shutil.which("rsync") is None,
    reason="no rsync binary here: the Python matcher tests above cover the excludes "
           "(apt-get install rsync to compare against the real rsync)",
)


def _rsync(source: str, dest: str, excludes: list[str]) -> None:
    # The launcher's command (ray.autoscaler._private.command_runner.run_rsync_up) minus SSH:
    # rsync -avz --exclude P ... [--filter 'dir-merge,- .gitignore'] SRC DEST. The .gitignore
    # filter is left out on purpose: the excludes alone must keep everything off.
    args = ["rsync", "-a"]
    for pattern in excludes:
        args += ["--exclude", pattern]
    subprocess.run(args + [source, dest], check=True, capture_output=True, text=True)


def _files_under(root) -> set[str]:
    return {os.path.relpath(os.path.join(d, f), root).replace(os.sep, "/")
            for d, _, files in os.walk(root) for f in files}


@needs_rsync
def test_real_rsync_copies_only_code(excludes, tmp_path):
    src, dest = tmp_path / "repo", tmp_path / "node"
    _make_tree(src, _all_paths())
    dest.mkdir()
    _rsync(f"{src}/", f"{dest}/", excludes)
    arrived = _files_under(dest)
    assert arrived == set(MUST_ARRIVE), sorted(arrived ^ set(MUST_ARRIVE))
    # ...and the Python matcher the other tests rely on says the same, file for file.
    assert transferred(str(src), excludes) == arrived


@needs_rsync
def test_real_rsync_keeps_the_token_file_mount(excludes, tmp_path):
    token = tmp_path / "home" / ".ray" / "auth_token"
    token.parent.mkdir(parents=True)
    token.write_text("secret-token")
    dest = tmp_path / "node" / ".ray"
    dest.mkdir(parents=True)
    _rsync(str(token), str(dest / "auth_token"), excludes)
    assert (dest / "auth_token").read_text() == "secret-token"
