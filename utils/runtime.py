"""Run-time plumbing shared by every script: seeding, device choice, and the run folder.

A run folder is logs/<YYYYmmdd_HHMMSS>/; it receives the resolved config, the package versions and a log file.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import random
import subprocess
import sys
from datetime import datetime
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from utils.config import PROJECT_ROOT, Config
from utils.errors import ConfigError

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


def new_run_dir(cfg: Config, *parts: str) -> Path:
    """Create logs/<YYYYmmdd_HHMMSS>[_N]/<parts...> and record the config and versions in the run root.

    Two runs started in the same second get distinct folders (a numeric suffix is added).
    """
    root = cfg.path("logging.root_log_dir")
    root.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now().strftime("%Y%m%d_%H%M%S")
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
    (run_root / "config.yml").write_text(cfg.to_yaml(), encoding="utf-8")
    info = {"versions": package_versions(), "argv": sys.argv, "cwd": os.getcwd(), "config_sources": cfg.sources,
            "seed": cfg["runtime.seed"], "started": datetime.now().isoformat(timespec="seconds")}
    (run_root / "versions.json").write_text(json.dumps(info, indent=2), encoding="utf-8")


def log_to_file(run_dir: Path, name: str = "run.log") -> logging.Logger:
    """Send this process's log records (INFO and up) to `run_dir/name` as well as to stderr warnings."""
    logger = logging.getLogger()
    logger.setLevel(logging.INFO)
    handler = logging.FileHandler(run_dir / name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    return logger
