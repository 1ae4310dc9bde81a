"""A gloo process group for Ray Train's CPU workers, without torch in Train's controller.

``ray.train.torch.TorchConfig`` lives in a module that imports torch at the top, and Train's
controller unpickles the backend config, so with it every multi-worker trial's controller imports
torch (~2.5 CPU-seconds on the project's 2-core machine) only to ask its workers to connect. This
``GlooConfig`` does the same connection for CPU training (what ``TorchConfig(backend="gloo")``
does: MASTER_ADDR/PORT, the torchrun rank variables, ``init_process_group``, and
``destroy_process_group`` at shutdown), and this module imports torch only inside the functions
that run on the workers, which import it for training anyway.

It builds on ``ray.train.backend.BackendConfig``/``Backend`` (Ray's DeveloperAPI for custom
backends) and public torch and ``ray.train`` calls. GPU workers keep ``TorchConfig`` (nccl and
its CUDA device handling).
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from ray.train.backend import Backend, BackendConfig

__all__ = ["GlooConfig"]


@dataclass
class GlooConfig(BackendConfig):
    """``TorchConfig(backend="gloo")`` for Ray Train V2 CPU workers, torch-free on the controller.

    Parameters
    ----------
    timeout_s : int
        Seconds before a process-group operation times out (as ``TorchConfig.timeout_s``).
    """

    timeout_s: int = 1800
    # TorchTrainer reads (and would otherwise set) the backend name.
    backend: str = "gloo"

    @property
    def backend_cls(self):
        return _GlooBackend

    def to_dict(self):
        return {"backend": self.backend, "timeout_s": self.timeout_s}


class _GlooBackend(Backend):
    def on_start(self, worker_group, backend_config: GlooConfig):
        import ray

        address, port = worker_group.execute_single(0, _address_and_free_port)
        size = len(worker_group)
        ray.get([
            worker_group.execute_single_async(
                i, _init_process_group, address, port, size, backend_config.timeout_s
            )
            for i in range(size)
        ])

    def on_shutdown(self, worker_group, backend_config: GlooConfig):
        import ray

        ray.get(worker_group.execute_async(_destroy_process_group))


# --- on the workers ------------------------------------------------------------------------------
def _address_and_free_port() -> tuple[str, int]:
    import ray

    with socket.socket() as s:
        s.bind(("", 0))
        port = s.getsockname()[1]
    return ray.util.get_node_ip_address(), port


def _init_process_group(address: str, port: int, world_size: int, timeout_s: int) -> None:
    from datetime import timedelta

    import ray.train
    import torch.distributed as dist

    context = ray.train.get_context()
    rank = context.get_world_rank()
    # What torchrun (and TorchConfig) sets, for libraries that read them.
    os.environ.update(
        MASTER_ADDR=address,
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_RANK=str(context.get_local_rank()),
        LOCAL_WORLD_SIZE=str(context.get_local_world_size()),
        NODE_RANK=str(context.get_node_rank()),
    )
    dist.init_process_group(
        backend="gloo",
        init_method="env://",
        rank=rank,
        world_size=world_size,
        timeout=timedelta(seconds=timeout_s),
    )


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
