"""utils/fileio.py's atomic writers: a write stopped mid-file, by an exception or by SIGKILL, never leaves a
half-written output; there is no output, or the previous one, intact."""
from __future__ import annotations

import subprocess
import sys

import pytest

from utils.config import PROJECT_ROOT
from utils.fileio import atomic_path, write_stream

PREVIOUS = b"the previous, complete content"
HALF = b"the first half of the new con"

# Writes half of the file through atomic_path, says so, and waits to be killed.
KILLED_WRITER = f"""
import sys, time
from utils.fileio import atomic_path
with atomic_path(sys.argv[1]) as tmp, open(tmp, "wb") as handle:
    handle.write({HALF!r})
    handle.flush()
    print("half written", flush=True)
    time.sleep(120)
"""


class DiskGone(Exception):
    pass


def atomic_write_half_then_fail(target):
    with atomic_path(target) as tmp:
        tmp.write_bytes(HALF)
        raise DiskGone


def test_a_write_stopped_by_an_exception_leaves_no_output_and_no_partial_file(tmp_path):
    with pytest.raises(DiskGone):
        atomic_write_half_then_fail(tmp_path / "out.bin")
    assert list(tmp_path.iterdir()) == []


def test_a_write_stopped_by_an_exception_keeps_the_previous_output(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(PREVIOUS)
    with pytest.raises(DiskGone):
        atomic_write_half_then_fail(target)
    assert target.read_bytes() == PREVIOUS and list(tmp_path.iterdir()) == [target]


def test_a_stream_writer_that_fails_midway_keeps_the_previous_output(tmp_path):
    target = tmp_path / "weights.chkpt"
    target.write_bytes(PREVIOUS)

    def stream_half_then_fail(handle):
        handle.write(HALF)
        raise DiskGone

    with pytest.raises(DiskGone):
        write_stream(target, stream_half_then_fail)
    assert target.read_bytes() == PREVIOUS and list(tmp_path.iterdir()) == [target]


@pytest.mark.slow  # a child Python process
def test_a_writer_killed_mid_file_leaves_the_previous_output_and_only_its_hidden_partial_file(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(PREVIOUS)
    writer = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, str(target)], cwd=PROJECT_ROOT,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert writer.stdout.readline() == "half written\n"
    finally:
        writer.kill()  # SIGKILL: no exception handler, no `finally` runs in the writer
        writer.communicate(timeout=60)
    assert target.read_bytes() == PREVIOUS
    assert sorted(path.name for path in tmp_path.iterdir()) == [".out.partial.bin", "out.bin"]
