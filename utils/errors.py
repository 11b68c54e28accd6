"""Every error type the project raises on purpose, and the exit code each one ends a script with.

`utils.cli.run` turns these into one line on stderr and `exit_code(error)`; nothing else decides exit codes.
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1  # a step failed
EXIT_BAD_INPUT = 2  # bad configuration, flags or input file
EXIT_NO_FACE = 3  # the video holds no detectable face
EXIT_OUTPUT = 4  # an output could not be written (disk full, quota, file-size limit, read-only, permission)
EXIT_INTERRUPTED = 130  # SIGINT; a stop by signal N ends with 128 + N (143 for SIGTERM)


class ConfigError(ValueError):
    """A configuration problem, or bad input in general; its message is one line naming the key or file."""


class CheckpointError(ConfigError):
    """A checkpoint that is missing, unreadable, refused or does not fit the model (one line, names the file)."""


class EncoderWeightsError(ConfigError):
    """Encoder weights cannot be had; a one-line message naming the file or the way out."""


class DataFileError(ConfigError):
    """A data file that cannot be read (one line naming the file).

    DataLoader workers re-raise errors as `type(message + traceback)`; the constructor keeps only the last
    line, our own message, so the error stays one line.
    """

    def __init__(self, message: str):
        if message.startswith("Caught ") and "Traceback" in message:
            last = message.strip().splitlines()[-1]
            message = last.split(": ", 1)[1] if last.startswith(type(self).__module__) else last
        super().__init__(message)


class FrameReadError(DataFileError):
    """A face or MRI image of the classifier's data set cannot be read; the message names the file."""


class VideoError(ValueError):
    """A video that cannot be used; the message names the file and the reason in one line."""


class NoFaceError(RuntimeError):
    """No face was found in any sampled frame of a video."""


class IntermediateError(ConfigError):
    """A file written by an earlier step is missing or corrupt; the message names it and the step that rebuilds
    it. One bad item inside a preprocessing step (a ValueError), exit code 2 for a whole command."""


class ItemError(Exception):
    """A problem with one preprocessing item (unreadable video, no landmarks...): logged, and the step goes on."""


class StepFailed(RuntimeError):
    """A step failed: a step of a chain (e.g. the demo) exited with an error, or every item of a preprocessing
    step failed; the message names the step and where its reasons are."""


class DeviceError(StepFailed):
    """The GPU failed (a CUDA error other than running out of memory): the step stops with one line."""


class NonFiniteLoss(RuntimeError):
    """A training loss became NaN or infinite: training stops before anything is saved."""


class OutputError(RuntimeError):
    """An output that cannot be written: disk full, quota, file-size limit, read-only or no permission.

    A fault of the machine, not of the item being processed: the command stops at once instead of marking
    every later item failed. Deliberately not an OSError, which marks one bad item.
    """


class Interrupted(Exception):
    """SIGTERM or SIGINT stopped a command at a safe point (between items, at a step boundary)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum


# Checked in order; the first class that matches decides (subclasses come before their bases).
EXIT_CODES: tuple[tuple[type[BaseException], int], ...] = (
    (ConfigError, EXIT_BAD_INPUT),
    (VideoError, EXIT_BAD_INPUT),
    (NoFaceError, EXIT_NO_FACE),
    (StepFailed, EXIT_FAILURE),
    (NonFiniteLoss, EXIT_FAILURE),
    (OutputError, EXIT_OUTPUT),
    (KeyboardInterrupt, EXIT_INTERRUPTED),
)


def exit_code(error: BaseException) -> int | None:
    """The exit code a script ends with for `error`, or None for an error we did not raise on purpose."""
    if isinstance(error, Interrupted):
        return 128 + error.signum  # the shell's convention for a process ended by that signal
    for kind, code in EXIT_CODES:
        if isinstance(error, kind):
            return code
    return None
