"""Run-time plumbing shared by every script: seeding, device choice, the run folder, and stopping on signals.

A run folder is logs/<YYYYmmdd_HHMMSS>/; it receives the resolved config, the package versions and a log file.
Long loops run inside `stop_on_signals`: SIGTERM (a scheduler's preemption notice) and SIGINT (Ctrl-C) then
ask them to stop at the next safe point (between items, at a step boundary) instead of killing the process.
"""
from __future__ import annotations

import logging
import os
import platform
import random
import signal
import subprocess
import sys
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Iterator

import numpy as np
import torch

from utils.config import PROJECT_ROOT, Config
from utils.errors import ConfigError
from utils.fileio import output_error, write_json, write_text, writing

RECORDED_PACKAGES = (
    "torch", "torchvision", "timm", "facenet-pytorch", "numpy", "opencv-python-headless", "scikit-image",
    "scikit-learn", "scipy", "pandas", "albumentations", "pytorch-msssim", "Pillow", "PyYAML",
)


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy and torch (all devices) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(name: str = "auto") -> torch.device:
    """'auto' gives CUDA when available, else the CPU; 'cuda' without a GPU is a configuration error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available (use --device cpu or auto)")
    if name not in ("cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    return torch.device(name)


def package_versions() -> dict[str, str]:
    """Versions of python, the recorded packages, the platform and the git commit of this checkout."""
    versions = {"python": sys.version.split()[0], "platform": platform.platform()}
    for name in RECORDED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    versions["git_commit"] = commit or "unknown"
    versions["cuda_available"] = str(torch.cuda.is_available())
    return versions


def signal_name(signum: int) -> str:
    return signal.Signals(signum).name


@dataclass
class StopRequest:
    """The first stop signal received inside `stop_on_signals` (None until one arrives)."""

    signum: int | None = None


_ACTIVE: list[StopRequest] = []  # the request of the outermost stop_on_signals block, while it runs


@contextmanager
def stop_on_signals() -> Iterator[StopRequest]:
    """Inside the block, SIGTERM and SIGINT only record a request that the caller checks at safe points; a
    second signal stops the process at once. The previous handlers come back on exit. A nested block shares
    the outer block's request, so a signal that arrives between two loops stops the next one before it starts.
    Outside the main thread (where handlers cannot be set) the request never fires."""
    if _ACTIVE:
        yield _ACTIVE[0]
        return
    request = StopRequest()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum, frame):
        if request.signum is not None:  # asked twice: stop now
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
        request.signum = signum

    previous = {signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)}
    _ACTIVE.append(request)
    try:
        yield request
    finally:
        _ACTIVE.clear()
        for signum, old in previous.items():
            signal.signal(signum, old)


def new_run_dir(cfg: Config, *parts: str) -> Path:
    """Create logs/<YYYYmmdd_HHMMSS>[_N]/<parts...> and record the config and versions in the run root.

    Two runs started in the same second get distinct folders (a numeric suffix is added).
    """
    root = cfg.path("logging.root_log_dir")
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
    with writing(root):
        root.mkdir(parents=True, exist_ok=True)
        for attempt in range(1000):
            run_root = root / (stamp if attempt == 0 else f"{stamp}_{attempt}")
            try:
                run_root.mkdir()
                break
            except FileExistsError:
                continue
        else:
            raise RuntimeError(f"could not create a new run folder under {root}")
        record_run(run_root, cfg)
        run_dir = run_root.joinpath(*parts)
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def record_run(run_root: Path, cfg: Config) -> None:
    """Write config.yml (resolved), versions.json and the command line into `run_root`."""
    write_text(run_root / "config.yml", cfg.to_yaml())
    info = {"versions": package_versions(), "argv": sys.argv, "cwd": os.getcwd(), "config_sources": cfg.sources,
            "seed": cfg["runtime.seed"], "started": datetime.now().isoformat(timespec="seconds")}
    write_json(run_root / "versions.json", info, indent=2)


class _RunLogHandler(logging.FileHandler):
    """A log file whose failed write stops the command (OutputError) instead of printing a traceback."""

    def handleError(self, record: logging.LogRecord) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            raise output_error(self.baseFilename, error) from None
        super().handleError(record)


def log_to_file(run_dir: Path, name: str = "run.log") -> logging.Logger:
    """Send this process's log records (INFO and up) to `run_dir/name` as well as to stderr warnings."""
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    handler = _RunLogHandler(run_dir / name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    return logger
