"""Step 1 of the pipeline: augmentation, landmarks, face crops, MRI data sets and metadata CSVs.

Flags keep the original's names; several flags run in the original's fixed order. Inputs are never
modified; every step can be interrupted and re-run to resume, split over --workers and --shard K/N.
"""
import json
import logging

from utils import preprocess
from utils.cli import config_from_args, make_parser, run
from utils.jobs import parse_shard
from utils.runtime import choose_device, log_to_file, new_run_dir, seed_everything

# (flag, what it does), in the order the steps run when several are given.
STEPS = (
    ("apply_aug_to_sample", "write every augmentation and distraction of one sample video (--sample_video)"),
    ("gen_aug_plan", "draw the seeded augmentation/distraction plan of the DFDC training videos (JSON)"),
    ("apply_aug_to_all", "write augmented copies of the DFDC training videos as the plan says"),
    ("extract_landmarks", "detect faces and landmarks on every k-th frame; one JSON per video"),
    ("crop_faces", "crop every face of every k-th frame (10%% margin) into <crop root>/<video>/<frame>_<face>.png"),
    ("gen_mri_dataset", "SSIM MRI targets of aligned real/fake pairs and the MRI-GAN split CSVs"),
    ("gen_dfdc_mri", "predict MRIs of the DFDC face crops with the trained generator"),
    ("gen_deepfake_metadata", "frame label CSVs for the classifier (plain crops and MRIs)"),
)
STEP_FUNCTIONS = {
    "apply_aug_to_sample": lambda cfg, datasets, options, args: [preprocess.apply_aug_to_sample(cfg, args.sample_video)],
    "gen_aug_plan": lambda cfg, datasets, options, args: [preprocess.gen_aug_plan(cfg)],
    "apply_aug_to_all": lambda cfg, datasets, options, args: [preprocess.apply_aug_to_all(cfg, options)],
    "extract_landmarks": lambda cfg, datasets, options, args: preprocess.extract_landmarks(cfg, datasets, options),
    "crop_faces": lambda cfg, datasets, options, args: preprocess.crop_faces(cfg, datasets, options),
    "gen_mri_dataset": lambda cfg, datasets, options, args: preprocess.gen_mri_dataset(cfg, datasets, options),
    "gen_dfdc_mri": lambda cfg, datasets, options, args: preprocess.gen_dfdc_mri(cfg, options),
    "gen_deepfake_metadata": lambda cfg, datasets, options, args: preprocess.gen_deepfake_metadata(cfg, options),
}


def build_parser():
    parser = make_parser(__doc__)
    steps = parser.add_argument_group("steps")
    for flag, text in STEPS:
        steps.add_argument(f"--{flag}", action="store_true", help=text)
    parser.add_argument("--sample_video", metavar="PATH", help="the video for --apply_aug_to_sample")
    parser.add_argument("--datasets", nargs="+", choices=preprocess.DATASETS, metavar="NAME",
                        help="data sets to process: dfdc celeb_df_v2 fdf ffhq (default: every one whose "
                             "input folder exists)")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default: runtime.workers in the config; 0 = one per CPU)")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="process only shard K of N (e.g. one SLURM array task); default 1/1")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    chosen = [flag for flag, _ in STEPS if getattr(args, flag)]
    if not chosen:
        parser.error("choose at least one step flag (see --help)")
    cfg = config_from_args(args)
    shard = parse_shard(args.shard)
    seed_everything(cfg["runtime.seed"])
    device = choose_device(cfg["runtime.device"])
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s: %(message)s")
    datasets = preprocess.chosen_datasets(cfg, args.datasets)
    run_dir = new_run_dir(cfg, "preprocess")
    log_to_file(run_dir)
    options = preprocess.Options(workers=cfg["runtime.workers"] if args.workers is None else args.workers,
                                 shard=shard, report_dir=run_dir, device=str(device))
    report = []
    for flag in chosen:
        for summary in STEP_FUNCTIONS[flag](cfg, datasets, options, args):
            print(summary.line())
            report.append({k: v for k, v in vars(summary).items() if k != "rows"})
    (run_dir / "summary.json").write_text(json.dumps(report, indent=1, default=str), encoding="utf-8")
    print(f"run folder: {run_dir.parent}")


if __name__ == "__main__":
    run(main)
