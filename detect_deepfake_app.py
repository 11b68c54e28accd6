"""Step 4: tell whether a video (or every video in a folder) is a deepfake.

Method plain_frames classifies the face crops; method MRI classifies their MRI-GAN images. See README.
"""
import gc
import time

STARTED = time.perf_counter()  # before the other imports: the JSON reports the import time (timings.import_s)

import sys
from pathlib import Path

# Only modules without torch here: a single video starts decoding before torch is imported (README, Streaming
# and start-up); the modules that run models are imported by import_model_code.
from utils.cli import config_from_args, make_parser, run
from utils.errors import ConfigError, NoFaceError
from utils.fileio import write_json
from utils.media.video import SampledFrames, frames_within, list_videos, probe
from utils.names import METHODS

LIGHT_IMPORT_S = time.perf_counter() - STARTED
PREFETCH_FRAMES = 32  # sampled frames decoded ahead while torch and the face detector load ...
PREFETCH_BYTES = 256 * 2**20  # ... and never more than this many bytes of them


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
    gc.disable()  # no cyclic garbage collection while importing and loading the models: see load_detector
    parser = build_parser()
    args = parser.parse_args()
    if not (args.input_videofile or args.input_dir) or not args.method:
        parser.error("give --input_videofile PATH (or --input_dir DIR) and --method")
    check_unit("fake_threshold", args.fake_threshold)
    check_unit("fake_fraction", args.fake_fraction)
    if args.labels and not args.input_dir:
        parser.error("--labels goes with --input_dir")
    cfg = config_from_args(args)
    if args.input_dir and not Path(args.input_dir).is_dir():
        raise ConfigError(f"input folder not found ({args.input_dir})")
    if args.input_videofile:
        info = probe(args.input_videofile)  # an unreadable input fails in one line before any model is loaded
        ahead = min(PREFETCH_FRAMES, frames_within(info, PREFETCH_BYTES))
        with SampledFrames(args.input_videofile, cfg["faces.frame_step"], ahead) as frames:
            return classify_one(args, cfg, frames)
    videos = list_videos(args.input_dir, cfg["faces.video_extensions"], recursive=True)
    if args.labels:  # read and match the labels before any model is loaded, so a bad file fails at once
        from utils.evaluation import labelled  # scikit-learn: only on this path

        labels, matched, leak = labelled.prepare(cfg, Path(args.input_dir), videos, args.labels, args.mri_gan_pairs)
    import_s = import_model_code(cfg)
    from utils.infer.folder import score_folder

    detector, startup = load_detector(args, cfg, import_s)
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
    """The verdict on one video whose frames are already decoding: one line on stdout, the JSON if asked.

    The face detector loads first; its thread then detects faces while the classifier (and generator) load."""
    import_s = import_model_code(cfg)
    from utils.infer.detect import FaceStream
    from utils.media.faces import FaceDetector
    from utils.runtime import choose_device

    loading = time.perf_counter()
    face_detector = FaceDetector.from_config(cfg, choose_device(cfg["runtime.device"]))
    with FaceStream(face_detector, frames, cfg["faces.crop_margin"]) as faces:
        detector, startup = load_detector(args, cfg, import_s, loading, face_detector)
        result = detector.classify(args.input_videofile, Path(args.save_mri) if args.save_mri else None, faces)
    result.timings = startup | result.timings
    write_report(args.output_json, report(args, detector) | result.to_dict())
    if result.status == "no_face":
        raise NoFaceError(f"no face found in any sampled frame of {args.input_videofile}")
    thresholds = detector.thresholds
    print(f"{result.verdict_line()}  [{args.method}: {result.n_fake} of {result.n_faces} faces fake; "
          f"fake_threshold {thresholds['fake_threshold']}, fake_fraction {thresholds['fake_fraction']} "
          f"({thresholds['fake_threshold_source']})]")
    return 0


def import_model_code(cfg) -> float:
    """Import the modules that run models (torch: about 1 s) and seed the generators with runtime.seed; return
    the seconds the app has spent importing (timings.import_s)."""
    start = time.perf_counter()
    import utils.infer.detect  # noqa: F401  (torch, OpenCV, PIL)
    from utils.runtime import seed_everything

    seed_everything(cfg["runtime.seed"])
    return LIGHT_IMPORT_S + time.perf_counter() - start


def load_detector(args, cfg, import_s: float, loading: float | None = None, face_detector=None):
    """The method's Detector (with `face_detector` and its device if it is already built) and the start-up times
    for the JSON: model_load_s counts from `loading` (default now), when the first model began to load."""
    from utils.infer.detect import Detector
    from utils.runtime import choose_device

    loading = time.perf_counter() if loading is None else loading
    device = face_detector.device if face_detector else choose_device(cfg["runtime.device"])
    detector = Detector(cfg, args.method, device,
                        Path(args.weights_dir) if args.weights_dir else None, args.fake_threshold,
                        args.fake_fraction, need_generator=bool(args.save_mri),
                        original_mri_rendering=args.original_mri_rendering, face_detector=face_detector)
    # Start-up made about 600,000 objects that live as long as the process (modules, models), which the collector
    # scanned again and again (0.3-0.9 s of a run here). They are set apart from it, and it runs again.
    gc.freeze()
    gc.enable()
    return detector, {"import_s": import_s, "model_load_s": time.perf_counter() - loading}


def report(args, detector) -> dict:
    """What the JSON says about the models, whatever the input."""
    return {"method": args.method, "precision": detector.precision.to_dict(), "thresholds": detector.thresholds,
            "models": detector.models}


def write_report(path: str | None, data: dict) -> None:
    if path:
        write_json(path, data)


if __name__ == "__main__":
    run(main, fast_exit=True)
