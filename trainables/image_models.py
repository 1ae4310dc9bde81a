"""Models for fine-tuning: a backbone, a fresh classification head, and where weights come from.

Every model is a ``FineTuneModel``: an input adapter (grayscale -> 3 channels and a minimum size
for torchvision backbones), a ``backbone`` and a ``head``. The two parameter groups are what
``freeze_epochs`` and ``backbone_lr_mult`` act on.

Weights never download. ``resolve_weights`` turns the ``--weights`` flag into one of

- ``"none"``: random initialization (training from scratch);
- ``"pretrained"`` for ``small_cnn``: its backbone pretrained on the digits source task (0-4),
  trained once and cached on disk (``pretrained_small_cnn``);
- ``"torchvision:<ENUM>"`` for torchvision models: the file torchvision would download, looked up
  in ``$TORCH_HOME/hub/checkpoints`` (``torch.hub.get_dir()``);
- an absolute file path: a torchvision state dict or one saved by this project,

or raises ``DataError`` with one line saying which file is missing and where to put it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from trainables.image_data import DIGITS_SOURCE_CLASSES, DataError, DatasetSpec

__all__ = [
    "ModelSpec",
    "SMALL_CNN",
    "TORCHVISION_MODELS",
    "build_from_spec",
    "build_model",
    "default_cache_dir",
    "pretrained_small_cnn",
    "resolve_model",
    "resolve_weights",
]

SMALL_CNN = "small_cnn"
# Any torchvision classifier whose last layer is a Linear works; these are the tested ones.
TORCHVISION_MODELS = (
    "resnet18",
    "resnet34",
    "resnet50",
    "mobilenet_v3_small",
    "mobilenet_v3_large",
    "efficientnet_b0",
    "convnext_tiny",
)
# Below this side torchvision backbones downsample the image to nothing useful.
_TORCHVISION_MIN_SIDE = 32

# The pretraining recipe of small_cnn's default weights. Changing any entry changes the cache
# key, so a stale file is never reused.
PRETRAIN_SETTINGS: dict[str, Any] = {
    "task": "sklearn-digits",
    "classes": list(DIGITS_SOURCE_CLASSES),
    "arch": "small_cnn-v2",
    "epochs": 12,
    "batch_size": 64,
    "lr": 3e-3,
    "weight_decay": 1e-4,
    "augment": "shift1",
    "seed": 0,
}


@dataclass(frozen=True)
class ModelSpec:
    """What to build in a trial (small and picklable).

    Attributes
    ----------
    name : str
        ``small_cnn`` or a torchvision model name.
    num_classes, in_channels : int
    weights : str
        Resolved weights: ``"none"``, ``"pretrained"``, ``"torchvision:<ENUM>"`` or a file path.
    cache_dir : str or None
        Where ``small_cnn``'s pretraining is cached; None for the default.
    """

    name: str
    num_classes: int
    in_channels: int
    weights: str = "none"
    cache_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def default_cache_dir() -> Path:
    """``$TUNE_PIPELINE_CACHE``, else ``~/.cache/tune-pipeline``."""
    env = os.environ.get("TUNE_PIPELINE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tune-pipeline"


def _known_model(name: str) -> bool:
    if name == SMALL_CNN or name in TORCHVISION_MODELS:
        return True
    try:
        import torchvision.models as tvm

        return name in tvm.list_models(module=tvm)
    except Exception:
        return False


def resolve_weights(model: str, weights: str | os.PathLike | None) -> str:
    """Check that weights are usable offline and name them canonically.

    Parameters
    ----------
    model : str
        ``small_cnn`` or a torchvision classification model name.
    weights : str, path-like or None
        None, ``"default"`` or ``"pretrained"``: the model's default pretrained weights (small_cnn: the cached
        digits pretraining; torchvision: ``DEFAULT``, i.e. ImageNet); ``"none"``/``"scratch"``:
        random init; a torchvision weights enum name (``IMAGENET1K_V1``); or a file path.

    Returns
    -------
    str
        ``"none"``, ``"pretrained"``, ``"torchvision:<ENUM>"`` or an absolute file path.

    Raises
    ------
    DataError
        Unknown model, unknown weights, or a weights file that is not on disk.
    """
    if not _known_model(model):
        raise DataError(
            f"unknown model '{model}': use {SMALL_CNN} or a torchvision classifier such as "
            f"{', '.join(TORCHVISION_MODELS[:3])}"
        )
    key = "default" if weights is None else str(weights)
    lowered = key.lower()
    if lowered in ("none", "scratch", "random"):
        return "none"
    path = Path(key).expanduser()
    if path.is_file():  # an existing file wins over a same-named keyword
        return str(path.resolve())
    if model == SMALL_CNN and lowered in ("default", "pretrained", "digits"):
        return "pretrained"  # built on demand and cached: nothing to check up front
    if model != SMALL_CNN and (
        lowered in ("default", "pretrained") or key.isupper() or lowered.startswith("torchvision:")
    ):
        enum_name = key.split(":", 1)[1] if lowered.startswith("torchvision:") else key
        # "pretrained" (README's word for it, and small_cnn's): torchvision's DEFAULT weights.
        enum_name = "DEFAULT" if enum_name.lower() in ("default", "pretrained") else enum_name
        path, resolved = _torchvision_weights_file(model, enum_name)
        if not path.is_file():
            raise DataError(
                f"weights {model}.{resolved} are not on disk: put {path.name} in {path.parent} "
                "(or set TORCH_HOME, pass --weights FILE, or --weights none to train from scratch)"
            )
        return f"torchvision:{resolved}"
    if os.sep in key or path.suffix in (".pt", ".pth", ".bin"):
        raise DataError(f"weights file '{key}' does not exist")
    raise DataError(
        f"unknown weights '{key}' for {model}: use default (or pretrained), none, a torchvision weights name "
        "or a file path"
    )


def _torchvision_weights_file(model: str, enum_name: str) -> tuple[Path, str]:
    import torch.hub
    import torchvision.models as tvm

    try:
        enum = tvm.get_model_weights(model)
    except (ValueError, KeyError):
        raise DataError(f"torchvision model '{model}' has no pretrained weights") from None
    try:
        member = enum.DEFAULT if enum_name == "DEFAULT" else enum[enum_name]
    except KeyError:
        names = ", ".join(m.name for m in enum)
        raise DataError(f"unknown weights '{enum_name}' for {model}: use one of {names}") from None
    filename = os.path.basename(member.url)
    return Path(torch.hub.get_dir()) / "checkpoints" / filename, member.name


def resolve_model(
    name: str,
    weights: str | os.PathLike | None,
    data_spec: DatasetSpec,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> ModelSpec:
    """Validate a model choice against a dataset; cheap, for use before Ray starts.

    Parameters
    ----------
    name : str
    weights : str, path-like or None
        As for ``resolve_weights``.
    data_spec : DatasetSpec
        Gives the number of classes and input channels.
    cache_dir : path-like, optional
        Cache of ``small_cnn``'s pretraining.

    Returns
    -------
    ModelSpec
    """
    resolved = resolve_weights(name, weights)
    return ModelSpec(
        name=name,
        num_classes=data_spec.num_classes,
        in_channels=data_spec.in_channels,
        weights=resolved,
        cache_dir=None if cache_dir is None else str(Path(cache_dir).expanduser().resolve()),
    )


# --- modules -----------------------------------------------------------------------------------
def _modules():
    """Build the nn.Module classes on first use, so importing this file does not import torch."""
    import torch
    from torch import nn
    from torch.nn import functional as F

    class InputAdapter(nn.Module):
        """Repeat grayscale to the backbone's channels and upsample images below a minimum side."""

        def __init__(self, data_channels: int, model_channels: int, min_side: int = 0):
            super().__init__()
            self.repeat = model_channels if data_channels == 1 and model_channels > 1 else 1
            self.min_side = min_side

        def forward(self, x):
            if self.repeat > 1:
                x = x.expand(-1, self.repeat, -1, -1)
            side = min(x.shape[-2:])
            if self.min_side and side < self.min_side:
                scale = self.min_side / side
                x = F.interpolate(x, scale_factor=scale, mode="bilinear", align_corners=False)
            return x

    class SmallCNN(nn.Sequential):
        """Four 3x3 conv + batch-norm + ReLU layers, a 2x2 max pool, then a 2x2 adaptive pool.

        The adaptive pool keeps coarse layout (which half of a digit holds the stroke), which
        global pooling would throw away, and makes the network size-agnostic: the backbone
        pretrained on 8x8 digits also runs on 28x28 or 32x32 images.
        """

        def __init__(self, in_channels: int = 1, width: int = 32):
            def block(cin, cout):
                return [
                    nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                    nn.BatchNorm2d(cout),
                    nn.ReLU(inplace=True),
                ]

            super().__init__(
                *block(in_channels, width),
                *block(width, width),
                nn.MaxPool2d(2),
                *block(width, 2 * width),
                *block(2 * width, 2 * width),
                nn.AdaptiveAvgPool2d(2),
                nn.Flatten(),
            )
            self.out_features = 2 * width * 4

    class FineTuneModel(nn.Module):
        """``head(backbone(adapter(x)))`` with the backbone and head as separate groups."""

        def __init__(self, adapter, backbone, head):
            super().__init__()
            self.adapter, self.backbone, self.head = adapter, backbone, head

        def forward(self, x):
            return self.head(self.backbone(self.adapter(x)))

        def backbone_parameters(self):
            return list(self.backbone.parameters())

        def head_parameters(self):
            return list(self.head.parameters())

    return torch, nn, InputAdapter, SmallCNN, FineTuneModel


def build_model(
    name: str,
    num_classes: int,
    weights: str | os.PathLike | None = None,
    *,
    in_channels: int = 1,
    cache_dir: str | os.PathLike | None = None,
):
    """Build a model with a fresh ``num_classes`` head on a (pretrained) backbone.

    Parameters
    ----------
    name : str
        ``small_cnn`` or a torchvision classification model (``resnet18``,
        ``mobilenet_v3_small``, ...).
    num_classes : int
    weights : str, path-like or None
        As for ``resolve_weights``; None means the model's default pretrained weights, so pass
        ``"none"`` for a randomly initialized model.
    in_channels : int
        Channels of the data; grayscale is repeated to 3 channels for torchvision models.
    cache_dir : path-like, optional
        Cache of ``small_cnn``'s pretraining.

    Returns
    -------
    torch.nn.Module
        A ``FineTuneModel`` with ``backbone_parameters()`` and ``head_parameters()``.
    """
    resolved = resolve_weights(name, weights)
    torch, nn, InputAdapter, SmallCNN, FineTuneModel = _modules()
    if name == SMALL_CNN:
        backbone = SmallCNN(in_channels=in_channels)
        adapter = InputAdapter(in_channels, in_channels)
        if resolved == "pretrained":
            state = torch.load(
                pretrained_small_cnn(cache_dir), map_location="cpu", weights_only=True
            )
            _load_small_cnn_backbone(backbone, state)
        elif resolved != "none":
            _load_small_cnn_backbone(backbone, _read_state_dict(resolved))
        head = nn.Linear(backbone.out_features, num_classes)
        return FineTuneModel(adapter, backbone, head)

    import torchvision.models as tvm

    network = tvm.get_model(name, weights=None)
    state, saved_here = None, False
    if resolved.startswith("torchvision:"):
        path, _ = _torchvision_weights_file(name, resolved.split(":", 1)[1])
        state = torch.load(path, map_location="cpu", weights_only=True)
    elif resolved != "none":
        state = _read_state_dict(resolved)
        # Saved by this project: keys under "backbone.", whose classifier is already removed.
        saved_here = any(k.startswith("backbone.") for k in state)
    if state is not None and not saved_here:
        _load_torchvision_state(network, state, name, classifier=_last_linear(network, nn))
    in_features = _replace_last_linear(network, nn)
    if state is not None and saved_here:
        _load_torchvision_state(network, _strip(state, "backbone."), name, classifier=None)
    if in_features is None:
        in_features = _probe_features(network, torch)
    head = nn.Linear(in_features, num_classes)
    adapter = InputAdapter(in_channels, 3, min_side=_TORCHVISION_MIN_SIDE)
    return FineTuneModel(adapter, network, head)


def build_from_spec(spec: ModelSpec):
    """``build_model`` from a resolved ``ModelSpec``."""
    return build_model(
        spec.name,
        spec.num_classes,
        spec.weights,
        in_channels=spec.in_channels,
        cache_dir=spec.cache_dir,
    )


def _read_state_dict(path: str) -> dict:
    import torch

    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise DataError(
            f"weights file '{path}' cannot be read: {type(exc).__name__}: {exc}"
        ) from None
    for key in ("model_state", "state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise DataError(f"weights file '{path}' holds no state dict")
    return state


def _strip(state: dict, prefix: str) -> dict:
    return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}


def _load_small_cnn_backbone(backbone, state: dict) -> None:
    if any(k.startswith("backbone.") for k in state):
        state = _strip(state, "backbone.")
    first = backbone[0].weight
    weight = state.get("0.weight")
    if weight is not None and weight.shape[1] != first.shape[1]:
        # Pretrained on grayscale, used on RGB (or back): spread the summed filter over the new
        # channels so the first layer's response to a grey image stays the same.
        summed = weight.sum(dim=1, keepdim=True) / first.shape[1]
        state = {**state, "0.weight": summed.expand(-1, first.shape[1], -1, -1).clone()}
    try:
        backbone.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise DataError(f"weights do not fit small_cnn: {str(exc).splitlines()[0]}") from None


def _last_linear(network, nn):
    last = None
    for module_name, module in network.named_modules():
        if isinstance(module, nn.Linear):
            last = module_name
    return last


def _replace_last_linear(network, nn) -> int | None:
    module_name = _last_linear(network, nn)
    if module_name is None:
        return None
    parent_name, _, child = module_name.rpartition(".")
    parent = network.get_submodule(parent_name) if parent_name else network
    linear = getattr(parent, child) if not child.isdigit() else parent[int(child)]
    if child.isdigit():
        parent[int(child)] = nn.Identity()
    else:
        setattr(parent, child, nn.Identity())
    return linear.in_features


def _probe_features(network, torch) -> int:
    with torch.no_grad():
        network.eval()
        return int(network(torch.zeros(1, 3, 64, 64)).shape[1])


def _load_torchvision_state(network, state: dict, name: str, classifier: str | None) -> None:
    own = network.state_dict()
    # The classifier of a checkpoint trained on other classes does not fit and is replaced
    # anyway; everything else must match, or these are another architecture's weights.
    fitting = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    allowed = {f"{classifier}.weight", f"{classifier}.bias"} if classifier else set()
    bad = [
        k
        for k in own
        if k not in fitting and k not in allowed and not k.endswith("num_batches_tracked")
    ]
    if bad:
        raise DataError(
            f"weights do not fit {name}: {len(bad)} tensors missing or of another shape "
            f"(first: {bad[0]})"
        )
    network.load_state_dict(fitting, strict=False)


# --- small_cnn pretraining cache ---------------------------------------------------------------
def pretrain_cache_key(settings: dict[str, Any] | None = None) -> str:
    """Hash of the pretraining recipe (and library versions that change the result)."""
    import torch

    blob = json.dumps(
        {"settings": settings or PRETRAIN_SETTINGS, "torch": torch.__version__.split("+")[0]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


@contextlib.contextmanager
def _file_lock(path: Path):
    # One pretraining per machine even when many trials start at once; the atomic rename below
    # is what keeps the cache valid, the lock only saves duplicate work.
    try:
        import fcntl
    except ImportError:  # not POSIX: fall back to duplicate (but still safe) work
        yield
        return
    with open(path, "a+b") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def pretrained_small_cnn(cache_dir: str | os.PathLike | None = None) -> Path:
    """The cached pretrained ``small_cnn`` weights, training them once if absent.

    Pretraining is supervised on scikit-learn's digits 0-4 with one-pixel random shifts; the
    fine-tuning target (``digits-transfer``) is digits 5-9, so no target image is ever seen.

    Parameters
    ----------
    cache_dir : path-like, optional
        Defaults to ``default_cache_dir()``.

    Returns
    -------
    pathlib.Path
        The state-dict file ``small_cnn-digits04-<hash>.pt``.
    """
    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"small_cnn-digits04-{pretrain_cache_key()}.pt"
    if target.is_file():
        return target
    with _file_lock(folder / f".{target.name}.lock"):
        if target.is_file():  # another process finished while this one waited
            return target
        state = _pretrain_small_cnn(PRETRAIN_SETTINGS)
        import torch

        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as handle:
                torch.save(state, handle)
            os.replace(tmp, target)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
    return target


def _pretrain_small_cnn(settings: dict[str, Any]) -> dict:
    import torch
    from torch.nn import functional as F

    _, nn, InputAdapter, SmallCNN, FineTuneModel = _modules()
    # A model this small runs fastest on one thread, and more threads only fight over shared
    # cores with concurrent trials.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        # On the global RNG's own fork: the trial that finds the cache cold builds its head
        # from the RNG its seed set, as one that finds it warm does. Pretraining reseeded and
        # drew from it, so that head came out the same for every seed.
        with torch.random.fork_rng(devices=[]):
            return _pretrain_loop(settings, torch, F, nn, InputAdapter, SmallCNN,
                                  FineTuneModel)
    finally:
        torch.set_num_threads(threads)


def _pretrain_loop(settings, torch, F, nn, InputAdapter, SmallCNN, FineTuneModel) -> dict:
    import numpy as np

    from trainables.image_data import load_digits_images

    generator = torch.Generator().manual_seed(settings["seed"])
    # The CPU's generator alone (pretraining runs on the CPU): torch.manual_seed would reseed
    # every GPU's too, which the caller's fork_rng does not put back.
    torch.random.default_generator.manual_seed(settings["seed"])
    images, labels = load_digits_images(tuple(settings["classes"]))
    x = torch.from_numpy(images).float() / 255.0
    x = (x - x.mean()) / x.std()
    y = torch.from_numpy(labels)
    backbone = SmallCNN(in_channels=1)
    model = FineTuneModel(
        InputAdapter(1, 1), backbone, nn.Linear(backbone.out_features, len(settings["classes"]))
    )
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=settings["lr"], weight_decay=settings["weight_decay"]
    )
    steps = settings["epochs"] * int(np.ceil(len(y) / settings["batch_size"]))
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, settings["lr"], total_steps=steps)
    model.train()
    for _ in range(settings["epochs"]):
        order = torch.randperm(len(y), generator=generator)
        for start in range(0, len(y), settings["batch_size"]):
            idx = order[start : start + settings["batch_size"]]
            batch = _random_shift(x[idx], generator)
            loss = F.cross_entropy(model(batch), y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _random_shift(batch, generator):
    """Shift each image by up to one pixel in each direction (zero fill)."""
    import torch

    padded = torch.nn.functional.pad(batch, (1, 1, 1, 1))
    out = torch.empty_like(batch)
    offsets = torch.randint(0, 3, (len(batch), 2), generator=generator)
    height, width = batch.shape[-2:]
    for i, (dy, dx) in enumerate(offsets.tolist()):
        out[i] = padded[i, :, dy : dy + height, dx : dx + width]
    return out
