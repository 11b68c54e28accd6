"""Step 1 of the pipeline: augmentation, landmarks, face crops, MRI data sets and metadata CSVs.

Flags keep the original's names; several flags run in the original's fixed order. Inputs are never
modified; every step can be interrupted and re-run to resume, split over --workers and --shard K/N.
"""
import logging

import torch

from utils.cli import add_rendering_flags, config_from_args, make_parser, run
from utils.fileio import write_json
from utils.preprocess.common import DATASETS, Options, chosen_datasets
from utils.preprocess.jobs import check_failures, parse_shard
from utils.preprocess.steps import STEPS
from utils.runtime import choose_device, choose_precision, log_to_file, new_run_dir, seed_everything
from utils.signals import stop_on_signals


def build_parser():
    parser = make_parser(__doc__)
    steps = parser.add_argument_group("steps")
    for step in STEPS:
        steps.add_argument(f"--{step.flag}", action="store_true", help=step.help)
    parser.add_argument("--sample_video", metavar="PATH", help="the video for --apply_aug_to_sample")
    parser.add_argument("--datasets", nargs="+", choices=DATASETS, metavar="NAME",
                        help="data sets to process: dfdc celeb_df_v2 fdf ffhq (default: every one whose "
                             "input folder exists)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default: runtime.workers in the config; 0 = one per CPU of this "
                             "task); steps that run a model on CUDA use at most runtime.workers_per_gpu per GPU")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="process only shard K of N (e.g. one SLURM array task); default 1/1")
    add_rendering_flags(parser, "with --gen_dfdc_mri: original when the app's MRI classifier "
                                "(<assets>/weights/deepfake_MRI_weights.chkpt) is the original authors' (said in one "
                                "line), else default")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    chosen = [step for step in STEPS if getattr(args, step.flag)]
    if not chosen:
        parser.error("choose at least one step flag (see --help)")
    cfg = config_from_args(args)
    shard = parse_shard(args.shard)
    seed_everything(cfg["runtime.seed"])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    device = choose_device(cfg["runtime.device"])
    datasets = chosen_datasets(cfg, args.datasets)
    run_dir = new_run_dir(cfg, "preprocess")
    log_to_file(run_dir)
    options = Options(workers=cfg["runtime.workers"] if args.workers is None else args.workers,
                      shard=shard, report_dir=run_dir, device=str(device),
                      mri_rendering=args.mri_rendering,
                      precision=choose_precision(cfg["runtime.precision"], device),
                      workers_per_gpu=cfg["runtime.workers_per_gpu"],
                      gpu_count=torch.cuda.device_count() if device.type == "cuda" else 0)
    report = []
    with stop_on_signals():  # SIGTERM/SIGINT stop the steps between items (utils.preprocess.jobs.run_items)
        for step in chosen:
            summaries = step.run(cfg, datasets, options, args.sample_video)
            for summary in summaries:
                print(summary.line())
                report.append({k: v for k, v in vars(summary).items() if k != "rows"})
            write_json(run_dir / "summary.json", report, indent=1)
            check_failures(step.flag, summaries, run_dir)
    print(f"run folder: {run_dir.parent}")


if __name__ == "__main__":
    run(main)
