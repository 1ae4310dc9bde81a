"""Models, offline weights, and the small_cnn pretraining cache."""

from __future__ import annotations

import os
import threading

import pytest

torch = pytest.importorskip("torch")

import trainables.image_models as image_models  # noqa: E402
from trainables.image_data import DataError, resolve_dataset  # noqa: E402
from trainables.image_models import (  # noqa: E402
    build_model,
    pretrained_small_cnn,
    resolve_model,
    resolve_weights,
)


@pytest.fixture
def quick_pretraining(monkeypatch):
    # One epoch instead of the real recipe: the cache logic is what is under test. The recipe
    # is part of the cache key, so this never collides with real cached weights.
    monkeypatch.setitem(image_models.PRETRAIN_SETTINGS, "epochs", 1)


def groups_partition(model):
    backbone = {id(p) for p in model.backbone_parameters()}
    head = {id(p) for p in model.head_parameters()}
    return not backbone & head and backbone | head == {id(p) for p in model.parameters()}


def test_small_cnn_has_batchnorm_and_two_parameter_groups():
    model = build_model("small_cnn", 5, "none", in_channels=1)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.backbone.modules())
    assert groups_partition(model)
    for side in (8, 28):  # size-agnostic: pretrained on 8x8, usable on MNIST-sized images
        assert model(torch.randn(2, 1, side, side)).shape == (2, 5)


@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v3_small"])
def test_torchvision_model_without_weights_on_tiny_grayscale(name):
    model = build_model(name, 5, "none", in_channels=1)
    assert groups_partition(model)
    assert isinstance(model.head, torch.nn.Linear) and model.head.out_features == 5
    # 1-channel 8x8 images are repeated to 3 channels and upsampled to what the network needs.
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(2, 1, 8, 8)).shape == (2, 5)


def test_missing_torchvision_weights_name_the_hub_directory(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(DataError) as info:
        resolve_weights("resnet18", None)
    message = str(info.value)
    assert "\n" not in message
    assert str(tmp_path / "hub" / "checkpoints") in message
    assert ".pth" in message and "--weights none" in message


def test_torchvision_weights_from_the_hub_cache(tmp_path, monkeypatch):
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url
    reference = torchvision.models.resnet18(weights=None)
    (tmp_path / "hub" / "checkpoints").mkdir(parents=True)
    torch.save(reference.state_dict(), tmp_path / "hub" / "checkpoints" / os.path.basename(url))
    assert resolve_weights("resnet18", "IMAGENET1K_V1") == "torchvision:IMAGENET1K_V1"
    # README's "--model resnet18 --weights pretrained": torchvision's DEFAULT (this file).
    assert resolve_weights("resnet18", "pretrained") == resolve_weights("resnet18", "default")
    assert resolve_weights("resnet18", "pretrained") == "torchvision:IMAGENET1K_V1"
    model = build_model("resnet18", 3, "default", in_channels=3)
    assert torch.equal(model.backbone.conv1.weight, reference.conv1.weight)
    assert model.head.out_features == 3


def test_weights_that_do_not_fit_are_refused(tmp_path):
    path = tmp_path / "w.pt"
    torch.save({"conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(DataError, match="do not fit resnet18"):
        build_model("resnet18", 3, str(path))
    with pytest.raises(DataError, match="does not exist"):
        resolve_weights("small_cnn", str(tmp_path / "missing.pt"))
    with pytest.raises(DataError, match="unknown model"):
        resolve_weights("resnet9000", None)


def test_resolve_model_takes_classes_and_channels_from_the_data(tmp_path):
    spec = resolve_model("small_cnn", None, resolve_dataset("digits-transfer"), cache_dir=tmp_path)
    assert (spec.num_classes, spec.in_channels, spec.weights) == (5, 1, "pretrained")
    assert spec.cache_dir == str(tmp_path.resolve())
    assert not list(tmp_path.iterdir())  # resolving is cheap: no pretraining yet


def test_pretraining_is_cached_and_reused(tmp_path, monkeypatch, quick_pretraining):
    path = pretrained_small_cnn(tmp_path)
    stamp = path.stat().st_mtime_ns

    def must_not_run(settings):
        raise AssertionError("pretrained again despite the cache")

    monkeypatch.setattr(image_models, "_pretrain_small_cnn", must_not_run)
    assert pretrained_small_cnn(tmp_path) == path
    assert path.stat().st_mtime_ns == stamp
    # And build_model loads exactly the cached backbone.
    model = build_model("small_cnn", 5, "pretrained", cache_dir=tmp_path)
    cached = torch.load(path, weights_only=True)
    assert torch.equal(model.backbone[0].weight, cached["backbone.0.weight"])


def test_a_cold_cache_leaves_the_new_head_to_the_trial_seed(tmp_path, quick_pretraining):
    # The first trial of a fresh machine pretrains: that reseeded the global RNG and drew
    # from it, so its head came out the same for every seed and unlike a warm-cache build's.
    def head(seed: int, cache) -> torch.Tensor:
        torch.manual_seed(seed)
        return build_model("small_cnn", 5, "pretrained", cache_dir=cache).head.weight.detach()

    cold = head(5, tmp_path / "a")
    warm = head(5, tmp_path / "a")
    assert torch.equal(cold, warm)
    assert not torch.equal(head(6, tmp_path / "b"), cold)  # cold again, another seed


def test_another_recipe_is_another_cache_file(tmp_path, monkeypatch, quick_pretraining):
    first = pretrained_small_cnn(tmp_path)
    monkeypatch.setitem(image_models.PRETRAIN_SETTINGS, "seed", 1)
    second = pretrained_small_cnn(tmp_path)
    assert first != second and first.is_file() and second.is_file()


def test_concurrent_first_use_pretrains_once_and_leaves_no_debris(
    tmp_path, monkeypatch, quick_pretraining
):
    real = image_models._pretrain_small_cnn
    calls = []

    def counting(settings):
        calls.append(1)
        return real(settings)

    monkeypatch.setattr(image_models, "_pretrain_small_cnn", counting)
    results, errors = [], []

    def worker():
        try:
            results.append(pretrained_small_cnn(tmp_path))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors and len(set(results)) == 1 and len(calls) == 1
    torch.load(results[0], weights_only=True)  # a complete file
    leftovers = [p.name for p in tmp_path.iterdir() if p.suffix == ".tmp"]
    assert leftovers == []


def test_pretrained_backbone_helps_on_the_target_task(tmp_path):
    """The point of the default: a linear probe on the pretrained backbone beats a random one.

    Uses the real recipe (about 10 s on one core), cached in ``tmp_path``.
    """
    from trainables.finetune import train_loop
    from trainables.session import LocalSession

    data = resolve_dataset("digits-transfer")
    config = {"lr": 1e-2, "batch_size": 32, "freeze_epochs": 1, "patience": 0}
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        accuracy = {}
        for weights in ("pretrained", "none"):
            spec = resolve_model("small_cnn", weights, data, cache_dir=tmp_path)
            with LocalSession() as session:
                train_loop(config, data, spec, 1, session)
                accuracy[weights] = session.metrics[0]["val_accuracy"]
    finally:
        torch.set_num_threads(before)
    assert accuracy["pretrained"] > 0.75
    assert accuracy["pretrained"] > accuracy["none"] + 0.05
