"""The original's result figures: curves of several MRI-GAN runs (labelled by their τ) and the side-by-side
results of classifier tests (ROC, confusion matrices of both protocols, a metrics table). See
docs/reproducing.md#gen-plots."""
from utils.cli import config_from_args, make_parser, run
from utils.evaluation.figures import plot_classifier_tests, plot_mri_gan_runs


def build_parser():
    parser = make_parser(__doc__, device=False)
    parser.add_argument("--mri_gan_runs", nargs="+", metavar="RUN_DIR", default=[],
                        help="MRI-GAN run folders (logs/<time>/MRI_GAN): test SSIM, G, D, SSIM-term and pixel "
                             "losses, raw and smoothed (EWM, alpha 0.01), on shared axes")
    parser.add_argument("--classifier_tests", nargs="+", metavar="TEST_DIR", default=[],
                        help="classifier test folders (holding metrics.json): ROC, confusion matrices, metrics table")
    parser.add_argument("--out", metavar="DIR", help="output folder (default: <logging.root_log_dir>/plots)")
    return parser


def main() -> int:
    parser = build_parser()
    args = parser.parse_args()
    if not args.mri_gan_runs and not args.classifier_tests:
        parser.error("give --mri_gan_runs RUN_DIR... and/or --classifier_tests TEST_DIR...")
    out = args.out or config_from_args(args).path("logging.root_log_dir") / "plots"
    written = []
    if args.mri_gan_runs:
        written += plot_mri_gan_runs(args.mri_gan_runs, out)
    if args.classifier_tests:
        written += plot_classifier_tests(args.classifier_tests, out)
    print("\n".join(f"wrote {path}" for path in written))
    return 0


if __name__ == "__main__":
    run(main)
