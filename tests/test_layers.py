"""The code's layers (docs/architecture.md#layers): which package may import which, read from the source itself,
and the app's real import set, read from sys.modules after a run in a fresh interpreter."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from utils.config import PROJECT_ROOT

CORE = {"utils.config", "utils.cli", "utils.runtime", "utils.fileio", "utils.checkpoint", "utils.errors",
        "utils.names", "utils.datasets", "utils.csv_log", "utils.plotting", "utils.signals"}
# For each layer, the layers its modules may import (besides third-party packages and their own layer).
ALLOWED = {
    "core": {"core"},
    "media": {"core"},
    "infer": {"core", "media", "models"},
    "evaluation": {"core", "media", "infer", "models"},
    "preprocess": {"core", "media", "infer", "models"},
    "train": {"core", "media", "infer", "evaluation", "models"},
    "demo": {"core", "media", "infer", "evaluation", "preprocess", "train", "models"},
    "cluster": {"core"},
    "models": set(),
}
# What the app's path must never load: training, preprocessing and demo code, and the heavy evaluation libraries.
NOT_ON_THE_APP_PATH = ("utils.train", "utils.preprocess", "utils.demo", "utils.evaluation", "sklearn", "matplotlib")


def layer_of(module: str) -> str | None:
    """The layer of a project module ('utils.media.video' -> 'media'), None for third-party modules."""
    if module == "models" or module.startswith("models."):
        return "models"
    if module in CORE:
        return "core"
    parts = module.split(".")
    if parts[0] == "utils" and len(parts) > 1 and parts[1] in ALLOWED:
        return parts[1]
    if module == "utils":
        return "core"
    return None


def project_imports(path: Path) -> set[str]:
    """Every module a file imports, at any depth (function-level imports count too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)  # `from utils import x`
    return {name for name in found if layer_of(name) is not None}


def library_files() -> list[tuple[str, Path]]:
    files = []
    for path in sorted([*PROJECT_ROOT.glob("utils/**/*.py"), *PROJECT_ROOT.glob("models/*.py")]):
        module = ".".join(path.relative_to(PROJECT_ROOT).with_suffix("").parts)
        files.append((module.removesuffix(".__init__"), path))
    return files


@pytest.mark.parametrize("module, path", library_files(), ids=[m for m, _ in library_files()])
def test_each_module_imports_only_the_layers_below_it(module, path):
    own = layer_of(module)
    wrong = sorted(name for name in project_imports(path)
                   if layer_of(name) != own and layer_of(name) not in ALLOWED[own])
    assert not wrong, f"{module} ({own}) imports {wrong}"


def test_nothing_outside_the_demo_and_the_tests_imports_the_demo():
    scripts = [path for path in PROJECT_ROOT.glob("*.py") if path.name != "demo.py"]
    product = [path for module, path in library_files() if layer_of(module) != "demo"]
    offenders = [str(path.relative_to(PROJECT_ROOT)) for path in scripts + product
                 if any(layer_of(name) == "demo" for name in project_imports(path))]
    assert not offenders


def test_the_layer_check_catches_a_wrong_import(tmp_path):
    """The checker itself: a media module that imports training code is reported."""
    bad = tmp_path / "bad.py"
    bad.write_text("def f():\n    from utils.train.trainer import Trainer\n", encoding="utf-8")
    assert "utils.train.trainer" in project_imports(bad)
    assert layer_of("utils.train.trainer") not in ALLOWED["media"]


APP_RUN = """
import atexit, gc, json, runpy, sys
atexit.register(lambda: print(json.dumps({"modules": sorted(sys.modules), "gc": [gc.isenabled(),  # the app's exit
                                          gc.get_freeze_count()]})))  # runs atexit handlers
sys.argv = ["detect_deepfake_app.py", *sys.argv[1:]]
runpy.run_path("detect_deepfake_app.py", run_name="__main__")
"""


@pytest.mark.slow  # runs the app in a child process
@pytest.mark.parametrize("method", ["plain_frames", "MRI"])
def test_the_app_loads_no_training_preprocessing_demo_or_evaluation_code(app_weights, face_video, tmp_path, method):
    result = subprocess.run([sys.executable, "-c", APP_RUN, "--input_videofile", str(face_video), "--method", method,
                             "--weights_dir", str(app_weights), "--device", "cpu",
                             "--output_json", str(tmp_path / "out.json")],
                            cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    loaded = [name for name in report["modules"] if name.startswith(NOT_ON_THE_APP_PATH)]
    assert not loaded
    assert "utils.infer.detect" in report["modules"]  # the run really went through the app's engine
    enabled, frozen = report["gc"]  # collection paused during start-up, back on after it, the start-up objects
    assert enabled and frozen > 100_000  # set apart
