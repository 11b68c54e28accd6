"""utils/runtime.py: seeding, device choice, and run folders that record config and versions."""
import json
import random

import numpy as np
import pytest
import torch
import yaml

from utils.config import load_config
from utils.errors import ConfigError
from utils.runtime import NATIVE_BF16_FLAGS, choose_device, choose_precision, cpu_flags, new_run_dir, seed_everything


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
    assert info["versions"]["torch"] == torch.__version__.split("+")[0] or info["versions"]["torch"] == torch.__version__
    assert info["seed"] == 123
    assert {"python", "numpy", "facenet-pytorch", "git_commit"} <= set(info["versions"])


def test_training_reproduces_the_papers_fp32_unless_asked():
    from utils.train.loop import MixedPrecision, training_precision

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
    from utils.train.loop import MixedPrecision, training_precision

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.LazyLinear(1))
    precision = MixedPrecision(training_precision(load_config(overrides=["runtime.precision=bf16"]), torch.device("cpu")))
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


def test_large_blocks_get_their_own_mapping_on_glibc():
    import platform

    from utils.runtime import release_large_blocks

    assert release_large_blocks() is (platform.libc_ver()[0] == "glibc")
