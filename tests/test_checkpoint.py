"""utils/checkpoint.py: safe loading (weights_only) of our checkpoints and the original project's, and one-line
errors for missing, foreign, truncated, malicious, mismatched, locked or too large files; failed checkpoint writes."""
from __future__ import annotations

import os
import pathlib
import resource
import subprocess
import sys

import pytest
import torch

from models.mri_gan import Discriminator, Generator
from tests.helpers import load_checkpoint, without_root_override
from utils.checkpoint import read_checkpoint, save_checkpoint
from utils.config import PROJECT_ROOT
from utils.errors import CheckpointError, ConfigError, OutputError


class RunsAShellCommand:
    """Unpickling this object calls os.system: what a malicious checkpoint does."""

    def __init__(self, marker: pathlib.Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture(scope="module")
def nets():
    torch.manual_seed(0)
    return Generator(ngf=4), Discriminator(ndf=4)


def original_style_checkpoint(path, generator, discriminator):
    """The keys the original train_MRI_GAN.py saved, including its log folder stored as a pathlib path."""
    optimizer = torch.optim.Adam(generator.parameters(), lr=2e-4, betas=(0.5, 0.999))
    torch.save({"epoch": 41, "log_dir": pathlib.PosixPath("/logs/20210101/MRI_GAN"),
                "model_params": {"batch_size": 128, "lr": 0.0002, "tau": 0.3, "log_dir": "/logs/20210101"},
                "generator_state_dict": generator.state_dict(),
                "discriminator_state_dict": discriminator.state_dict(),
                "optimizer_G_state_dict": optimizer.state_dict()}, path)
    return path


def test_missing_file_is_a_one_line_config_error_naming_it(tmp_path):
    with pytest.raises(CheckpointError, match="absent.chkpt: checkpoint file not found") as error:
        read_checkpoint(tmp_path / "absent.chkpt")
    assert isinstance(error.value, ConfigError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize("content", [b"", b"hello, this is text\n", b"this is not a torch file"])
def test_non_checkpoint_files_are_refused_in_one_line(tmp_path, content):
    path = tmp_path / "notes.chkpt"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="notes.chkpt: not a PyTorch checkpoint") as error:
        read_checkpoint(path)
    assert "\n" not in str(error.value)


def test_truncated_checkpoint_is_named_truncated(tmp_path, nets):
    path = original_style_checkpoint(tmp_path / "full.chkpt", *nets)
    cut = tmp_path / "cut.chkpt"
    cut.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(CheckpointError, match="cut.chkpt: truncated or damaged checkpoint"):
        read_checkpoint(cut)
    with pytest.raises(CheckpointError, match="is a folder"):
        read_checkpoint(tmp_path)


def test_malicious_pickle_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.chkpt"
    torch.save({"generator_state_dict": {}, "payload": RunsAShellCommand(marker)}, path)
    with pytest.raises(CheckpointError, match=r"evil.chkpt: refused to load.*(posix|os)\.system.*malicious"):
        read_checkpoint(path)
    assert not marker.exists()


def test_original_checkpoint_with_path_objects_loads_generator_and_discriminator(tmp_path, nets):
    generator, discriminator = nets
    path = original_style_checkpoint(tmp_path / "checkpoint_best_G.chkpt", generator, discriminator)
    fresh_g, fresh_d = Generator(ngf=4), Discriminator(ndf=4)
    checkpoint = load_checkpoint(path, fresh_g, key="generator_state_dict")
    load_checkpoint(path, fresh_d, key="discriminator_state_dict")
    assert checkpoint["epoch"] == 41 and checkpoint["model_params"]["tau"] == 0.3
    assert str(checkpoint["log_dir"]) == "/logs/20210101/MRI_GAN"
    assert torch.equal(fresh_g.final[2].bias, generator.final[2].bias)
    assert torch.equal(fresh_d.model[12].weight, discriminator.model[12].weight)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    ours, theirs = a.state_dict(), b.state_dict()
    return ours.keys() == theirs.keys() and all(torch.equal(ours[name], theirs[name]) for name in ours)


def test_key_is_found_when_only_one_known_key_is_present(tmp_path, nets):
    path = tmp_path / "classifier_like.chkpt"
    torch.save({"model_state_dict": nets[1].state_dict(), "epoch": 3}, path)
    fresh = Discriminator(ndf=4)
    assert not same_weights(fresh, nets[1])  # so the check below can only pass by loading
    load_checkpoint(path, fresh)
    assert same_weights(fresh, nets[1])


def test_bare_state_dict_loads_and_two_candidate_keys_must_be_named(tmp_path, nets):
    bare = tmp_path / "bare.pt"
    torch.save(nets[0].state_dict(), bare)
    fresh = Generator(ngf=4)
    load_checkpoint(bare, fresh)
    assert same_weights(fresh, nets[0])
    both = original_style_checkpoint(tmp_path / "both.chkpt", *nets)
    with pytest.raises(CheckpointError, match="cannot tell which weights.*name the key"):
        load_checkpoint(both, Generator(ngf=4))


def test_weights_of_another_width_give_a_one_line_shape_error(tmp_path, nets):
    path = original_style_checkpoint(tmp_path / "narrow.chkpt", *nets)
    with pytest.raises(CheckpointError, match=r"narrow.chkpt: weights do not fit Generator: 'down1.model.0.weight' "
                                              r"has shape \(4, 3, 4, 4\).*expects \(8, 3, 4, 4\)"):
        load_checkpoint(path, Generator(ngf=8), key="generator_state_dict")


def test_weights_of_another_model_list_missing_and_unexpected_keys(tmp_path, nets):
    path = original_style_checkpoint(tmp_path / "gan.chkpt", *nets)
    with pytest.raises(CheckpointError, match="weights do not fit Discriminator: .*missing.*unexpected"):
        load_checkpoint(path, Discriminator(ndf=4), key="generator_state_dict")
    with pytest.raises(CheckpointError, match="no state dict under 'model_state_dict'"):
        load_checkpoint(path, Discriminator(ndf=4), key="model_state_dict")


def test_a_checkpoint_beyond_the_file_size_limit_is_an_output_error_and_leaves_no_partial_file(tmp_path):
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, hard))  # a real limit; python ignores SIGXFSZ: EFBIG
    try:
        with pytest.raises(OutputError, match=r"cannot write \S+big.chkpt: File too large \(EFBIG\)"):
            save_checkpoint(tmp_path / "big.chkpt", {"weights": torch.zeros(1 << 20)})
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert list(tmp_path.iterdir()) == []
    assert read_checkpoint(save_checkpoint(tmp_path / "small.chkpt", {"weights": torch.ones(3)}))["weights"].sum() == 3


READ_IN_A_CHILD = """
import resource, sys
from utils.checkpoint import read_checkpoint, save_checkpoint
from utils.errors import CheckpointError
locked, big = sys.argv[1:]
for path in (locked, big):
    if path == big:  # leave 64 MB of address space above what the process uses now: too little for 128 MB
        size = int(next(line for line in open("/proc/self/status") if line.startswith("VmSize")).split()[1]) * 1024
        resource.setrlimit(resource.RLIMIT_AS, (size + (64 << 20), resource.RLIM_INFINITY))
    try:
        read_checkpoint(path)
        print("loaded", path)
    except CheckpointError as exc:
        print(exc)
"""


@pytest.mark.slow  # a child Python process
def test_unreadable_checkpoints_say_permission_denied_or_not_enough_memory(tmp_path):
    locked, big = tmp_path / "locked.chkpt", tmp_path / "big.chkpt"
    torch.save({"weights": torch.ones(3)}, locked)
    locked.chmod(0)
    torch.save({"weights": torch.zeros(32 << 20)}, big)  # 128 MB
    result = subprocess.run([sys.executable, "-c", READ_IN_A_CHILD, str(locked), str(big)], cwd=PROJECT_ROOT,
                            capture_output=True, text=True, timeout=120, preexec_fn=without_root_override)
    assert result.stdout.splitlines() == [
        f"{locked}: permission denied: this user may not read the checkpoint",
        f"{big}: not enough memory to load the checkpoint (128 MB on disk); free memory or raise the job's memory "
        "limit"], result.stderr


def test_mapped_reading_gives_the_same_tensors_and_falls_back_for_legacy_files(tmp_path):
    """mmap=True maps zip checkpoints (tensors backed by the file) and reads the legacy format as before."""
    state = {"w": torch.randn(64, 64), "b": torch.arange(5)}
    torch.save(state, tmp_path / "zip.pt")
    torch.save(state, tmp_path / "legacy.pt", _use_new_zipfile_serialization=False)
    for name in ("zip.pt", "legacy.pt"):
        loaded = read_checkpoint(tmp_path / name, mmap=True)
        assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)

    def mapped(path) -> bool:
        return str(path) in pathlib.Path("/proc/self/maps").read_text()

    mapped_state = read_checkpoint(tmp_path / "zip.pt", mmap=True)
    assert mapped(tmp_path / "zip.pt")  # backed by the file, not read into memory
    del mapped_state  # the mapping ends with its tensors
    read_state = read_checkpoint(tmp_path / "zip.pt")
    assert read_state and not mapped(tmp_path / "zip.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "zip.pt").read_bytes()[:300])
    with pytest.raises(CheckpointError, match="cut.pt"):
        read_checkpoint(tmp_path / "cut.pt", mmap=True)
