"""cluster.yaml through Ray's own launcher checks, offline, plus the project's invariants.

What `ray up` does before it touches a machine (ray.autoscaler._private.commands._bootstrap_config):

1. ``prepare_config``: merge the provider's defaults, fold ``setup_commands`` into the head and
   worker setup, fill per-type min/max workers. Offline.
2. ``validate_config``: the launcher's JSON schema. Offline.
3. ``fillout_available_node_types_resources``: asks EC2 (DescribeInstanceTypes) what each
   instance type has. Needs AWS; here it runs against moto's in-process EC2 catalogue, so Ray's
   own detection says what a g5.12xlarge holds.
4. ``bootstrap_aws``: creates or looks up the IAM role, key pair, subnets and security group.
   Needs a real account and writes a key under ~/.ssh, so it is not run; the fields it reads
   (IamInstanceProfile, security_group, ImageId) are checked as data below instead.
"""

from __future__ import annotations

import copy
import os
import subprocess

import jsonschema
import pytest
import yaml

from tests.helpers import REPO

CLUSTER_YAML = os.path.join(REPO, "cluster.yaml")


@pytest.fixture(scope="module")
def raw():
    with open(CLUSTER_YAML) as f:
        return yaml.safe_load(f)


@pytest.fixture(scope="module")
def prepared(raw):
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


def _workers(config):
    head = config["head_node_type"]
    return {name: t for name, t in config["available_node_types"].items() if name != head}


def test_ray_launcher_prepares_and_validates_it(prepared):
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider
    from ray.autoscaler._private.providers import _get_node_provider_cls

    assert prepared["provider"]["type"] == "aws"
    assert _get_node_provider_cls(prepared["provider"]) is AWSNodeProvider
    # prepare_config filled what the launcher needs later (validate_config insists on it).
    assert "cluster_synced_files" in prepared and prepared["auth"]["ssh_user"] == "ubuntu"


def test_the_schema_check_is_real(raw):
    # The same validation rejects a typo'd field, so the test above can fail.
    from ray.autoscaler._private.util import prepare_config, validate_config

    broken = copy.deepcopy(raw)
    worker = next(iter(_workers(broken)))
    broken["available_node_types"][worker]["min_worker"] = 1
    with pytest.raises(jsonschema.ValidationError) as info:
        validate_config(prepare_config(broken))
    # jsonschema's documented error fields, not its message wording: the typo'd key is rejected.
    assert info.value.validator == "additionalProperties"
    assert list(info.value.absolute_path) == ["available_node_types", worker]
    assert "min_worker" in info.value.instance


def test_head_and_an_autoscaling_gpu_worker_type(prepared):
    types = prepared["available_node_types"]
    head = prepared["head_node_type"]
    assert head in types and types[head]["max_workers"] == 0
    # Trials stay off the head, which runs the driver, GCS and autoscaler.
    assert types[head]["resources"].get("CPU") == 0
    workers = _workers(prepared)
    assert workers
    for name, node in workers.items():
        assert node["resources"].get("GPU", 0) >= 2, f"{name} should be a multi-GPU type"
        assert 0 <= node["min_workers"] < node["max_workers"] <= prepared["max_workers"], name
        market = node["node_config"].get("InstanceMarketOptions", {}).get("MarketType")
        assert market == "spot", f"{name}: GPU workers run on spot"
    assert "InstanceMarketOptions" not in types[head]["node_config"], "the head is on demand"


def test_declared_gpus_match_what_ray_detects_for_the_instance_type(prepared, monkeypatch):
    # Ray's own resource detection (step 3) against moto's offline EC2 instance-type catalogue.
    from moto import mock_aws
    from ray.autoscaler._private.aws.node_provider import AWSNodeProvider

    for key in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_EC2", "AWS_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    undeclared = copy.deepcopy(prepared)
    for node in undeclared["available_node_types"].values():
        node["resources"] = {}
    with mock_aws():
        detected = AWSNodeProvider.fillout_available_node_types_resources(undeclared)
    for name, node in _workers(prepared).items():
        found = detected["available_node_types"][name]["resources"]
        instance = node["node_config"]["InstanceType"]
        assert found.get("GPU") == node["resources"]["GPU"], (instance, found)
        assert found.get("CPU") == node["resources"]["CPU"], (instance, found)


def test_setup_installs_the_project_as_the_readme_does(prepared):
    install_cmd = "pip install -c requirements.lock -e ."
    with open(os.path.join(REPO, "README.md")) as f:
        readme = f.read()
    assert f"{install_cmd} && python -m pipelines.finetune" in readme  # the Quickstart's install
    mounts = prepared["file_mounts"]
    repo_on_node = next(remote for remote, local in mounts.items() if local in (".", "./"))
    install = f"cd {repo_on_node} && {install_cmd}"
    # prepare_config folds setup_commands into both node kinds: check what each really runs.
    for key in ("head_setup_commands", "worker_setup_commands"):
        assert install in prepared[key], (key, prepared[key])
    # The pinned Python of the README (3.11) is the one the venv is made from.
    assert any("python3.11 -m venv" in c for c in prepared["setup_commands"])
    # The lock the nodes install from travels with the repository (it is not git-ignored).
    ignored = subprocess.run(["git", "check-ignore", "-q", "requirements.lock"], cwd=REPO)
    assert ignored.returncode == 1
    assert os.path.exists(os.path.join(REPO, "requirements.lock"))


def test_results_storage_is_a_remote_object_store(raw, monkeypatch):
    from pipelines.storage import Storage

    uri = raw["metadata"]["storage"]
    assert uri.startswith("s3://"), uri
    monkeypatch.setenv("AWS_REGION", raw["provider"]["region"])  # no region lookup: offline
    storage = Storage(uri)
    assert not storage.is_local and storage.root and "/" in storage.root
    worker = next(iter(_workers(raw).values()))
    # Workers write checkpoints to S3 themselves: they need an instance profile.
    assert "Arn" in worker["node_config"]["IamInstanceProfile"]


def test_token_auth_stays_on(raw, prepared):
    text = open(CLUSTER_YAML).read()
    assert "RAY_AUTH_MODE=disabled" not in text
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        starts = [c for c in prepared[key] if "ray start" in c]
        assert starts and all("RAY_AUTH_MODE=token" in c for c in starts), (key, starts)
    # Every node holds the same token, at the path Ray reads by default.
    assert raw["file_mounts"].get("~/.ray/auth_token") == "~/.ray/auth_token"


def test_dashboard_is_not_opened_to_the_internet(raw):
    group = raw["provider"].get("security_group", {})
    for rule in group.get("IpPermissions", []):
        low, high = rule.get("FromPort", 0), rule.get("ToPort", 65535)
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges", []))
        for port in (8265, 6379, 10001):
            assert not (world and low <= port <= high), f"port {port} open to the internet"
    for node in raw["available_node_types"].values():
        # Own security groups would bypass the launcher's (SSH + intra-cluster only) group.
        assert "SecurityGroupIds" not in node["node_config"]
