"""How a training loop reports: one small protocol, so the loop is a plain function.

``trainables.finetune.train_loop`` talks only to a ``Session``:

- ``LocalSession``: records metrics in a list and checkpoints in a temp dir (unit tests, scripts);
- ``TrainSession``: inside Ray Train workers (``ray.train.report`` / ``ray.train.get_checkpoint``),
  with DistributedDataParallel when ``world_size > 1``;
- ``TuneSession`` lives in ``pipelines.finetune_trial``, since only pipelines know Tune.

A session also says where tensors go (``device``) and how to wrap the model and data loader for
data-parallel training; the base class does nothing of the sort (one process, one device).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from typing import Any

__all__ = ["LocalSession", "Session", "TrainSession"]


class Session:
    """The reporting protocol of a training loop (single process, CPU by default).

    Attributes
    ----------
    world_rank, world_size : int
        This worker's rank and the number of data-parallel workers.
    num_threads : int or None
        Intra-op threads the loop gives torch (the CPUs this worker was granted); None leaves
        torch's setting alone. More threads than granted cores slow small models down many times
        over on a shared machine.
    """

    world_rank: int = 0
    world_size: int = 1
    num_threads: int | None = None

    def report(self, metrics: dict[str, Any], checkpoint_dir: str | None = None) -> None:
        """Report one epoch's metrics and, optionally, a checkpoint directory.

        Parameters
        ----------
        metrics : dict
            Plain Python numbers, strings and bools.
        checkpoint_dir : str, optional
            A directory the session may copy or move; the caller deletes it afterwards.
        """
        raise NotImplementedError

    def get_checkpoint_dir(self) -> str | None:
        """A local directory holding the checkpoint to resume from, or None."""
        return None

    # --- where and how to train -------------------------------------------------------------
    @property
    def device(self):
        import torch

        return torch.device("cpu")

    def prepare_model(self, model):
        """Move the model to ``device``; wrap it for data-parallel training if needed."""
        return model.to(self.device)

    def prepare_loader(self, loader):
        """Make a DataLoader yield batches on ``device`` (a no-op for one CPU process)."""
        return loader

    def all_reduce_sum(self, values: list[float]) -> list[float]:
        """Sum numbers over all workers (identity for one worker)."""
        return list(values)

    def sync_buffers(self, module) -> None:
        """Make batch-norm statistics equal on all workers (no-op for one worker)."""

    @property
    def is_chief(self) -> bool:
        """Whether this worker writes checkpoints (rank 0)."""
        return self.world_rank == 0


class LocalSession(Session):
    """Keeps everything in memory and a temp dir; for tests and quick local runs.

    Parameters
    ----------
    resume_from : str, optional
        A checkpoint directory to resume from (e.g. ``other_session.latest_checkpoint``).
    root : str, optional
        Where checkpoints are copied; a new temp dir by default (removed by ``close``).
    num_threads : int, optional
        Torch threads for the loop (see ``Session``).

    Attributes
    ----------
    metrics : list of dict
        Every reported dict, in order.
    checkpoints : list of str
        The copied checkpoint directories, in order (``None`` where an epoch had none).
    """

    def __init__(
        self,
        resume_from: str | None = None,
        root: str | None = None,
        num_threads: int | None = None,
    ):
        self.num_threads = num_threads
        self._owns_root = root is None
        self.root = root or tempfile.mkdtemp(prefix="local-session-")
        self.metrics: list[dict[str, Any]] = []
        self.checkpoints: list[str | None] = []
        self._resume_from = resume_from

    def report(self, metrics, checkpoint_dir=None):
        self.metrics.append(dict(metrics))
        if checkpoint_dir is None:
            self.checkpoints.append(None)
            return
        target = os.path.join(self.root, f"checkpoint_{len(self.metrics):06d}")
        shutil.copytree(checkpoint_dir, target)
        self.checkpoints.append(target)

    def get_checkpoint_dir(self):
        return self._resume_from

    @property
    def latest_checkpoint(self) -> str | None:
        kept = [c for c in self.checkpoints if c is not None]
        return kept[-1] if kept else None

    def close(self) -> None:
        if self._owns_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class TrainSession(Session):
    """Inside a Ray Train worker (``TorchTrainer``): V2 reporting and checkpoints.

    Every worker must call ``report`` (it is a barrier in Ray Train); only rank 0 attaches the
    checkpoint, since all ranks hold the same DDP-synchronized model.

    Parameters
    ----------
    resume_from : str or ray.train.Checkpoint, optional
        A checkpoint to start from when Ray Train has none of its own, e.g. the Tune trial's
        checkpoint handed over by the Tune driver.
    num_threads : int, optional
        Torch threads (the worker's CPUs).
    """

    def __init__(self, resume_from=None, num_threads: int | None = None):
        import ray.train

        self.num_threads = num_threads
        context = ray.train.get_context()
        self.world_rank = context.get_world_rank()
        self.world_size = context.get_world_size()
        self._resume_from = resume_from

    def report(self, metrics, checkpoint_dir=None):
        import ray
        import ray.train

        checkpoint = None
        if checkpoint_dir is not None and self.is_chief:
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
        # Rank 0's node goes to trials.parquet's node_id (TuneReportCallback forwards rank 0).
        where = {"node_id": ray.get_runtime_context().get_node_id()}
        ray.train.report({**metrics, **where}, checkpoint=checkpoint)

    def get_checkpoint_dir(self):
        import ray.train

        checkpoint = ray.train.get_checkpoint() or self._resume_from
        if checkpoint is None or isinstance(checkpoint, str):
            return checkpoint
        return local_checkpoint_dir(checkpoint)

    @property
    def device(self):
        import ray.train.torch

        return ray.train.torch.get_device()

    def prepare_model(self, model):
        if self.world_size > 1:
            import ray.train.torch

            return ray.train.torch.prepare_model(model)
        return model.to(self.device)

    def prepare_loader(self, loader):
        if self.world_size > 1:
            import ray.train.torch

            # The loop already shards with its own seeded DistributedSampler.
            return ray.train.torch.prepare_data_loader(loader, add_dist_sampler=False)
        return loader

    def all_reduce_sum(self, values):
        if self.world_size == 1:
            return list(values)
        import torch
        import torch.distributed as dist

        # gloo reduces CPU tensors only; nccl only CUDA ones.
        device = self.device if dist.get_backend() == "nccl" else torch.device("cpu")
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return tensor.cpu().tolist()

    def sync_buffers(self, module):
        if self.world_size == 1:
            return
        import torch
        import torch.distributed as dist

        # DDP hands rank 0's buffers to every rank at the start of each forward, but the last
        # forward of an epoch leaves each rank with statistics of its own shard. Averaging
        # makes every rank score (and rank 0 checkpoint) the same model.
        for buffer in module.buffers():
            if torch.is_floating_point(buffer):
                if dist.get_backend() == "nccl":
                    dist.all_reduce(buffer)
                    buffer.div_(self.world_size)
                else:
                    cpu = buffer.detach().cpu()
                    dist.all_reduce(cpu)
                    buffer.copy_(cpu / self.world_size)


def local_checkpoint_dir(checkpoint) -> str:
    """A local directory with a Ray ``Checkpoint``'s files (downloaded when remote)."""
    import pyarrow.fs

    if isinstance(checkpoint.filesystem, pyarrow.fs.LocalFileSystem):
        return checkpoint.path
    return checkpoint.to_directory()
