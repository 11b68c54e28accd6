"""utils/runtime.py: seeding, device choice (and why a present GPU cannot be used), CUDA determinism, run
folders that record config and versions, the CPUs a process may use, and what a repeated stop signal means."""
import json
import logging
import os
import random
import signal
import subprocess
import sys

import numpy as np
import pytest
import torch
import yaml

from utils.config import PROJECT_ROOT, load_config
from utils.errors import ConfigError
from utils.runtime import (
    NATIVE_BF16_FLAGS,
    arch_supported,
    available_cpus,
    choose_device,
    choose_precision,
    cpu_flags,
    cuda_problem,
    new_run_dir,
    seed_everything,
    set_deterministic,
)


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


def _conv_output_dtype(precision, device="cpu"):
    conv = torch.nn.Conv2d(3, 4, 3).to(device)
    with torch.inference_mode(), precision.autocast():
        return conv(torch.randn(1, 3, 8, 8, device=device)).dtype


def test_forced_fp32_runs_without_autocast():
    precision = choose_precision("fp32", "cpu", flags={"avx512_bf16"})
    assert (precision.name, precision.reason) == ("fp32", "requested")
    assert _conv_output_dtype(precision) == torch.float32


def test_auto_on_a_cpu_takes_bf16_only_with_native_bf16_flags():
    for flags in ({"avx512f", "avx512_bf16"}, {"amx_tile", "amx_bf16"}):
        precision = choose_precision("auto", "cpu", flags=flags)
        assert precision.name == "bf16" and "native bf16" in precision.reason
        assert _conv_output_dtype(precision) == torch.bfloat16
    for flags in (set(), {"avx512f", "avx512bw", "avx2"}):  # AVX-512 without BF16 would only emulate it
        precision = choose_precision("auto", "cpu", flags=flags)
        assert precision.name == "fp32" and "no native bf16" in precision.reason
        assert _conv_output_dtype(precision) == torch.float32


def test_auto_on_this_cpu_reads_proc_cpuinfo():
    with open("/proc/cpuinfo") as handle:
        flags = next(line for line in handle if line.startswith("flags")).split(":", 1)[1].split()
    assert cpu_flags() == set(flags)
    expected = "bf16" if NATIVE_BF16_FLAGS & set(flags) else "fp32"
    assert choose_precision("auto", "cpu").name == expected


def test_cpuinfo_without_flags_means_no_bf16(tmp_path):
    assert cpu_flags(tmp_path / "missing") == set()
    (tmp_path / "cpuinfo").write_text("processor\t: 0\nflags\t\t: fpu sse2 amx_bf16\n")
    assert cpu_flags(tmp_path / "cpuinfo") == {"fpu", "sse2", "amx_bf16"}


def test_auto_on_cuda_is_mixed_precision(monkeypatch):
    """The CUDA branch without a GPU: only the bf16 capability query is replaced."""
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: True)
    assert choose_precision("auto", "cuda", flags=set()).name == "bf16"
    assert choose_precision("fp16", "cuda").name == "fp16"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *args, **kwargs: False)
    precision = choose_precision("auto", "cuda", flags={"amx_bf16"})  # the CPU's flags do not matter on CUDA
    assert (precision.name, precision.device_type) == ("fp16", "cuda")
    with pytest.raises(ConfigError, match="does not support bf16"):
        choose_precision("bf16", "cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_on_a_real_gpu_runs_the_chosen_half_type():
    precision = choose_precision("auto", "cuda")
    assert _conv_output_dtype(precision, "cuda") == precision.dtype != torch.float32


def test_precision_flag_and_config_key_are_validated():
    assert load_config(overrides=["runtime.precision=bf16"])["runtime.precision"] == "bf16"
    with pytest.raises(ConfigError, match="runtime.precision"):
        load_config(overrides=["runtime.precision=int8"])


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
    assert info["versions"]["torch"] in (torch.__version__.split("+")[0], torch.__version__)
    assert info["seed"] == 123
    assert {"python", "numpy", "facenet-pytorch", "git_commit"} <= set(info["versions"])


def test_training_reproduces_the_papers_fp32_unless_asked():
    from utils.train.precision import MixedPrecision, training_precision

    cpu = torch.device("cpu")
    paper = load_config()  # fp16: true with apex opt_level O0, as the original: FP32
    assert training_precision(paper, cpu).name == "fp32"  # the MRI-GAN
    assert training_precision(paper, cpu, paper["deep_fake.training.model_params.fp16"],
                              paper["deep_fake.training.model_params.opt_level"]).name == "fp32"
    assert training_precision(paper, cpu, True, "O1").name == choose_precision("auto", cpu).name  # mixed precision
    assert training_precision(paper, cpu, False, "O2").name == "fp32"  # fp16: false turns apex off
    asked = load_config(overrides=["runtime.precision=bf16"])
    assert training_precision(asked, cpu).name == "bf16"
    assert MixedPrecision(training_precision(asked, cpu)).scaler is None  # bf16 needs no loss scaling
    assert MixedPrecision(training_precision(load_config(overrides=["runtime.precision=fp16"]), cpu)).scaler is not None
    with pytest.raises(ConfigError, match="opt_level"):
        load_config(overrides=["deep_fake.training.model_params.opt_level=O5"])


def test_a_bf16_training_step_computes_in_bf16_and_updates_the_weights():
    from utils.train.precision import MixedPrecision, training_precision

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    cfg = load_config(overrides=["runtime.precision=bf16"])
    precision = MixedPrecision(training_precision(cfg, torch.device("cpu")))
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    with precision.autocast():
        output = model(torch.randn(2, 3, 8, 8))
        loss = torch.nn.functional.mse_loss(output.float(), torch.ones(2, 1))
    before = model[0].weight.detach().clone()
    precision.backward(loss)
    precision.step(optimizer)
    precision.update()
    assert output.dtype == torch.bfloat16 and torch.isfinite(loss)
    assert model[0].weight.dtype == torch.float32 and not torch.equal(model[0].weight, before)


@pytest.mark.slow  # ~1.7 s of generator passes under bf16 autocast
def test_weights_cast_ahead_give_the_outputs_of_autocast():
    """bf16: convolution and linear weights stored in bf16 once; under autocast the same outputs, bit for bit."""
    from models.mri_gan import Generator

    torch.manual_seed(0)
    model = torch.nn.Sequential(Generator(ngf=8), torch.nn.BatchNorm2d(3), torch.nn.Flatten(),
                                torch.nn.Linear(3 * 256 * 256, 2)).eval()
    x = torch.randn(2, 3, 256, 256)
    bf16 = choose_precision("bf16", "cpu")
    with torch.inference_mode(), bf16.autocast():
        expected = model(x)
    assert bf16.cast_for_inference(model) is model
    dtypes = {type(m).__name__: m.weight.dtype for m in model.modules() if getattr(m, "weight", None) is not None}
    assert dtypes == {"Conv2d": torch.bfloat16, "ConvTranspose2d": torch.bfloat16, "Linear": torch.bfloat16,
                      "BatchNorm2d": torch.float32}
    with torch.inference_mode(), bf16.autocast():
        assert torch.equal(model(x), expected)
    fp32_model = torch.nn.Linear(4, 2)
    choose_precision("fp32", "cpu").cast_for_inference(fp32_model)
    assert fp32_model.weight.dtype == torch.float32


# --- device truth: a GPU that this torch build cannot use is named, never a silent CPU run ------------------

needs_no_cuda = pytest.mark.skipif(torch.cuda.is_available(),
                                   reason="the stubbed nvidia-smi stands for an unusable GPU")


def stub_nvidia_smi(folder, driver: str, cuda: str, gpus: list[tuple[str, str]]):
    """An executable `nvidia-smi` answering like the real one: the header with driver and CUDA version, and the
    name,compute_cap CSV for --query-gpu."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    rows = "\n".join(f"{name}, {capability}" for name, capability in gpus)
    script.write_text(f"""#!/bin/sh
case "$1" in
  --query-gpu=*) printf '%s\\n' "{rows}" ;;
  *) echo "| NVIDIA-SMI {driver}    Driver Version: {driver}    CUDA Version: {cuda}     |" ;;
esac
""")
    script.chmod(0o755)
    return folder


@pytest.fixture
def gpu_machine(tmp_path, monkeypatch):
    """Point PATH at a stub nvidia-smi (made by the returned function) and forget earlier warnings."""
    import utils.runtime

    monkeypatch.setattr(utils.runtime, "NVIDIA_PROC", tmp_path / "no_proc_driver_nvidia")
    monkeypatch.setattr(utils.runtime, "_WARNED", set())

    def make(driver="535.104.05", cuda="12.2", gpus=(("Tesla V100-SXM2-16GB", "7.0"),)):
        folder = stub_nvidia_smi(tmp_path / f"bin_{driver}_{len(gpus)}", driver, cuda, list(gpus))
        monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    return make


@needs_no_cuda
def test_auto_warns_once_when_the_driver_is_too_old_and_the_gpu_not_in_the_build(gpu_machine, caplog):
    gpu_machine(driver="535.104.05", cuda="12.2", gpus=[("Tesla V100-SXM2-16GB", "7.0")])
    with caplog.at_level(logging.WARNING, logger="utils.runtime"):
        assert choose_device("auto") == torch.device("cpu")
        assert choose_device("auto") == torch.device("cpu")
    (warning,) = [record.getMessage() for record in caplog.records]
    assert "535.104.05" in warning and "CUDA up to 12.2" in warning and f"CUDA {torch.version.cuda}" in warning
    assert "driver >= 580" in warning and "GPU 0 (Tesla V100-SXM2-16GB, sm_70)" in warning
    assert "docs/gpus.md#torch-builds" in warning and "\n" not in warning


@needs_no_cuda
def test_device_cuda_on_that_machine_is_one_line_error_with_the_reason(gpu_machine):
    gpu_machine(driver="535.104.05", cuda="12.2")
    with pytest.raises(ConfigError) as error:
        choose_device("cuda")
    message = str(error.value)
    assert "cannot be used" in message and "supports CUDA up to 12.2" in message and "\n" not in message


@needs_no_cuda
def test_a_new_driver_with_an_old_gpu_names_only_the_missing_architecture(gpu_machine):
    gpu_machine(driver="580.65.06", cuda="13.0", gpus=[("Tesla P100-PCIE-16GB", "6.0")])
    problem = cuda_problem()
    assert "GPU 0 (Tesla P100-PCIE-16GB, sm_60)" in problem and "has no kernels" in problem
    assert "driver" not in problem


@needs_no_cuda
def test_a_supported_gpu_that_torch_still_cannot_see_is_reported(gpu_machine):
    gpu_machine(driver="580.65.06", cuda="13.0", gpus=[("NVIDIA A100-SXM4-80GB", "8.0")])
    assert "nvidia-smi lists GPUs" in cuda_problem() and "CUDA_VISIBLE_DEVICES" in cuda_problem()


@needs_no_cuda
def test_the_loaded_driver_alone_counts_as_a_gpu(tmp_path, monkeypatch):
    import utils.runtime

    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi
    monkeypatch.setattr(utils.runtime, "NVIDIA_PROC", tmp_path)  # but /proc/driver/nvidia exists
    assert "nvidia-smi does not answer" in cuda_problem()


def test_without_any_gpu_auto_is_the_cpu_in_silence(tmp_path, monkeypatch, caplog):
    import utils.runtime

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(utils.runtime, "NVIDIA_PROC", tmp_path / "absent")
    with caplog.at_level(logging.WARNING):
        assert cuda_problem() is None and choose_device("auto") == torch.device("cpu")
    assert not caplog.records


@pytest.mark.parametrize("capability, arch_list, supported", [
    ("8.6", ["sm_80"], True),  # a cubin runs on later minor versions of its major version
    ("8.0", ["sm_86"], False),
    ("7.0", ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"], False),  # V100 and this pinned build
    ("12.0", ["sm_90a", "sm_120"], True),
    ("9.0", ["sm_80", "compute_80"], True),  # PTX is compiled for newer GPUs on the fly
    ("7.5", ["compute_80"], False),
])
def test_gpu_architecture_rule(capability, arch_list, supported):
    assert arch_supported(capability, arch_list) is supported


@pytest.mark.slow  # runs train_MRI_GAN.py
@needs_no_cuda
def test_trainer_script_with_device_cuda_stops_in_one_line_naming_the_driver(tmp_path):
    from utils.config import PROJECT_ROOT

    folder = stub_nvidia_smi(tmp_path / "bin", "535.104.05", "12.2", [("Tesla V100-SXM2-16GB", "7.0")])
    env = {**os.environ, "PATH": f"{folder}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run([sys.executable, str(PROJECT_ROOT / "train_MRI_GAN.py"), "--train_from_scratch",
                             "--device", "cuda", "--set", f"logging.root_log_dir={tmp_path / 'logs'}"],
                            capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "supports CUDA up to 12.2" in result.stderr and not (tmp_path / "logs").exists()


# --- determinism on CUDA ----------------------------------------------------------------------------------


@pytest.fixture
def restore_determinism():
    saved = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark,
             torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_deterministic_sets_cudnn_cublas_and_torch_on_cuda_and_leaves_the_cpu_alone(monkeypatch, restore_determinism):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    set_deterministic(True, torch.device("cpu"))
    assert not torch.are_deterministic_algorithms_enabled() and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    set_deterministic(True, torch.device("cuda"))
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    set_deterministic(False, torch.device("cuda"))
    assert not torch.backends.cudnn.deterministic and torch.backends.cudnn.benchmark
    assert not torch.are_deterministic_algorithms_enabled()
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":16:8")  # a value the user chose is kept
    set_deterministic(True, torch.device("cuda"))
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":16:8"


@pytest.mark.gpu
def test_gpu_auto_chooses_cuda_and_this_gpu_is_in_the_build():
    assert cuda_problem() is None and choose_device("auto").type == "cuda"
    capability = "{}.{}".format(*torch.cuda.get_device_capability(0))
    assert arch_supported(capability, torch.cuda.get_arch_list())
    torch.ones(8, device="cuda").sum().item()  # a kernel runs ("no kernel image" would raise here)


# --- the CPUs of this process ----------------------------------------------------------------------------


def test_slurm_cpus_per_task_caps_the_affinity_mask_and_never_raises_it():
    mask = len(os.sched_getaffinity(0))
    assert available_cpus({}) == mask
    assert available_cpus({"SLURM_CPUS_PER_TASK": "1"}) == 1
    assert available_cpus({"SLURM_CPUS_PER_TASK": str(mask + 100)}) == mask
    assert available_cpus({"SLURM_CPUS_PER_TASK": ""}) == mask  # set but empty, as some job scripts export it


# A preprocessing step of one item in this process: what available_cpus says, the workers runtime.workers 0 gives,
# and the threads the item's torch computes with.
CPU_PROBE = """
import torch
from utils.preprocess import jobs
from utils.runtime import available_cpus

threads = []
jobs.run_items("probe", [0], lambda item: threads.append(torch.get_num_threads()) or jobs.Outcome(jobs.DONE), str)
print(available_cpus(), jobs.resolve_workers(0), *threads)
"""


def on_one_cpu():
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # as taskset or a cgroup's cpuset does


@pytest.mark.slow  # a python process
@pytest.mark.parametrize("limit", ["affinity", "SLURM_CPUS_PER_TASK"])
def test_a_process_limited_to_one_cpu_runs_one_preprocessing_worker_with_one_thread(limit):
    if os.cpu_count() < 2:
        pytest.skip("needs a machine with at least 2 CPUs to tell the task's CPUs from the machine's")
    env = {key: value for key, value in os.environ.items() if key not in ("OMP_NUM_THREADS", "SLURM_CPUS_PER_TASK")}
    if limit == "SLURM_CPUS_PER_TASK":
        env[limit] = "1"
    result = subprocess.run([sys.executable, "-c", CPU_PROBE], cwd=PROJECT_ROOT, env=env, capture_output=True,
                            text=True, timeout=120, preexec_fn=on_one_cpu if limit == "affinity" else None)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["1", "1", "1"]


# --- repeated stop signals -------------------------------------------------------------------------------------

# Inside stop_on_signals, the process signals itself twice with argv[1] (SIGTERM or SIGINT), with the grace for a
# repeated SIGTERM set to argv[2] seconds; it prints the request it recorded if it is still alive.
TWO_SIGNALS = """
import os, signal, sys, time
from utils import signals

signals.REPEATED_SIGTERM_GRACE = float(sys.argv[2])
signum = signal.Signals[sys.argv[1]]
with signals.stop_on_signals() as stop:
    for _ in range(2):
        os.kill(os.getpid(), signum)
        time.sleep(0.2)
    print(f"alive, asked to stop by {signal.Signals(stop.signum).name}", flush=True)
"""


def two_signals(name: str, grace: float) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", TWO_SIGNALS, name, str(grace)], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # a python process
def test_a_sigterm_repeated_within_the_grace_is_the_same_stop_request():
    """SLURM's SIGTERM to every process, then torchrun's relay of the batch shell's: one request, stop at the
    next safe point."""
    result = two_signals("SIGTERM", 30)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "alive, asked to stop by SIGTERM"


@pytest.mark.slow  # a python process
def test_a_second_sigterm_after_the_grace_stops_the_process_at_once():
    result = two_signals("SIGTERM", 0.1)
    assert result.returncode == -signal.SIGTERM and not result.stdout


@pytest.mark.slow  # a python process
def test_two_ctrl_c_stop_the_process_at_once():
    result = two_signals("SIGINT", 30)
    assert result.returncode == -signal.SIGINT and not result.stdout
