"""Step 3 of the pipeline: train, resume, test and export the EfficientNet-B0 deepfake classifier.

`deep_fake.training.model_params.dataset` chooses plain face crops or predicted MRIs. Runs are written to
logs/<YYYYmmdd_HHMMSS>/deep_fake/; the same command works under torchrun. See docs/pipeline.md#train-classifier.
"""
from utils.cli import make_parser, run
from utils.evaluation.classifier_report import format_report
from utils.infer.export import export
from utils.train.classifier_testing import test
from utils.train.classifier_training import train
from utils.train.run import run_config, run_context


def build_parser():
    parser = make_parser(__doc__, epilog="Resuming uses the configuration stored in the checkpoint; change keys with "
                         "--set (e.g. --set deep_fake.training.model_params.epochs=30). Video thresholds are tuned "
                         "on the validation split and applied unchanged to the test split. Multi-process: "
                         "torchrun --standalone --nproc_per_node N deep_fake_detect.py --train_from_scratch")
    flags = parser.add_mutually_exclusive_group()
    flags.add_argument("--train_from_scratch", action="store_true",
                       help="train a new classifier, then test its highest-accuracy checkpoint")
    flags.add_argument("--train_resume", metavar="CHECKPOINT", default=None,
                       help="continue exactly from this checkpoint file (e.g. logs/<run>/deep_fake/checkpoint.chkpt), "
                            "then test")
    flags.add_argument("--test_saved_model", metavar="CHECKPOINT", default=None,
                       help="test this checkpoint on the test split (results in a new logs/<time>/deep_fake/test)")
    parser.add_argument("--export", metavar="CHECKPOINT", nargs="?", const="", default=None,
                        help="copy classifier weights to <assets>/weights/ for the app: alone, the CHECKPOINT given; "
                             "with a flag above (no CHECKPOINT), the checkpoint just tested")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    action = args.train_from_scratch or args.train_resume or args.test_saved_model
    if not action and not args.export:
        parser.error("give --train_from_scratch, --train_resume, --test_saved_model or --export CHECKPOINT")
    if action and args.export:
        parser.error("--export CHECKPOINT stands alone; after training or testing give --export without a file")
    if not action:
        print_export(export(args.export, run_config(args, None)[0]))
        return 0
    with run_context(args, args.train_resume) as (cfg, checkpoint, ctx):
        tested, out_dir = args.test_saved_model, None
        if not tested:
            run_dir, tested = train(cfg, ctx, args.train_resume, checkpoint)
            out_dir = run_dir / "test" if ctx.is_main else None
        report = test(cfg, ctx, tested, out_dir)
        if ctx.is_main:
            print(format_report(report), flush=True)
            if args.export is not None:
                print_export(export(tested, cfg))
    return 0


def print_export(written: dict) -> None:
    thresholds = written["thresholds"]
    tuned = (f"fake_threshold {thresholds['fake_threshold']}, fake_fraction {thresholds['fake_fraction']}"
             if thresholds else "none stored: the app will use the config's")
    print(f"exported {written['source']} -> {written['path']} (method {written['method']}; thresholds {tuned})"
          f"{'; replaced the previous file' if written['replaced'] else ''}", flush=True)


if __name__ == "__main__":
    run(main)
