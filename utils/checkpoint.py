"""Checkpoint files: written atomically, read safely (torch.load with weights_only=True), their weights loaded into
models. Handles our checkpoints and the original project's released ones; every failure is one line naming the file."""
from __future__ import annotations

import pathlib
from pathlib import Path
from pickle import UnpicklingError
from typing import Any

import torch
from torch import nn

from utils.errors import CheckpointError
from utils.fileio import write_stream

# Where a checkpoint dict keeps a model's weights: ours and the original project's key names.
STATE_DICT_KEYS = ("model_state_dict", "generator_state_dict", "discriminator_state_dict", "state_dict")

# The only classes beyond tensors and plain containers allowed while unpickling: the original stored log folders
# as pathlib paths (docs/differences.md#safe-checkpoint-loading). Rebuilding a path from strings runs no code.
ALLOWED_GLOBALS = [pathlib.PosixPath, pathlib.WindowsPath, pathlib.PurePosixPath, pathlib.PureWindowsPath]


def save_checkpoint(path: str | Path, state: dict) -> Path:
    """torch.save to a temporary name, then rename: a crash never leaves a half-written checkpoint, and a
    failed write (disk full, quota) is an OutputError naming the file."""
    return write_stream(path, lambda handle: torch.save(state, handle))


def read_checkpoint(path: str | Path, mmap: bool = False) -> Any:
    """Load a checkpoint file onto the CPU with weights_only=True; raise CheckpointError on any failure, saying
    what happened: not found, permission denied, not enough memory, truncated, or not a checkpoint at all.

    mmap=True maps a zip checkpoint (torch.save's format) instead of reading it: tensors are paged in from the
    file as they are used, and a model that keeps copies of them (say, cast to bf16) never holds the file in
    its own memory. The file must not be rewritten in place meanwhile (our writers replace files by renaming)."""
    path = Path(path)
    if path.is_dir():
        raise CheckpointError(f"{path}: is a folder, not a checkpoint file")
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file not found")
    try:
        with open(path, "rb") as handle:
            head = handle.read(4)
        with torch.serialization.safe_globals(ALLOWED_GLOBALS):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap and head == b"PK\x03\x04")
    except PermissionError:
        raise CheckpointError(f"{path}: permission denied: this user may not read the checkpoint") from None
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read the checkpoint ({exc.strerror or exc})") from None
    except MemoryError:
        raise CheckpointError(_out_of_memory(path)) from None
    except UnpicklingError as exc:
        if "Weights only load failed" in str(exc):
            raise CheckpointError(f"{path}: refused to load: it holds Python objects outside the weights-only "
                                  f"allow-list ({_unsafe_globals(path)}); it may be malicious") from None
        raise CheckpointError(_unreadable(path, head)) from None
    except RuntimeError as exc:
        if "can't allocate memory" in str(exc) or "not enough memory" in str(exc):  # torch's CPU allocator
            raise CheckpointError(_out_of_memory(path)) from None
        raise CheckpointError(_unreadable(path, head)) from None
    except Exception:  # arbitrary bytes make the unpickler fail in many ways (IndexError, KeyError, EOFError...)
        raise CheckpointError(_unreadable(path, head)) from None


def _out_of_memory(path: Path) -> str:
    return (f"{path}: not enough memory to load the checkpoint ({path.stat().st_size / 2**20:.0f} MB on disk); "
            "free memory or raise the job's memory limit")


def _unreadable(path: Path, head: bytes) -> str:
    """Why torch could not read a file: a damaged zip archive (torch's format) or legacy pickle is most likely
    truncated; anything else is not a PyTorch checkpoint."""
    size = path.stat().st_size
    if head.startswith(b"PK"):
        return f"{path}: truncated or damaged checkpoint (a zip archive torch cannot read, {size} bytes)"
    if head.startswith(b"\x80"):
        return f"{path}: truncated or damaged checkpoint (legacy torch format, {size} bytes)"
    return f"{path}: not a PyTorch checkpoint (it starts with {head!r}, {size} bytes)"


def state_dict_in(checkpoint: Any, key: str | None = None, source: str | Path = "checkpoint") -> dict:
    """The state dict held by `checkpoint` under `key`; with key None, the one known key present (or the
    checkpoint itself when it is a bare state dict)."""
    if not isinstance(checkpoint, dict):
        raise CheckpointError(f"{source}: expected a dict of tensors, found a {type(checkpoint).__name__}")
    if key is None:
        if checkpoint and all(isinstance(value, torch.Tensor) for value in checkpoint.values()):
            return checkpoint
        present = [name for name in STATE_DICT_KEYS if name in checkpoint]
        if len(present) != 1:
            raise CheckpointError(f"{source}: cannot tell which weights to load (found {_keys(checkpoint)}); "
                                  "name the key")
        key = present[0]
    state = checkpoint.get(key)
    if not isinstance(state, dict):
        raise CheckpointError(f"{source}: no state dict under '{key}' (found {_keys(checkpoint)})")
    return state


def load_state(model: nn.Module, checkpoint: Any, key: str | None = None,
               source: str | Path = "checkpoint", assign: bool = False) -> None:
    """Load the weights under `key` into `model` strictly; a mismatch is one line saying what differs.

    assign=True makes the checkpoint's tensors the model's own (for a model built on the meta device).
    """
    state = state_dict_in(checkpoint, key, source)
    own = model.state_dict()
    missing = [name for name in own if name not in state]
    unexpected = [name for name in state if name not in own]
    if missing or unexpected:
        raise CheckpointError(f"{source}: weights do not fit {type(model).__name__}: "
                              f"{len(missing)} missing (e.g. {missing[:2]}), {len(unexpected)} unexpected "
                              f"(e.g. {unexpected[:2]})")
    for name, tensor in own.items():
        if tuple(state[name].shape) != tuple(tensor.shape):
            raise CheckpointError(f"{source}: weights do not fit {type(model).__name__}: '{name}' has shape "
                                  f"{tuple(state[name].shape)}, the model expects {tuple(tensor.shape)} "
                                  "(different network width?)")
    model.load_state_dict(state, strict=True, assign=assign)


def _unsafe_globals(path: Path) -> str:
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # legacy (non-zip) files cannot be inspected; the refusal itself stands
        return "unknown objects"
    return ", ".join(names[:3]) + (", ..." if len(names) > 3 else "") if names else "unknown objects"


def _keys(checkpoint: dict) -> str:
    names = [str(name) for name in checkpoint]
    return ", ".join(names[:8]) + (", ..." if len(names) > 8 else "") if names else "no keys"
