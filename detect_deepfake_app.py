"""Step 4: tell whether a video (or every video in a folder) is a deepfake.

Method plain_frames classifies the face crops; method MRI classifies their MRI-GAN images. See README.
"""
import time

STARTED = time.perf_counter()  # before the other imports: the JSON reports the import time (timings.import_s)

import sys
from pathlib import Path

from utils.cli import config_from_args, make_parser, run
from utils.errors import ConfigError, NoFaceError
from utils.fileio import write_json
from utils.infer.detect import FACE_BATCH, Detector
from utils.infer.folder import score_folder
from utils.media.video import SampledFrames, frames_within, list_videos, probe
from utils.names import METHODS
from utils.runtime import choose_device, release_large_blocks, seed_everything

IMPORT_S = time.perf_counter() - STARTED
PREFETCH_BYTES = 256 * 2**20  # decoded frames held while the models load (README, Streaming and start-up)


def build_parser():
    parser = make_parser(__doc__, epilog="Exit codes: 0 verdict given, 2 bad input (unreadable video, missing "
                         "weights, bad flags), 3 no face found in any sampled frame.")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--input_videofile", metavar="PATH", help="the video to classify")
    source.add_argument("--input_dir", metavar="DIR",
                        help="classify every video under this folder (recursively); one CSV row each on stdout")
    parser.add_argument("--method", choices=METHODS, help="what the classifier looks at")
    parser.add_argument("--output_json", metavar="PATH", help="write the verdict and per-face evidence as JSON")
    parser.add_argument("--save_mri", metavar="DIR", help="save the MRIs of the sampled faces and montage.png")
    parser.add_argument("--fake_threshold", type=float, metavar="P", help="a face is fake when p > P")
    parser.add_argument("--fake_fraction", type=float, metavar="F",
                        help="a video is fake when at least this fraction of its faces are fake")
    parser.add_argument("--weights_dir", metavar="DIR", help="folder of exported weights (default assets/weights)")
    parser.add_argument("--labels", metavar="FILE",
                        help="with --input_dir: score the folder against these labels (a CSV with path and label "
                             "columns, Celeb-DF-v2's List_of_testing_videos.txt, or a DFDC metadata.json) and write "
                             "metrics to --output_json")
    parser.add_argument("--output_csv", metavar="PATH",
                        help="with --input_dir: append one row per video here as it is done; a re-run skips the "
                             "videos already in it")
    parser.add_argument("--mri_gan_pairs", metavar="CSV", nargs="+",
                        help="with --labels: the MRI-GAN's training CSVs, to count test videos it was trained on "
                             "(default: the config's MRI-GAN train split CSVs, when they exist)")
    parser.add_argument("--original_mri_rendering", action="store_true",
                        help="render MRIs as the original did (tanh output clamped at 0): for its released "
                             "MRI classifier, which was trained on such images")
    return parser


def check_unit(name: str, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"--{name} must be between 0 and 1, got {value}")


def main():
    parser = build_parser()
    args = parser.parse_args()
    if not (args.input_videofile or args.input_dir) or not args.method:
        parser.error("give --input_videofile PATH (or --input_dir DIR) and --method")
    check_unit("fake_threshold", args.fake_threshold)
    check_unit("fake_fraction", args.fake_fraction)
    if args.labels and not args.input_dir:
        parser.error("--labels goes with --input_dir")
    cfg = config_from_args(args)
    seed_everything(cfg["runtime.seed"])
    if args.input_dir and not Path(args.input_dir).is_dir():
        raise ConfigError(f"input folder not found ({args.input_dir})")
    release_large_blocks()  # peak memory flat in the video's length (README, Streaming and start-up)
    if args.input_videofile:
        info = probe(args.input_videofile)  # an unreadable input fails in one line before any model is loaded
        # its sampled frames decode while the models load: at most PREFETCH_BYTES of them, and no more than one
        # batch of faces, so they are all taken before the first batch reaches the generator and classifier
        ahead = min(FACE_BATCH, frames_within(info, PREFETCH_BYTES))
        with SampledFrames(args.input_videofile, cfg["faces.frame_step"], ahead) as frames:
            return classify_one(args, cfg, frames)
    videos = list_videos(args.input_dir, cfg["faces.video_extensions"], recursive=True)
    if args.labels:  # read and match the labels before any model is loaded, so a bad file fails at once
        from utils.evaluation import labelled  # scikit-learn: only on this path

        labels, matched, leak = labelled.prepare(cfg, Path(args.input_dir), videos, args.labels, args.mri_gan_pairs)
    detector, startup = load_detector(args, cfg)
    save_mri = Path(args.save_mri) if args.save_mri else None
    out_csv = Path(args.output_csv) if args.output_csv else None
    if args.labels:
        scores = labelled.evaluate_labelled(cfg, detector, args.method, videos, matched, labels, out_csv, save_mri,
                                             leak)
        write_report(args.output_json, scores)
        print("\n".join(labelled.summary_lines(args.method, scores)), file=sys.stderr)
        return 0
    _, results = score_folder(detector, videos, out_csv=out_csv, save_mri=save_mri)
    write_report(args.output_json, report(args, detector) | {"timings": startup, "videos": results})
    return 0


def classify_one(args, cfg, frames: SampledFrames) -> int:
    """The verdict on one video, from its frames already decoding: one line on stdout, the JSON if asked."""
    detector, startup = load_detector(args, cfg)
    result = detector.classify(args.input_videofile, Path(args.save_mri) if args.save_mri else None, frames)
    result.timings = startup | result.timings
    write_report(args.output_json, report(args, detector) | result.to_dict())
    if result.status == "no_face":
        raise NoFaceError(f"no face found in any sampled frame of {args.input_videofile}")
    thresholds = detector.thresholds
    print(f"{result.verdict_line()}  [{args.method}: {result.n_fake} of {result.n_faces} faces fake; "
          f"fake_threshold {thresholds['fake_threshold']}, fake_fraction {thresholds['fake_fraction']} "
          f"({thresholds['fake_threshold_source']})]")
    return 0


def load_detector(args, cfg) -> tuple[Detector, dict]:
    """The method's models, and the start-up times for the JSON."""
    loading = time.perf_counter()
    detector = Detector(cfg, args.method, choose_device(cfg["runtime.device"]),
                        Path(args.weights_dir) if args.weights_dir else None, args.fake_threshold,
                        args.fake_fraction, need_generator=bool(args.save_mri),
                        original_mri_rendering=args.original_mri_rendering)
    return detector, {"import_s": IMPORT_S, "model_load_s": time.perf_counter() - loading}


def report(args, detector: Detector) -> dict:
    """What the JSON says about the models, whatever the input."""
    return {"method": args.method, "precision": detector.precision.to_dict(), "thresholds": detector.thresholds,
            "models": detector.models}


def write_report(path: str | None, data: dict) -> None:
    if path:
        write_json(path, data)


if __name__ == "__main__":
    run(main, fast_exit=True)
