"""Step 1 of the pipeline: augmentation, landmarks, face crops, MRI data sets and metadata CSVs.

Flags keep the original's names; several flags run in the original's fixed order. See README.
"""
from utils.cli import config_from_args, make_parser, not_implemented, run

# (flag, what it does), in the order the steps run when several are given.
STEPS = (
    ("apply_aug_to_sample", "write every augmentation and distraction of one sample video"),
    ("gen_aug_plan", "draw the seeded augmentation/distraction plan (JSON)"),
    ("apply_aug_to_all", "write augmented copies of the DFDC training videos as the plan says"),
    ("extract_landmarks", "detect faces and landmarks on every k-th frame; one JSON per video"),
    ("crop_faces", "crop every detected face of every k-th frame (10%% margin)"),
    ("gen_mri_dataset", "SSIM MRI targets of aligned real/fake pairs and the MRI-GAN split CSVs"),
    ("gen_dfdc_mri", "predict MRIs of the DFDC face crops with the trained generator"),
    ("gen_deepfake_metadata", "frame label CSVs for the classifier (plain crops and MRIs)"),
)
NOT_BUILT = {flag for flag, _ in STEPS}  # every step lands with issue #4


def build_parser():
    parser = make_parser(__doc__, epilog="Not implemented yet (issue #4): " + ", ".join(
        f"--{flag}" for flag, _ in STEPS if flag in NOT_BUILT))
    steps = parser.add_argument_group("steps")
    for flag, text in STEPS:
        steps.add_argument(f"--{flag}", action="store_true", help=text)
    parser.add_argument("--sample_video", metavar="PATH", help="the video for --apply_aug_to_sample")
    parser.add_argument("--workers", type=int, default=None, metavar="N",
                        help="worker processes (default: runtime.workers in the config)")
    parser.add_argument("--shard", default="1/1", metavar="K/N",
                        help="process only shard K of N (e.g. one SLURM array task); default 1/1")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    chosen = [flag for flag, _ in STEPS if getattr(args, flag)]
    if not chosen:
        parser.error("choose at least one step flag (see --help)")
    config_from_args(args)  # validates the configuration before anything runs
    for flag in chosen:
        if flag in NOT_BUILT:
            raise not_implemented(f"data_preprocess.py --{flag}", "#4")


if __name__ == "__main__":
    run(main)
