"""The embedded default (`make demo`): the whole pipeline on a generated data set, every step a real command.

Synthetic data and tiny models: the numbers show that the pipeline works, not how well the paper's models
detect real deepfakes. Re-running skips the steps already done. See docs/reproducing.md#the-demo.
"""
from utils.cli import make_parser, run
from utils.demo.steps import PROFILES, STEPS, add_demo_flags, demo_from_args, print_report, results
from utils.fileio import write_json


def build_parser():
    parser = add_demo_flags(make_parser(__doc__))
    parser.add_argument("--profile", choices=sorted(PROFILES), default="full",
                        help="data and model sizes: full (make demo) or quick (the CI end-to-end test)")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    demo = demo_from_args(args, args.profile)
    demo.run(STEPS)  # a failed step is a StepFailed: one line and exit code 1 (utils.cli.run)
    report = results(demo)
    write_json(demo.out / "demo_results.json", report)
    print_report(report, demo)
    print(f"\nall results: {demo.out / 'demo_results.json'}")
    return 0


if __name__ == "__main__":
    run(main)
