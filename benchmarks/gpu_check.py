"""Fine-tuning throughput per precision on a GPU, through the trainables' own loop (no Ray).

For a lent GPU machine, which has PyTorch but no Ray: it imports only ``trainables`` (torch,
torchvision, numpy, pillow). For each model (``small_cnn`` on the offline digits task, and
``resnet18`` on a synthetic 10-class ImageFolder of random 64x64 RGB images written to a temp
folder, so nothing is downloaded) and each precision (fp32, bf16, fp16), it runs
``trainables.finetune.train_loop`` for a few epochs on the device and prints the median training
samples per second of the epochs after the first (the first pays cuDNN's autotuning and
allocator warm-up), the last val accuracy and the peak GPU memory. Random images have nothing to
learn: the resnet18 accuracy line only shows the loop ran, the throughput is the point.

    python benchmarks/gpu_check.py [--device cuda] [--epochs 4] [--images 4096] [--image-size 64]

On a machine without CUDA, ``--device cpu`` runs the same code (slowly; bf16/fp16 autocast on
the CPU), which is how it is tested where no GPU is lent.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

# Run as ``python benchmarks/gpu_check.py`` from the repository root: make the project importable.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)


def write_image_folder(root: str, n_images: int, size: int = 64, classes: int = 10) -> None:
    """``n_images`` random RGB PNGs in ``classes`` class folders (an ImageFolder tree)."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for i in range(n_images):
        folder = os.path.join(root, f"class{i % classes}")
        os.makedirs(folder, exist_ok=True)
        pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:05d}.png"))


def run_one(model_name: str, data_spec, precision: str, epochs: int, device: str,
            batch_size: int) -> dict:
    import torch

    from trainables.finetune import train_loop
    from trainables.image_models import resolve_model
    from trainables.session import LocalSession

    class DeviceSession(LocalSession):
        @property
        def device(self):
            return torch.device(device)

    model_spec = resolve_model(model_name, "none", data_spec)
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()  # (train_loop turns cuDNN's autotuner on itself)
    start = time.perf_counter()
    with DeviceSession() as session:
        train_loop({"batch_size": batch_size, "patience": 0, "lr": 1e-3, "freeze_epochs": 0},
                   data_spec, model_spec, epochs, session, precision)
        metrics = session.metrics
    rates = [m["samples_per_second"] for m in metrics]
    steady = rates[1:] or rates
    return {
        "model": model_name, "precision": precision, "device": device,
        "samples_per_second": round(statistics.median(steady), 1),
        "first_epoch_samples_per_second": round(rates[0], 1),
        "val_accuracy": round(metrics[-1]["val_accuracy"], 4),
        "skipped_steps": sum(m.get("skipped_steps", 0) for m in metrics),
        "peak_memory_mib": (round(torch.cuda.max_memory_allocated() / 2**20, 1)
                            if device.startswith("cuda") else None),
        "wall_s": round(time.perf_counter() - start, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--images", type=int, default=4096, help="resnet18's synthetic images")
    parser.add_argument("--image-size", type=int, default=64, help="their side in pixels")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--models", default="small_cnn,resnet18")
    parser.add_argument("--precisions", default="fp32,bf16,fp16")
    args = parser.parse_args(argv)

    import torch

    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device (use --device cpu)",
              file=sys.stderr)
        return 2
    from trainables.image_data import resolve_dataset

    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu"
    print(f"device {name}; torch {torch.__version__}; {args.epochs} epochs per run; "
          f"batch {args.batch_size}; resnet18 on {args.images} images of {args.image_size} px",
          flush=True)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for model_name in args.models.split(","):
            if model_name == "small_cnn":
                data_spec = resolve_dataset("digits-transfer")
            else:
                folder = os.path.join(tmp, "images")
                if not os.path.isdir(folder):
                    write_image_folder(folder, args.images, size=args.image_size)
                data_spec = resolve_dataset(folder, image_size=args.image_size)
            for precision in args.precisions.split(","):
                if precision == "bf16" and args.device.startswith("cuda") and \
                        not torch.cuda.is_bf16_supported():
                    print(f"{model_name} bf16: not supported on {name}, skipped", flush=True)
                    continue
                try:
                    row = run_one(model_name, data_spec, precision, args.epochs, args.device,
                                  args.batch_size)
                except ImportError as exc:  # e.g. torchvision missing on the lent machine
                    print(f"{model_name} {precision}: skipped ({exc})", flush=True)
                    break
                rows.append(row)
                print(json.dumps(row), flush=True)
    print()
    print(f"{'model':>10} {'precision':>9} {'samples/s':>10} {'vs fp32':>8} {'val acc':>8} "
          f"{'peak MiB':>9}")
    for row in rows:
        base = next((r["samples_per_second"] for r in rows
                     if r["model"] == row["model"] and r["precision"] == "fp32"), None)
        ratio = f"{row['samples_per_second'] / base:.2f}x" if base else "-"
        print(f"{row['model']:>10} {row['precision']:>9} {row['samples_per_second']:>10.1f} "
              f"{ratio:>8} {row['val_accuracy']:>8.4f} {row['peak_memory_mib'] or '-':>9}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
