"""Step 4: tell whether a video (or every video in a folder) is a deepfake.

Method plain_frames classifies the face crops; method MRI classifies their MRI-GAN images. See docs/pipeline.md#app.
"""
import sys
from pathlib import Path

from utils.cli import add_rendering_flags, config_from_args, make_parser
from utils.errors import ConfigError, NoFaceError
from utils.fileio import write_json
from utils.infer.startup import Startup, run_app  # first: it times the app's imports, which leave torch out
from utils.media.video import list_videos
from utils.names import METHODS


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
    add_rendering_flags(parser, "with --method MRI the rendering recorded with the classifier, else original for "
                                "the original authors' classifier (said in one line), else default")
    return parser


def check_unit(name: str, value):
    if value is not None and not 0.0 <= value <= 1.0:
        raise ConfigError(f"--{name} must be between 0 and 1, got {value}")


def parse_args():
    """The checked command line and the config it names."""
    parser = build_parser()
    args = parser.parse_args()
    if not (args.input_videofile or args.input_dir) or not args.method:
        parser.error("give --input_videofile PATH (or --input_dir DIR) and --method")
    check_unit("fake_threshold", args.fake_threshold)
    check_unit("fake_fraction", args.fake_fraction)
    if args.labels and not args.input_dir:
        parser.error("--labels goes with --input_dir")
    return args, config_from_args(args)


def main():
    startup = Startup()
    args, cfg = parse_args()
    if args.input_videofile:
        return detect_video(args, cfg, startup)
    return detect_folder(args, cfg, startup)


def detect_video(args, cfg, startup: Startup) -> int:
    """The verdict on one video: one line on stdout, the JSON if asked. Its frames decode from the start, and its
    faces are detected while the classifier (and generator) load."""
    with startup.decode_ahead(args.input_videofile, cfg["faces.frame_step"]) as frames:
        startup.import_model_code(cfg["runtime.seed"])
        from utils.infer.detect import FaceStream
        from utils.media.faces import FaceDetector
        from utils.runtime import choose_device

        face_detector = FaceDetector.from_config(cfg, choose_device(cfg["runtime.device"]))
        with FaceStream(face_detector, frames, cfg["faces.crop_margin"]) as faces:
            detector = load_detector(args, cfg, face_detector)
            timings = startup.models_loaded()
            result = detector.classify(args.input_videofile, mri_folder(args), faces)
    result.timings = timings | result.timings
    write_report(args.output_json, report(args, detector) | result.to_dict())
    if result.status == "no_face":
        raise NoFaceError(f"no face found in any sampled frame of {args.input_videofile}")
    thresholds = detector.thresholds
    print(f"{result.verdict_line()}  [{args.method}: {result.n_fake} of {result.n_faces} faces fake; "
          f"fake_threshold {thresholds['fake_threshold']}, fake_fraction {thresholds['fake_fraction']} "
          f"({thresholds['fake_threshold_source']})]")
    return 0


def detect_folder(args, cfg, startup: Startup) -> int:
    """One CSV row per video on stdout (and in --output_csv); with --labels, the metrics instead of the videos in
    the JSON and a summary on stderr."""
    if not Path(args.input_dir).is_dir():
        raise ConfigError(f"input folder not found ({args.input_dir})")
    videos = list_videos(args.input_dir, cfg["faces.video_extensions"], recursive=True)
    if args.labels:  # read and match the labels before any model is loaded, so a bad file fails at once
        from utils.evaluation import labelled  # scikit-learn: only on this path

        labels, matched, leak = labelled.prepare(cfg, Path(args.input_dir), videos, args.labels, args.mri_gan_pairs)
    startup.import_model_code(cfg["runtime.seed"])
    detector = load_detector(args, cfg)
    timings = startup.models_loaded()
    out_csv = Path(args.output_csv) if args.output_csv else None
    if args.labels:
        scores = labelled.evaluate_labelled(cfg, detector, args.method, videos, matched, labels, out_csv,
                                             mri_folder(args), leak)
        write_report(args.output_json, scores)
        print("\n".join(labelled.summary_lines(args.method, scores)), file=sys.stderr)
        return 0
    from utils.infer.folder import score_folder

    _, results = score_folder(detector, videos, out_csv=out_csv, save_mri=mri_folder(args))
    write_report(args.output_json, report(args, detector) | {"timings": timings, "videos": results})
    return 0


def load_detector(args, cfg, face_detector=None):
    """The method's Detector, with `face_detector` (and its device) if it is already built."""
    from utils.infer.detect import Detector
    from utils.runtime import choose_device

    device = face_detector.device if face_detector else choose_device(cfg["runtime.device"])
    return Detector.from_weights(cfg, args.method, device, Path(args.weights_dir) if args.weights_dir else None,
                                 args.fake_threshold, args.fake_fraction, need_generator=bool(args.save_mri),
                                 mri_rendering=args.mri_rendering, face_detector=face_detector)


def mri_folder(args) -> Path | None:
    return Path(args.save_mri) if args.save_mri else None


def report(args, detector) -> dict:
    """What the JSON says about the models, whatever the input."""
    return {"method": args.method, "precision": detector.precision.to_dict(), "thresholds": detector.thresholds,
            "models": detector.models}


def write_report(path: str | None, data: dict) -> None:
    if path:
        write_json(path, data)


if __name__ == "__main__":
    run_app(main)
