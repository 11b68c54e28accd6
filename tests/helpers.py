"""Helpers only the tests use: library shorthands, test media, running the project's scripts (alone, under torchrun,
as two nodes or as srun tasks), and real faults for child processes (a file-size limit, a root bound by permissions)."""
from __future__ import annotations

import ctypes
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import numpy as np
from torch import Tensor, nn

from utils.checkpoint import load_state, read_checkpoint
from utils.config import PROJECT_ROOT
from utils.demo.synthetic import face_frames, face_photo
from utils.media.video import VideoReader, write_video
from utils.train.classifier_data import balanced_bce_parts


def load_checkpoint(path: str | Path, model: nn.Module | None = None, key: str | None = None) -> Any:
    """Read `path` safely; when `model` is given, load its weights (from `key`, or the one known key).

    Returns the whole checkpoint (usually a dict) so callers can read optimizer state, epoch, etc.
    """
    checkpoint = read_checkpoint(path)
    if model is not None:
        load_state(model, checkpoint, key, source=path)
    return checkpoint


def sampled_frames(path: str | Path, step: int) -> Iterator[tuple[int, np.ndarray]]:
    """Shorthand: open `path` and yield (frame_index, RGB frame) for every `step`-th frame."""
    with VideoReader(path) as reader:
        yield from reader.frames(step)


def balanced_bce(logits: Tensor, targets: Tensor) -> Tensor:
    """The classifier's training loss: the mean of the fake-class and real-class BCE (classes present)."""
    return balanced_bce_parts(logits, targets)[0]


def make_face_video(path: str | Path, face: str = "astronaut", width: int = 320, height: int = 240,
                    n_frames: int = 30, fps: float = 10.0, seed: int = 0, face_height: float = 0.7) -> Path:
    """A small video of one face photo moving over a background; returns its path."""
    frames = (frame for frame, _ in face_frames(face_photo(face), width, height, n_frames, seed, face_height))
    return write_video(path, frames, fps)


def original_classifier_checkpoint(path: str | Path, state_dict: dict) -> Path:
    """A classifier checkpoint in the original's layout, holding `state_dict`: the entries the original's
    save_checkpoint wrote (deep_fake_detect/checkpoint.py), its training's model_params, its log folder as a pathlib
    path, and no MRI record."""
    import pathlib

    import torch

    params = {"model_name": "DeepFakeDetectModel", "label_smoothing": 0.1, "train_transform": "simple",
              "batch_format": "simple", "epochs": 20, "learning_rate": 0.001, "batch_size": 192, "fp16": True,
              "opt_level": "O0", "dataset": "mri", "encoder_name": "tf_efficientnet_b0_ns", "imsize": 224}
    torch.save({"epoch": 17, "model_class_name": "DeepFakeDetectModel", "model_params": params,
                "criterion": "BCEWithLogitsLoss", "log_dir": pathlib.PosixPath("/logs/20210101/deep_fake"),
                "model_state_dict": state_dict, "optimizer_state_dict": {"state": {}, "param_groups": []},
                "amp": None}, path)
    return Path(path)


def make_broken_files(folder: str | Path, good_video: str | Path) -> dict[str, Path]:
    """Files that must be rejected cleanly: empty, truncated (half of `good_video`), text named .mp4."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    data = Path(good_video).read_bytes()
    files = {
        "empty": folder / "empty.mp4",
        "truncated": folder / "truncated.mp4",
        "text": folder / "text.mp4",
    }
    files["empty"].write_bytes(b"")
    files["truncated"].write_bytes(data[: len(data) // 2])
    files["text"].write_text("this is not a video\n" * 20, encoding="utf-8")
    return files


def set_flags(settings: Iterable[str]) -> list[str]:
    """Config settings as the scripts take them: `--set KEY=VALUE` for each."""
    return [arg for setting in settings for arg in ("--set", setting)]


def run_script(script: str, *args: str, cwd: Path = PROJECT_ROOT, timeout: int = 120) -> subprocess.CompletedProcess:
    """Run one of the project's scripts (e.g. "train_MRI_GAN.py") with this Python; its output is captured as text."""
    return subprocess.run([sys.executable, str(PROJECT_ROOT / script), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout)


def torchrun_two_processes(script: str, *args: str, timeout: int) -> subprocess.CompletedProcess:
    """`torchrun --standalone --nproc_per_node 2 script args` from the project folder: two CPU processes (gloo),
    one thread each; output captured as text."""
    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", script, *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"})


def run_folders(logs: Path, name: str) -> list[Path]:
    """The folders <logs>/<time>/<name> that trainings wrote under the log root `logs` (name: MRI_GAN,
    deep_fake), oldest first."""
    return sorted(path for path in logs.glob(f"*/{name}") if path.is_dir())


def file_size_limit(max_bytes: int):
    """preexec_fn: no file may grow beyond `max_bytes` (writes fail with EFBIG, as on a full quota)."""
    def apply():
        resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))
    return apply


PR_CAPBSET_DROP = 24
CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH = 1, 2


def without_root_override() -> None:
    """preexec_fn: root reads and writes whatever the permission bits say. Drop the two capabilities that let
    it (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH) from the child's bounding set, so the kernel refuses it as it
    refuses anyone else; a no-op for other users."""
    if os.geteuid() != 0:
        return
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for MASTER_PORT)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StillRunning(AssertionError):
    """Raised by run_together: these launches (their indices) were still running at the timeout, and were killed."""

    def __init__(self, running: list[int], timeout: float):
        super().__init__(f"launches {running} still running after {timeout} s (killed)")
        self.running = running


def run_together(launches: list[tuple[list[str], Path, dict]], timeout: int = 300) -> list[subprocess.CompletedProcess]:
    """Start every (command, working folder, environment) at once and wait for all, `timeout` seconds in all;
    whatever still runs then (e.g. processes waiting on each other) is killed with its children, and StillRunning
    names it (the test fails)."""
    processes = [subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  start_new_session=True) for command, cwd, env in launches]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for (command, _, _), process in zip(launches, processes):
            try:
                out, err = process.communicate(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                raise StillRunning([i for i, p in enumerate(processes) if p.poll() is None], timeout) from None
            results.append(subprocess.CompletedProcess(command, process.returncode, out, err))
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return results


def srun_environment(rank: int, world_size: int, port: int) -> dict[str, str]:
    """What srun (plus the usual MASTER_ADDR/MASTER_PORT exports) gives a process on one node: RANK, WORLD_SIZE and
    SLURM_LOCALID, but no LOCAL_RANK."""
    env = {key: value for key, value in os.environ.items() if key != "LOCAL_RANK"}
    env.update(RANK=str(rank), WORLD_SIZE=str(world_size), SLURM_LOCALID=str(rank), MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    return env


def rehearse_on_two_nodes(script: Path, args: Callable[[Path], list[str]], root: Path, started: str,
                          finished: str) -> Path:
    """`torchrun --nnodes 2 --nproc_per_node 1 --node_rank K --master_addr 127.0.0.1` for K = 0, 1: two "nodes" on
    this machine (gloo), node K started in root/nodeK with args(its own log root, root/nodeK/logs). Checks that both
    exit 0, that rank 0 printed `started` once, and that node 1 printed and wrote nothing (only global rank 0
    writes). Returns node 0's log root.

    One retry, for one case only: node 1 has exited, node 0's run is complete (`finished`, a glob in its log root,
    exists) and yet node 0's torchrun has not returned. That is torch elastic's agent waiting in its exit barrier
    (pytorch/pytorch#69520). It happened in one of ten runs of the MRI-GAN rehearsal on 2026-11-30, after our code
    had finished and written everything. Any other hang fails at once."""
    torchrun = Path(sys.executable).with_name("torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    folders = [root / f"node{node}" for node in (0, 1)]
    for attempt in (1, 2):
        for folder in folders:
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
        port = free_port()
        try:
            results = run_together([([str(torchrun), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank",
                                      str(node), "--master_addr", "127.0.0.1", "--master_port", str(port), str(script),
                                      *args(folder / "logs")], folder, env) for node, folder in enumerate(folders)],
                                   timeout=120)
            break
        except StillRunning as hung:
            if attempt == 2 or hung.running != [0] or not any((folders[0] / "logs").glob(finished)):
                raise
            warnings.warn("node 0's torchrun hung in torch elastic's exit barrier after a complete run "
                          "(pytorch/pytorch#69520); running the rehearsal once more")
    for result in results:
        assert result.returncode == 0, result.stderr[-2000:]
    assert results[0].stdout.count(started) == 1 and not results[1].stdout.strip()
    assert list(folders[1].iterdir()) == []  # no log root, nothing else
    return folders[0] / "logs"
