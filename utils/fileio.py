"""File output and intermediate input: atomic writers (a temporary name, then rename), write faults that stop
a command, and readers that name a corrupt file written by an earlier step and the step that rebuilds it.

A process killed mid-write leaves only a hidden '.<name>.partial<suffix>' file, never a half-written output.
"""
from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Callable, Iterator

import cv2
import numpy as np

from utils.errors import IntermediateError, OutputError

PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the empty IEND chunk that closes every PNG file


def output_error(path: str | Path, exc: OSError) -> OutputError:
    """One line naming the output and the OS error, e.g. 'cannot write x.png: File too large (EFBIG)'."""
    reason = exc.strerror or str(exc)
    name = errno.errorcode.get(exc.errno or 0)
    return OutputError(f"cannot write {path}: {reason}{f' ({name})' if name else ''}; fix the disk or the "
                       "permissions and re-run the same command (finished outputs are kept)")


@contextmanager
def writing(path: str | Path) -> Iterator[None]:
    """Turn an OSError raised while writing `path` into an OutputError."""
    try:
        yield
    except OSError as exc:
        raise output_error(path, exc) from None


def partial_path(path: Path) -> Path:
    """The temporary name used while `path` is being written (hidden, same folder, same suffix).

    The name is fixed, so a re-run after a kill overwrites a leftover instead of leaving it behind; no
    two of our processes write the same output (workers and shards own disjoint items).
    """
    return path.with_name(f".{path.stem}.partial{path.suffix}")


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is renamed to `path`, on error it is removed.
    A failed write (disk full, read-only, ...) raises OutputError naming `path`."""
    path = Path(path)
    tmp = partial_path(path)
    try:
        with writing(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()  # only our own partial file, never an input


@contextmanager
def atomic_dir(final: str | Path) -> Iterator[Path]:
    """Yield an empty hidden folder to fill; on success it becomes `final` (replacing an incomplete one), on
    any error or interruption it is removed, so `final` appears complete or not at all."""
    final = Path(final)
    tmp = final.with_name(f".{final.name}.partial")
    try:
        with writing(final):
            if tmp.exists():
                shutil.rmtree(tmp)  # our own unfinished folder from a killed run, never an input
            tmp.mkdir(parents=True)
            yield tmp
            if final.exists():  # an earlier, damaged copy (see folder_complete): replaced by the new one
                stale = final.with_name(f".{final.name}.stale")
                shutil.rmtree(stale, ignore_errors=True)
                final.rename(stale)
                tmp.rename(final)
                shutil.rmtree(stale)
            else:
                tmp.rename(final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def write_text(path: str | Path, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | Path, data, indent: int | None = 1) -> Path:
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_csv(path: str | Path, frame, index: bool = False) -> Path:
    """Write a pandas DataFrame as CSV atomically."""
    with atomic_path(path) as tmp:
        frame.to_csv(tmp, index=index)
    return Path(path)


class _RecordingFile:
    """A binary file that keeps the OSError of a failed write (libraries such as torch.save re-raise it as a
    RuntimeError without its cause)."""

    def __init__(self, handle):
        self.handle, self.error = handle, None

    def write(self, data) -> int:
        try:
            return self.handle.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        self.handle.flush()


def write_stream(path: str | Path, write: Callable[[BinaryIO], object]) -> Path:
    """Write `path` atomically through `write(file)`, e.g. `lambda f: torch.save(state, f)`; a failed write
    raises OutputError with its OS error, whatever the library turned it into."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        recording = _RecordingFile(handle)
        try:
            write(recording)
        except Exception:
            if recording.error is not None:
                raise output_error(path, recording.error) from None
            raise
    return Path(path)


def write_png(path: str | Path, rgb: np.ndarray) -> Path:
    """Write an RGB (or single-channel) uint8 image as PNG atomically. The image is encoded in memory and
    written by Python, so a failed write is an OSError with its cause (OpenCV's writer would only say no)."""
    image = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR) if rgb.ndim == 3 else rgb
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise ValueError(f"cannot encode a {image.shape} {image.dtype} image as PNG for {path}")
    with atomic_path(path) as tmp:
        tmp.write_bytes(encoded.tobytes())
    return Path(path)


def read_rgb(path: str | Path, rebuilt_by: str | None = None) -> np.ndarray:
    """Read an image file as RGB uint8; raises OSError naming the file if it cannot be read. With `rebuilt_by`
    (the data_preprocess.py flag that wrote it), a missing or damaged file raises IntermediateError instead."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        if rebuilt_by is not None:
            raise intermediate_error(path, rebuilt_by, "not a readable PNG image")
        raise OSError(f"{path}: cannot read image")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


# --- intermediates: files an earlier step wrote -----------------------------------------------------


def intermediate_error(path: str | Path, rebuilt_by: str, reason: str) -> IntermediateError:
    if not Path(path).exists():
        return IntermediateError(f"{path} not found; run data_preprocess.py {rebuilt_by} first")
    return IntermediateError(f"{path} is corrupt ({reason}); re-run data_preprocess.py {rebuilt_by} to rebuild it")


def read_json_intermediate(path: str | Path, rebuilt_by: str, kind: type = dict):
    """The JSON object in `path`; IntermediateError when it is missing, unparsable or not a `kind`."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise intermediate_error(path, rebuilt_by, exc.strerror or str(exc)) from None
    except UnicodeDecodeError:
        raise intermediate_error(path, rebuilt_by, "not UTF-8 text") from None
    except ValueError as exc:
        raise intermediate_error(path, rebuilt_by, f"not valid JSON: {exc}") from None
    if not isinstance(data, kind):
        raise intermediate_error(path, rebuilt_by, f"holds a JSON {type(data).__name__}, expected an object")
    return data


def read_csv_intermediate(path: str | Path, rebuilt_by: str, **read_csv):
    """The table (a pandas DataFrame) in CSV `path`; IntermediateError when it is missing, unparsable, or cut
    short (our writer ends every file with a newline, so a file that does not was truncated mid-row)."""
    import pandas as pd  # only the steps that read tables need it, not the app

    path = Path(path)
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() == 0:
                raise intermediate_error(path, rebuilt_by, "empty file")
            handle.seek(-1, os.SEEK_END)
            if handle.read(1) != b"\n":
                raise intermediate_error(path, rebuilt_by, "truncated: the last row is cut short")
        return pd.read_csv(path, **read_csv)
    except (OSError, UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc).strip().splitlines()[-1]
        raise intermediate_error(path, rebuilt_by, f"not a readable CSV: {reason}") from None


def png_complete(path: str | Path) -> bool:
    """Whether `path` is a PNG file that ends with its closing chunk (a cheap test for truncation)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            if handle.tell() < len(PNG_END) + 8:
                return False
            handle.seek(-len(PNG_END), os.SEEK_END)
            return handle.read() == PNG_END
    except OSError:
        return False


def folder_complete(folder: str | Path) -> bool:
    """Whether a per-video output folder is finished and every PNG in it is whole: a step re-run rebuilds
    the folders that fail this (and only those)."""
    folder = Path(folder)
    return folder.is_dir() and all(png_complete(p) for p in folder.glob("*.png"))


def sha256(path: Path) -> str:
    """The file's SHA-256 as hex, read in 1 MiB blocks (recorded with the weights a run used)."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
