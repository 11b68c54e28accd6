"""Command-line plumbing shared by the scripts: common flags, config loading, and one-line errors.

A script builds its parser with `make_parser`, then hands its main function to `run`, which turns our
error types into one line on stderr and an exit code instead of a traceback.
"""
from __future__ import annotations

import argparse
import atexit
import os
import sys
from pathlib import Path
from typing import Callable

from utils.config import SCHEMA, Config, load_config
from utils.errors import (
    EXIT_BAD_INPUT,
    EXIT_OK,
    ConfigError,
    Interrupted,
    NoFaceError,
    NonFiniteLoss,
    OutputError,
    StepFailed,
    VideoError,
    exit_code,
)
from utils.names import RENDERINGS


def make_parser(description: str, epilog: str | None = None, device: bool = True) -> argparse.ArgumentParser:
    """A parser with the flags every script shares: --config, --set, and (optionally) --device and --precision."""
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="a YAML file layered over the shipped config.yml (default: config.yml only)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override one config key, e.g. --set faces.frame_step=5 (repeatable)")
    if device:
        parser.add_argument("--device", choices=SCHEMA["runtime.device"].choices, default=None,
                            help="where models run (default: runtime.device in the config, 'auto')")
        parser.add_argument("--precision", choices=SCHEMA["runtime.precision"].choices, default=None,
                            help="how models compute (default: runtime.precision in the config, 'auto': bf16 "
                                 "on a CPU with native bf16, mixed precision on CUDA, else fp32)")
    return parser


def add_rendering_flags(parser: argparse.ArgumentParser, unless_given: str) -> None:
    """--mri_rendering default|original and the older --original_mri_rendering, which means --mri_rendering
    original; args.mri_rendering is None when neither is given, and `unless_given` says what is chosen then
    (docs/pipeline.md#mri-rendering)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--mri_rendering", choices=RENDERINGS, default=None,
                       help="how MRIs become images: default (ours, de-normalised) or original (tanh output times 255, "
                            "clamped at 0, as the original saved them; its released MRI classifier was trained on "
                            f"such images); unless given, {unless_given}")
    group.add_argument("--original_mri_rendering", dest="mri_rendering", action="store_const", const="original",
                       help="the same as --mri_rendering original")


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by --config/--set; --device and --precision, when given, override runtime.*."""
    return load_config(args.config, list(args.overrides) + runtime_overrides(args))


def runtime_overrides(args: argparse.Namespace) -> list[str]:
    """--device and --precision, when given, as runtime.* overrides."""
    return [f"runtime.{name}={getattr(args, name)}" for name in ("device", "precision") if getattr(args, name, None)]


def run(main: Callable[[], int | None], fast_exit: bool = False) -> None:
    """Call `main` and exit with its code; our errors become one line on stderr and the exit code
    utils.errors gives them, never a traceback.

    With `fast_exit`, the process ends without the interpreter's teardown once everything is flushed and the
    exit handlers have run (see `exit_now`). For the app: the teardown of torch's and torchvision's modules
    cost about 1 s per process on a 2-core CPU, measured (docs/performance.md#start-up).
    """
    prog = Path(sys.argv[0]).name
    try:
        code = main()
    except (ConfigError, VideoError, NoFaceError, StepFailed, NonFiniteLoss, OutputError, Interrupted,
            KeyboardInterrupt) as exc:
        code = exit_code(exc)
        if isinstance(exc, KeyboardInterrupt):
            print(f"{prog}: interrupted; finished outputs are kept, re-run the same command to resume", file=sys.stderr)
        elif code == EXIT_BAD_INPUT:
            print(f"{prog}: error: {exc}", file=sys.stderr)
        else:
            print(f"{prog}: {exc}", file=sys.stderr)
    code = EXIT_OK if code is None else code
    if fast_exit:
        exit_now(code)
    sys.exit(code)


def exit_now(code: int) -> None:
    """End the process with `code` at once: run the exit handlers as a normal exit would (atexit: among them
    logging's, which flushes and closes the log files), flush the standard streams, then skip only the freeing
    of every module and object. Output files are closed by then (utils.fileio writes a temporary file and
    renames it)."""
    atexit._run_exitfuncs()  # what a normal exit calls: the handlers libraries registered, last first
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe (e.g. `| head`) or a closed stream: nothing more to deliver
            pass
    os._exit(code)
