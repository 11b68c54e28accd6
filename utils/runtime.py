"""Run-time plumbing shared by every script: seeding, device and precision choice, determinism, the run folder
and its log.

A run folder is logs/<YYYYmmdd_HHMMSS>/; it receives the resolved config, the package versions and a log file.
The device choice tells a machine without a GPU from one whose GPU this torch build cannot use (driver too old,
GPU architecture not compiled in): the latter is said in one line with its fix, never a silent CPU run.
Work is sized by `available_cpus`: the CPUs this process may run on, not the node's.
"""
from __future__ import annotations

import logging
import os
import platform
import random
import re
import shutil
import subprocess
import sys
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from importlib import metadata
from pathlib import Path
from typing import Mapping

import numpy as np
import torch
from torch import nn

from utils.config import PROJECT_ROOT, SCHEMA, Config
from utils.errors import ConfigError
from utils.fileio import output_error, write_json, write_text, writing

log = logging.getLogger(__name__)

PRECISIONS = SCHEMA["runtime.precision"].choices  # auto, fp32, bf16, fp16
# /proc/cpuinfo flags of the instructions that compute in bfloat16 natively (AMX tiles, AVX-512 BF16);
# without them bf16 is emulated and slower than float32.
NATIVE_BF16_FLAGS = frozenset({"amx_bf16", "avx512_bf16"})
CPUINFO = Path("/proc/cpuinfo")
# the layers whose weights autocast casts to bf16/fp16 on every call (convolutions and linear layers)
AUTOCAST_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                   nn.Linear)
NVIDIA_PROC = Path("/proc/driver/nvidia")  # exists whenever the NVIDIA kernel driver is loaded
# The oldest Linux driver of each CUDA major version (NVIDIA's CUDA compatibility table).
MIN_DRIVER = {11: "450.80", 12: "525.60", 13: "580"}
GPU_HELP = "docs/gpus.md#torch-builds"
_WARNED: set[str] = set()

RECORDED_PACKAGES = (
    "torch", "torchvision", "timm", "facenet-pytorch", "numpy", "opencv-python-headless", "scikit-image",
    "scikit-learn", "scipy", "pandas", "pytorch-msssim", "Pillow", "PyYAML",
)


def available_cpus(env: Mapping[str, str] = os.environ) -> int:
    """The CPUs this process may use: its affinity mask (a cgroup or taskset limit; the whole node for
    os.cpu_count()), capped by SLURM_CPUS_PER_TASK when SLURM set it, which holds even where the affinity is not
    bound to the task's CPUs."""
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    per_task = env.get("SLURM_CPUS_PER_TASK", "")
    return max(1, min(cpus, int(per_task)) if per_task.isdigit() and int(per_task) > 0 else cpus)


def seed_everything(seed: int) -> None:
    """Seed python's `random`, numpy and torch (all devices) with `seed`."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def choose_device(name: str = "auto") -> torch.device:
    """'auto' gives CUDA when this torch build can use a GPU, else the CPU, with one warning when a GPU is present
    but unusable (see cuda_problem); 'cuda' on such a machine, or on one without a GPU, is a configuration error."""
    if name not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {name!r}")
    if name == "cpu":
        return torch.device("cpu")
    problem = cuda_problem()
    if name == "cuda" and problem:
        raise ConfigError(f"device 'cuda' requested but this GPU cannot be used: {problem}")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available (use --device cpu or auto)")
    if problem:
        if problem not in _WARNED:
            _WARNED.add(problem)
            log.warning("device auto: running on the CPU although a GPU is present: %s", problem)
        return torch.device("cpu")
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@dataclass(frozen=True)
class GpuReport:
    """What nvidia-smi says: the driver version, the newest CUDA version it supports, and each GPU's name and
    compute capability ("7.0"). Fields it did not print are None or empty."""

    driver: str | None
    cuda: str | None
    gpus: tuple[tuple[str, str], ...]


def nvidia_smi() -> GpuReport | None:
    """The machine's GPUs as nvidia-smi reports them; None when there is no nvidia-smi or it does not answer."""
    executable = shutil.which("nvidia-smi")
    if executable is None:
        return None
    try:
        header = subprocess.run([executable], capture_output=True, text=True, timeout=30)
        query = subprocess.run([executable, "--query-gpu=name,compute_cap", "--format=csv,noheader"],
                               capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    if header.returncode != 0:
        return None
    driver = re.search(r"Driver Version:\s*([\d.]+)", header.stdout)
    cuda = re.search(r"CUDA Version:\s*([\d.]+)", header.stdout)
    gpus = tuple(tuple(part.strip() for part in line.rsplit(",", 1)) for line in query.stdout.splitlines()
                 if "," in line) if query.returncode == 0 else ()
    return GpuReport(driver and driver.group(1), cuda and cuda.group(1), gpus)


def arch_supported(capability: str, arch_list: list[str]) -> bool:
    """Whether a GPU of compute capability "M.m" can run a build compiled for `arch_list` (torch.cuda.get_arch_list):
    a cubin sm_Mk runs on M.m for k <= m; PTX compute_XY is compiled on the fly for any newer GPU."""
    major, minor = (int(part) for part in capability.split(".")[:2])
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        digits = digits.rstrip("af")  # sm_90a, sm_100f: architecture-specific variants
        if not digits.isdigit() or len(digits) < 2:
            continue
        arch_major, arch_minor = int(digits[:-1]), int(digits[-1])
        if kind == "sm" and arch_major == major and arch_minor <= minor:
            return True
        if kind == "compute" and (arch_major, arch_minor) <= (major, minor):
            return True
    return False


def cuda_problem() -> str | None:
    """Why this torch build cannot use the GPU that is present, with the fix, in one line; None when CUDA works or
    there is no GPU (no nvidia-smi answer and no /proc/driver/nvidia)."""
    arch_list = torch.cuda.get_arch_list()
    if torch.cuda.is_available():
        gpus = [(torch.cuda.get_device_name(i), "{}.{}".format(*torch.cuda.get_device_capability(i)))
                for i in range(torch.cuda.device_count())]
        unsupported = _unsupported_gpus(gpus, arch_list)
        return unsupported and f"{unsupported} ({GPU_HELP})"
    report = nvidia_smi()
    if report is None and not NVIDIA_PROC.exists():
        return None
    build = f"torch {torch.__version__}"
    if torch.version.cuda is None:
        return f"{build} is a CPU-only build; install a CUDA build ({GPU_HELP})"
    problems = []
    need = int(torch.version.cuda.split(".")[0])
    if report is not None and report.cuda and int(report.cuda.split(".")[0]) < need:
        problems.append(f"the NVIDIA driver {report.driver} supports CUDA up to {report.cuda}, but {build} is built "
                        f"for CUDA {torch.version.cuda} and needs driver >= {MIN_DRIVER.get(need, '?')}: update "
                        f"the driver, or install the torch build for CUDA {report.cuda.split('.')[0]}")
    unsupported = _unsupported_gpus(report.gpus if report is not None else [], arch_list)
    if unsupported:
        problems.append(unsupported)
    if problems:
        return f"{'; '.join(problems)} ({GPU_HELP})"
    hidden = os.environ.get("CUDA_VISIBLE_DEVICES")
    if hidden is not None and hidden.strip() in ("", "-1"):
        return f"CUDA_VISIBLE_DEVICES={hidden!r} hides every GPU"
    seen = "nvidia-smi lists GPUs" if report is not None else f"{NVIDIA_PROC} exists but nvidia-smi does not answer"
    return (f"{seen}, yet {build} finds no usable CUDA device (torch.cuda.is_available() is False): check "
            "CUDA_VISIBLE_DEVICES, the container's GPU access, and that the driver matches its kernel module")


def _unsupported_gpus(gpus, arch_list: list[str]) -> str | None:
    if not arch_list:  # some torch versions list no architectures while CUDA is unavailable: nothing to compare
        return None
    bad = [f"GPU {i} ({name}, sm_{capability.replace('.', '')})" for i, (name, capability) in enumerate(gpus)
           if re.fullmatch(r"\d+\.\d+", capability) and not arch_supported(capability, arch_list)]
    if not bad:
        return None
    return (f"{', '.join(bad)}: torch {torch.__version__} has no kernels for it (built for "
            f"{' '.join(arch_list)}); install a torch build that includes it")


def set_deterministic(enabled: bool, device: torch.device) -> None:
    """runtime.deterministic on CUDA: cuDNN chooses deterministic kernels and never auto-tunes, cuBLAS gets a fixed
    workspace (CUBLAS_WORKSPACE_CONFIG, unless already set), and torch uses its deterministic algorithms where it
    has them (a warning names an operation that has none). Call before the first CUDA operation. The CPU is left
    alone: its kernels here already repeat bit for bit, and torch's deterministic mode would slow it down."""
    if device.type != "cuda":
        return
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = enabled
    torch.backends.cudnn.benchmark = not enabled
    torch.use_deterministic_algorithms(enabled, warn_only=True)


@dataclass(frozen=True)
class Precision:
    """How models run: `name` fp32 (no autocast) or bf16/fp16 autocast on `device_type`; `reason` says why."""

    name: str
    device_type: str
    reason: str

    @property
    def dtype(self) -> torch.dtype:
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.name, torch.float32)

    def autocast(self) -> AbstractContextManager:
        """torch.autocast for bf16/fp16; a context that changes nothing for fp32."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.name != "fp32")

    def to_dict(self) -> dict[str, str]:
        return {"name": self.name, "device": self.device_type, "reason": self.reason}

    def cast_for_inference(self, model: nn.Module) -> nn.Module:
        """Store the weights of `model`'s convolutions and linear layers in the autocast dtype, once.

        Autocast casts exactly those weights to bf16/fp16 on every call; cast ahead, a call gives the same outputs
        without re-casting them and without holding a second copy (the generator: 109 MB in bf16). Normalisation
        layers keep their float32 parameters, as under autocast. Inference only, and always under this
        precision's autocast: the model is changed in place and returned; for fp32 nothing changes."""
        if self.name != "fp32":
            for module in model.modules():
                if isinstance(module, AUTOCAST_LAYERS):
                    module.to(self.dtype)
        return model


def cpu_flags(cpuinfo: Path = CPUINFO) -> set[str]:
    """The CPU feature flags of /proc/cpuinfo (empty where there is none, e.g. not Linux)."""
    try:
        text = cpuinfo.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return set()
    for line in text.splitlines():
        if line.startswith("flags"):
            return set(line.partition(":")[2].split())
    return set()


def choose_precision(name: str, device: torch.device | str, flags: set[str] | None = None) -> Precision:
    """Resolve runtime.precision (auto | fp32 | bf16 | fp16) for `device`, and log the choice and why.

    auto: on CUDA, mixed precision (bf16 where the GPU supports it, else fp16); on a CPU, bf16 only when
    its flags (`flags`, default /proc/cpuinfo) show native bf16 (amx_bf16 or avx512_bf16), else fp32.
    A forced value is used as given; bf16 on a GPU without bf16 support is a configuration error.
    """
    if name not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    device_type = torch.device(device).type
    if name == "fp32":
        choice = Precision("fp32", device_type, "requested")
    elif device_type == "cuda":
        bf16 = torch.cuda.is_bf16_supported()
        if name == "auto":
            choice = Precision("bf16" if bf16 else "fp16", "cuda", "auto: CUDA mixed precision "
                               + ("(the GPU supports bf16)" if bf16 else "(fp16: the GPU has no bf16)"))
        elif name == "bf16" and not bf16:
            raise ConfigError("precision bf16 requested but this GPU does not support bf16 (use fp16 or auto)")
        else:
            choice = Precision(name, "cuda", "requested")
    else:
        native = sorted(NATIVE_BF16_FLAGS & (cpu_flags() if flags is None else set(flags)))
        if name == "auto":
            choice = (Precision("bf16", device_type, f"auto: the CPU has native bf16 ({', '.join(native)})") if native
                      else Precision("fp32", device_type, "auto: the CPU has no native bf16 (no amx_bf16 or "
                                                          "avx512_bf16 flag)"))
        else:
            choice = Precision(name, device_type, "requested" + ("" if name == "bf16" and native
                                                                 else " (not native on this CPU: slower than fp32)"))
    log.info("precision %s on %s: %s", choice.name, choice.device_type, choice.reason)
    return choice


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
    with writing(root):
        run_root = fresh_folder(root / datetime.now().strftime("%Y%m%d_%H%M%S"), first_suffix=1)
        record_run(run_root, cfg)
        run_dir = run_root.joinpath(*parts)
        run_dir.mkdir(parents=True, exist_ok=True)
    return run_dir


def fresh_folder(base: Path, first_suffix: int = 2) -> Path:
    """Create and return `base`, or the first of base_<first_suffix>, base_<first_suffix + 1>, ... not taken yet:
    earlier results are never overwritten."""
    for attempt in range(first_suffix - 1, 1000):
        folder = base if attempt == first_suffix - 1 else base.with_name(f"{base.name}_{attempt}")
        try:
            folder.mkdir(parents=True)
            return folder
        except FileExistsError:
            continue
    raise RuntimeError(f"no free folder name next to {base}")


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
    for existing in logger.handlers:  # a terminal handler keeps the level the root had: the file gets INFO, not stderr
        if existing.level == logging.NOTSET:
            existing.setLevel(logger.getEffectiveLevel())
    logger.setLevel(logging.INFO)
    handler = _RunLogHandler(run_dir / name, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logger.addHandler(handler)
    return logger
