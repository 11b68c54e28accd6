"""The embedded default (`make demo`): the whole pipeline on a generated data set, every step a real command.

Synthetic data and tiny models: the numbers show that the pipeline works, not how well the paper's models
detect real deepfakes. Re-running skips the steps already done. See README, "Quick start".
"""
import sys
from pathlib import Path

from utils.cli import make_parser, run
from utils.demo.steps import PROFILES, STEPS, Demo, print_report, results
from utils.errors import ConfigError, StepFailed
from utils.fileio import write_json


def build_parser():
    parser = make_parser(__doc__)
    parser.add_argument("--out", metavar="DIR", default="data/demo",
                        help="where the generated data, outputs and logs go (default data/demo)")
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="data and model sizes: full (make demo) or quick (the CI end-to-end test)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for data_preprocess.py")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.config:
        raise ConfigError("demo.py writes its own config (<out>/demo_config.yml); change keys with --set, "
                          "which is passed to every step")
    demo = Demo(Path(args.out), args.profile, device=args.device or "auto", workers=args.workers,
                overrides=args.overrides)
    try:
        demo.run(STEPS)
    except StepFailed as exc:
        print(f"demo.py: {exc}", file=sys.stderr)
        return 1
    report = results(demo)
    write_json(demo.out / "demo_results.json", report)
    print_report(report, demo)
    print(f"\nall results: {demo.out / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    run(main)
