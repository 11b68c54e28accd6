"""Command-line plumbing shared by the scripts: common flags, config loading, and one-line errors.

A script builds its parser with `make_parser`, then hands its main function to `run`, which turns our
error types into one line on stderr and an exit code instead of a traceback.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable

from utils.config import Config, ConfigError, load_config
from utils.video import VideoError

EXIT_OK = 0
EXIT_FAILURE = 1  # a step failed
EXIT_BAD_INPUT = 2  # bad configuration, flags or input file
EXIT_NO_FACE = 3  # the video holds no detectable face
EXIT_INTERRUPTED = 130


class NoFaceError(RuntimeError):
    """No face was found in any sampled frame of a video."""


def make_parser(description: str, epilog: str | None = None, device: bool = True) -> argparse.ArgumentParser:
    """A parser with the flags every script shares: --config, --set, and (optionally) --device."""
    parser = argparse.ArgumentParser(description=description, epilog=epilog,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", metavar="PATH", default=None,
                        help="a YAML file layered over the shipped config.yml (default: config.yml only)")
    parser.add_argument("--set", dest="overrides", metavar="KEY=VALUE", action="append", default=[],
                        help="override one config key, e.g. --set faces.frame_step=5 (repeatable)")
    if device:
        parser.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None,
                            help="where models run (default: runtime.device in the config, 'auto')")
    return parser


def config_from_args(args: argparse.Namespace) -> Config:
    """Load the config named by --config/--set; --device, when given, overrides runtime.device."""
    overrides = list(args.overrides)
    if getattr(args, "device", None):
        overrides.append(f"runtime.device={args.device}")
    return load_config(args.config, overrides)


def run(main: Callable[[], int | None]) -> None:
    """Call `main` and exit with its code; known errors become one line on stderr, never a traceback."""
    prog = Path(sys.argv[0]).name
    try:
        code = main()
    except (ConfigError, VideoError) as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        code = EXIT_BAD_INPUT
    except NoFaceError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        code = EXIT_NO_FACE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted; finished outputs are kept, re-run the same command to resume",
              file=sys.stderr)
        code = EXIT_INTERRUPTED
    sys.exit(EXIT_OK if code is None else code)

