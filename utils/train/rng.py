"""Random state of a training run: seeding each process, well-mixed derived seeds, and capturing and restoring
every generator (python, numpy, torch, CUDA; per process under torchrun) for exact resume."""
from __future__ import annotations

import random
from contextlib import contextmanager
from typing import Iterator

import numpy as np
import torch
import torch.distributed as dist

from utils.runtime import seed_everything
from utils.train.distributed import DistContext


def seed_process(seed: int, ctx: DistContext) -> None:
    """Seed python, numpy and torch; ranks differ so their dropout masks do (DDP syncs the weights)."""
    seed_everything(seed + ctx.rank)


def derive_seed(*keys: int) -> int:
    """A well-mixed 63-bit seed from integer keys (e.g. run seed, epoch), the same on every process."""
    return int(np.random.SeedSequence([int(k) for k in keys]).generate_state(2, np.uint64)[0] >> 1)



@contextmanager
def seeded_cpu_generators(seed: int) -> Iterator[None]:
    """Inside the block, python's, numpy's and torch's CPU generators start from `seed`; afterwards they are
    back where they were, as if the block had drawn nothing."""
    python_state, numpy_state = random.getstate(), np.random.get_state()
    with torch.random.fork_rng(devices=[]):
        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)
        try:
            yield
        finally:
            random.setstate(python_state)
            np.random.set_state(numpy_state)


def rng_state(device: torch.device | None = None) -> dict:
    """This process's python, numpy, torch and CUDA generator states, in weights_only-loadable types; on CUDA also
    the state of `device` (the one in use) on its own, which a resume restores whatever the GPU count."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),
        "numpy": {"kind": kind, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }
    if device is not None and device.type == "cuda":
        state["cuda_device"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device | None = None) -> None:
    """Restore `rng_state`'s generators; the in-use CUDA generator goes to `device`, every other GPU's only when
    the GPU count is the one saved."""
    random.setstate(_as_tuple(state["python"]))
    numpy = state["numpy"]
    np.random.set_state((numpy["kind"], numpy["keys"].numpy().astype(np.uint32), numpy["pos"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    if device is not None and device.type == "cuda" and "cuda_device" in state:
        torch.cuda.set_rng_state(state["cuda_device"], device)


def torch_rng_of_every_rank(ctx: DistContext) -> list[dict]:
    """The torch (and current CUDA device) generator state of every process: a collective call."""
    own = {"torch": torch.get_rng_state()}
    if ctx.device.type == "cuda":
        own["cuda"] = torch.cuda.get_rng_state(ctx.device)
    gathered = {}
    for name, tensor in own.items():
        parts = [torch.empty_like(tensor, device=ctx.device) for _ in range(ctx.world_size)]
        dist.all_gather(parts, tensor.to(ctx.device))
        gathered[name] = [part.cpu() for part in parts]
    return [{name: gathered[name][rank] for name in gathered} for rank in range(ctx.world_size)]


def _as_tuple(value):
    # python's random state is nested tuples; keep it so even if a loader hands back lists
    return tuple(_as_tuple(item) for item in value) if isinstance(value, (list, tuple)) else value

