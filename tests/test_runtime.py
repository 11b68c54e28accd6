"""utils/runtime.py: seeding, device choice, and run folders that record config and versions."""
import json
import random

import numpy as np
import pytest
import torch
import yaml

from utils.config import load_config
from utils.errors import ConfigError
from utils.runtime import choose_device, new_run_dir, seed_everything


def _draws():
    return random.random(), np.random.rand(), torch.rand(1).item()


def test_seeding_makes_python_numpy_and_torch_repeat():
    seed_everything(7)
    first = _draws()
    seed_everything(7)
    assert _draws() == first
    seed_everything(8)
    assert _draws() != first


def test_device_choice():
    assert choose_device("cpu") == torch.device("cpu")
    assert choose_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA device is available"):
            choose_device("cuda")


def test_run_folder_records_config_and_versions(tmp_path):
    cfg = load_config(overrides=[f"logging.root_log_dir={tmp_path}", "runtime.seed=123"])
    run_dir = new_run_dir(cfg, "MRI_GAN")
    other = new_run_dir(cfg, "MRI_GAN")
    assert run_dir.name == "MRI_GAN" and run_dir.is_dir()
    run_root = run_dir.parent
    assert run_root.parent == tmp_path
    assert other.parent != run_root  # two runs in the same second get two folders
    assert len(run_root.name) >= 15 and run_root.name[8] == "_"  # YYYYmmdd_HHMMSS
    recorded = yaml.safe_load((run_root / "config.yml").read_text())
    assert recorded["runtime"]["seed"] == 123
    assert recorded == cfg.to_dict()
    info = json.loads((run_root / "versions.json").read_text())
    assert info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"] == torch.__version__
    assert info["seed"] == 123
    assert {"python", "numpy", "facenet-pytorch", "git_commit"} <= set(info["versions"])
