"""Training and evaluation data loaders whose order depends only on (seed, epoch): the samplers that shard and
skip batches for exact resume, the worker seeding, and rank 0's progress bar."""
from __future__ import annotations

import os
import random
import signal
import threading
from typing import Iterable

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler
from tqdm import tqdm

from utils.train.distributed import DistContext
from utils.train.rng import derive_seed


class ShardSampler(Sampler):
    """Indices `rank, rank + world, ...` with no padding: each item is seen exactly once over all ranks."""

    def __init__(self, length: int, ctx: DistContext):
        self.indices = list(range(ctx.rank, length, ctx.world_size))

    def __iter__(self):
        return iter(self.indices)

    def __len__(self):
        return len(self.indices)


class SkipSampler(Sampler):
    """A sampler's indices without the first `skip` (the batches a resumed run has already done)."""

    def __init__(self, base: Sampler, skip: int = 0):
        self.base, self.skip = base, skip

    def __iter__(self):
        return iter(list(self.base)[self.skip:])

    def __len__(self):
        return max(len(self.base) - self.skip, 0)


def seed_worker(worker_id: int) -> None:
    """worker_init_fn: seed python and numpy from the per-worker torch seed the DataLoader derived, and make the
    worker leave stopping to its rank. Loader workers ignore SIGINT (Ctrl-C reaches the whole process group) and
    every SIGTERM that does not come from their rank: torchrun stops a rank with killpg on its whole session, and
    SLURM may signal every process of the job. The rank got the same signal; it stops at a step boundary and ends
    its workers itself. A SIGTERM from the rank still ends a worker, as the DataLoader ends a stuck one and
    multiprocessing ends its workers at exit; a worker whose rank died ends by itself (the DataLoader's watchdog)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    sigterm_from_parent_only()
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def sigterm_from_parent_only() -> None:
    """Drop SIGTERM unless this process's parent sent it, which ends the process at once (exit 143).

    A signal handler cannot tell who sent the signal, so SIGTERM is blocked in this thread (and in the threads it
    starts later) and a thread takes it with sigwaitinfo, which names the sender. SIGTERM keeps its default action:
    a thread started before this call does not block it, and the kernel may hand it the signal, which then ends
    the process as it always did. With SIG_IGN instead it would be dropped, and a parent that ends its workers
    with one SIGTERM at exit (multiprocessing does) would wait for this one for ever. A program the worker runs
    would inherit the block; the data sets run none."""
    if not hasattr(signal, "sigwaitinfo"):  # macOS, Windows: SIGTERM keeps its default
        return
    parent = os.getppid()
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})

    def take_sigterm() -> None:
        while signal.sigwaitinfo({signal.SIGTERM}).si_pid != parent:
            pass
        os._exit(128 + signal.SIGTERM)  # the shell's code for death by SIGTERM

    threading.Thread(target=take_sigterm, name="sigterm-from-parent", daemon=True).start()


def make_loader(dataset: Dataset, batch_size: int, ctx: DistContext, *, seed: int, epoch: int = 0,
                workers: int = 0, shuffle: bool = False, training: bool = True, skip_batches: int = 0,
                drop_last: bool = False) -> DataLoader:
    """A DataLoader whose order depends only on (seed, epoch), not on global RNG state or worker count.

    training=True under torchrun: DistributedSampler (equal batch counts on every rank, so DDP never waits
    forever); training=False: ShardSampler (every item once, for exact evaluation sums).
    `batch_size` is per process. `skip_batches` drops the first batches of this epoch (exact resume).
    """
    if ctx.distributed and training:
        base = DistributedSampler(dataset, ctx.world_size, ctx.rank, shuffle=shuffle, seed=seed, drop_last=drop_last)
        base.set_epoch(epoch)
    elif ctx.distributed:
        base = ShardSampler(len(dataset), ctx)
    elif shuffle:
        base = RandomSampler(dataset, generator=torch.Generator().manual_seed(derive_seed(seed, epoch)))
    else:
        base = SequentialSampler(dataset)
    # The loader draws its worker base seed from `generator`; without one it would consume global RNG.
    return DataLoader(dataset, batch_size=batch_size, sampler=SkipSampler(base, skip_batches * batch_size),
                      num_workers=workers, worker_init_fn=seed_worker, drop_last=drop_last,
                      generator=torch.Generator().manual_seed(derive_seed(seed, epoch, 1)),
                      pin_memory=ctx.device.type == "cuda")


def progress(iterable: Iterable, ctx: DistContext, **kwargs) -> tqdm:
    """A tqdm bar on rank 0; other ranks iterate silently."""
    return tqdm(iterable, disable=not ctx.is_main, dynamic_ncols=True, leave=False, **kwargs)
