"""Step 4: tell whether a video (or every video in a folder) is a deepfake.

Method plain_frames classifies the face crops; method MRI classifies their MRI-GAN images. See README.
"""
from pathlib import Path

from utils.cli import config_from_args, make_parser, not_implemented, run
from utils.video import probe


def build_parser():
    parser = make_parser(__doc__, epilog="Not implemented yet (issue #7): the detection itself. "
                         "Input files are already checked (exit code 2 for unreadable video).")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input_videofile", metavar="PATH", help="the video to classify")
    source.add_argument("--input_dir", metavar="DIR", help="classify every video in this folder (CSV output)")
    parser.add_argument("--method", choices=("plain_frames", "MRI"), help="what the classifier looks at")
    parser.add_argument("--output_json", metavar="PATH", help="write the verdict and per-face evidence as JSON")
    parser.add_argument("--save_mri", metavar="DIR", help="save the MRIs of the sampled faces and a montage")
    parser.add_argument("--fake_threshold", type=float, metavar="P", help="a face is fake when p > P")
    parser.add_argument("--fake_fraction", type=float, metavar="F",
                        help="a video is fake when at least this fraction of its faces are fake")
    parser.add_argument("--weights_dir", metavar="DIR", help="folder of exported weights (default assets/weights)")
    return parser


def main():
    parser = build_parser()
    args = parser.parse_args()
    if not (args.input_videofile or args.input_dir) or not args.method:
        parser.error("give --input_videofile PATH (or --input_dir DIR) and --method")
    config_from_args(args)
    if args.input_videofile:
        probe(args.input_videofile)  # unreadable input: one line, exit 2
    elif not Path(args.input_dir).is_dir():
        parser.error(f"input folder not found ({args.input_dir})")
    raise not_implemented("deepfake detection in the app", "#7")


if __name__ == "__main__":
    run(main)
