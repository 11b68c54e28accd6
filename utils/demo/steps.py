"""The embedded default (`make demo`): the whole pipeline on a generated data set, step by step.

Each step is a real command of a real script, run as a subprocess with the demo config; its output goes to
the terminal and to <out>/demo_logs/<step>.log. A step that finished is recorded in <out>/demo_state.json
and skipped when the demo is run again (the scripts also resume their own unfinished work).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pandas as pd
import yaml

from utils.config import PROJECT_ROOT
from utils.demo.synthetic import dataset_config, make_celeb_df, make_dfdc_dataset, make_image_folder
from utils.errors import ConfigError, StepFailed
from utils.fileio import atomic_path, write_json
from utils.names import CLASSIFIER_TASK, METHOD_OF_DATASET, PERIODIC

# Sizes of the generated data and of the models. "full" is `make demo`; "quick" is the CI end-to-end test.
PROFILES = {
    "full": {"videos": {"train": 12, "valid": 4, "test": 4}, "n_frames": 30, "frame_step": 3,
             "gan_width": 16, "gan_epochs": 8, "gan_batch": 8, "cnn_epochs": 6, "cnn_batch": 16},
    "quick": {"videos": {"train": 2, "valid": 2, "test": 2}, "n_frames": 12, "frame_step": 4,
              "gan_width": 8, "gan_epochs": 1, "gan_batch": 4, "cnn_epochs": 1, "cnn_batch": 8},
}


@dataclass
class Step:
    name: str
    title: str
    action: Callable[["Demo"], None]


def _tee(process: subprocess.Popen, stream, handle) -> int:
    """Copy a child's output stream to our terminal and `handle` as it comes (progress bars included)."""
    for chunk in iter(lambda: stream.read1(4096), b""):
        handle.write(chunk)
        sys.stdout.buffer.write(chunk)
        sys.stdout.flush()
    return process.wait()


def newest(root: Path, pattern: str) -> Path:
    """The most recently written file matching `pattern` under `root`."""
    found = sorted(root.glob(pattern), key=lambda p: p.stat().st_mtime)
    if not found:
        raise StepFailed(f"no {pattern} under {root}")
    return found[-1]


class Demo:
    def __init__(self, out: Path, profile: str, device: str = "auto", workers: int = 2, overrides=()):
        self.out, self.profile_name = out.resolve(), profile
        self.profile = PROFILES[profile]
        self.device, self.workers = device, workers
        self.overrides = [arg for key_value in overrides for arg in ("--set", key_value)]
        self.data, self.work = self.out / "data", self.out / "work"
        self.config = self.out / "demo_config.yml"
        self.state_file = self.out / "demo_state.json"
        saved = json.loads(self.state_file.read_text(encoding="utf-8")) if self.state_file.is_file() else {}
        if saved and saved.get("profile") != profile:
            raise ConfigError(f"{self.out} holds a demo made with profile {saved.get('profile')!r}; use another "
                              f"--out folder or delete this one to run profile {profile!r}")
        self.state = saved.get("seconds", {})  # step name -> seconds it took

    # --- plumbing -------------------------------------------------------------------------------

    def script(self, name: str, *args: str, log: str, stdout_file: Path | None = None,
               with_config: bool = True) -> None:
        """Run `python <name> --config <demo config> args...`; its output goes to the terminal and a log file
        (its standard output to `stdout_file` instead, when given, e.g. the app's CSV)."""
        config = ["--config", str(self.config)] if with_config else []
        command = [sys.executable, str(PROJECT_ROOT / name), *config, *self.overrides, *args]
        log_path = self.out / "demo_logs" / f"{log}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as handle:
            handle.write(f"$ {' '.join(command)}\n".encode())
            handle.flush()
            if stdout_file is None:
                process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
                code = _tee(process, process.stdout, handle)
            else:
                with atomic_path(stdout_file) as tmp, open(tmp, "wb") as captured:
                    process = subprocess.Popen(command, cwd=PROJECT_ROOT, stdout=captured, stderr=subprocess.PIPE)
                    code = _tee(process, process.stderr, handle)
        if code != 0:
            raise StepFailed(f"step '{log}' failed (exit code {code}); its output is in {log_path}")

    def run(self, steps: list[Step]) -> None:
        total = time.perf_counter()
        for number, step in enumerate(steps, 1):
            label = f"[{number}/{len(steps)}] {step.title}"
            if step.name in self.state:
                print(f"{label}: done before ({self.state[step.name]:.0f} s), skipped", flush=True)
                continue
            print(f"\n{label} ...", flush=True)
            start = time.perf_counter()
            step.action(self)
            self.state[step.name] = round(time.perf_counter() - start, 1)
            write_json(self.state_file, {"profile": self.profile_name, "seconds": self.state})
            print(f"{label}: done in {self.state[step.name]:.0f} s", flush=True)
        print(f"\nall steps done; this run took {time.perf_counter() - total:.0f} s "
              f"(sum of step times {sum(self.state.values()):.0f} s)", flush=True)


def add_demo_flags(parser):
    """The demo folder and worker flags shared by demo.py and `make ablation`."""
    parser.add_argument("--out", metavar="DIR", default="data/demo",
                        help="where the generated data, outputs and logs go (default data/demo)")
    parser.add_argument("--workers", type=int, default=2, help="worker processes for data_preprocess.py")
    return parser


def demo_from_args(args, profile: str) -> Demo:
    """The Demo for parsed flags; --config is refused, since the demo writes its own config."""
    if args.config:
        raise ConfigError("the demo writes its own config (<out>/demo_config.yml); change keys with --set, "
                          "which is passed to every step")
    return Demo(Path(args.out), profile, device=args.device or "auto", workers=args.workers, overrides=args.overrides)


# --- the steps ------------------------------------------------------------------------------------


def write_config(demo: Demo) -> None:
    """Generate the data sets and the demo config (every path inside the demo folder, small models)."""
    p = demo.profile
    make_dfdc_dataset(demo.data / "dfdc", p["videos"], n_frames=p["n_frames"], seed=7)
    make_celeb_df(demo.data / "celeb", n_frames=p["n_frames"], seed=7)
    make_image_folder(demo.data / "fdf", n_images=4, seed=7)
    make_image_folder(demo.data / "ffhq", n_images=4, seed=8)
    config = dataset_config(demo.data, demo.work)
    config["data_path"]["dfdc"]["train_source"] = "augmented"
    config["runtime"] = {"device": demo.device, "workers": demo.workers, "loader_workers": 0}
    config["faces"] = {"frame_step": p["frame_step"]}
    config["MRI_GAN"] = {"model_params": {
        "ngf": p["gan_width"], "ndf": p["gan_width"], "n_epochs": p["gan_epochs"], "batch_size": p["gan_batch"],
        # tau 1.0 keeps only the pixel MSE of the reconstruction term (loss_G = GAN + λ(τ·pixel + (1−τ)·SSIM term));
        # `make ablation` trains this size for every τ of the paper (docs/reproducing.md#tau-ablation)
        "tau": 1.0, "test_sample_size": 4, "chkpt_freq": 1000}}
    config["deep_fake"] = {"training": {"model_params": {
        "epochs": p["cnn_epochs"], "batch_size": p["cnn_batch"],
        "encoder_weights": "none"}}}  # ImageNet weights cannot be downloaded here; see docs/pipeline.md#encoder-weights
    demo.config.parent.mkdir(parents=True, exist_ok=True)
    demo.config.write_text("# written by demo.py: the demo's data and output folders, small models\n"
                           + yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    print(f"generated data in {demo.data}; config {demo.config}")


def preprocess(*flags: str) -> Callable[[Demo], None]:
    def action(demo: Demo) -> None:
        demo.script("data_preprocess.py", *flags, "--workers", str(demo.workers), log=flags[0].lstrip("-"))
    return action


def train_or_resume(demo: Demo, name: str, root: Path, *args: str, log: str) -> None:
    """Train with `name` into run folders under `root`; after an interrupted attempt, resume from the newest
    periodic checkpoint there instead (its stored config is used, so --config is not passed)."""
    periodic = sorted(root.glob(f"*/*/{PERIODIC}"), key=lambda p: p.stat().st_mtime)
    if periodic:
        print(f"an earlier attempt was interrupted: resuming from {periodic[-1]}", flush=True)
        demo.script(name, "--train_resume", str(periodic[-1]), *args, log=log, with_config=False)
    else:
        demo.script(name, "--train_from_scratch", "--set", f"logging.root_log_dir={root}", *args, log=log)


def train_mri_gan(demo: Demo) -> None:
    """Train, then --export the best generator to MRI_GAN.weights (<work>/assets/weights/), read by the next steps."""
    train_or_resume(demo, "train_MRI_GAN.py", demo.work / "logs" / "mri_gan", "--export", log="train_MRI_GAN")


def train_classifier(dataset: str) -> Callable[[Demo], None]:
    def action(demo: Demo) -> None:
        train_or_resume(demo, "deep_fake_detect.py", demo.work / "logs" / f"classifier_{dataset}", "--export",
                        "--set", f"deep_fake.training.model_params.dataset={dataset}",
                        log=f"deep_fake_detect_{dataset}")
    return action


def run_app(method: str) -> Callable[[Demo], None]:
    def action(demo: Demo) -> None:
        csv = demo.out / f"app_{method}.csv"
        demo.script("detect_deepfake_app.py", "--input_dir", str(demo.data / "dfdc" / "test" / "data"),
                    "--method", method, "--weights_dir", str(demo.work / "assets" / "weights"),
                    log=f"app_{method}", stdout_file=csv)
    return action


def app_on_one_video(demo: Demo) -> None:
    """One fake test video through the MRI method with --save_mri and --output_json (the evidence files)."""
    labels = pd.read_csv(demo.data / "dfdc" / "test" / "data" / "labels.csv")
    fake = labels[labels["label"] == 1]["filename"].iloc[0]
    demo.script("detect_deepfake_app.py", "--input_videofile", str(demo.data / "dfdc" / "test" / "data" / fake),
                "--method", "MRI", "--weights_dir", str(demo.work / "assets" / "weights"),
                "--output_json", str(demo.out / "app_one_video.json"), "--save_mri", str(demo.out / "app_mri"),
                log="app_one_video")


STEPS = [
    Step("data", "generate the synthetic DFDC / Celeb-DF / FDF / FFHQ data and the demo config", write_config),
    Step("augment", "data_preprocess.py --gen_aug_plan --apply_aug_to_all",
         preprocess("--gen_aug_plan", "--apply_aug_to_all", "--datasets", "dfdc")),
    Step("landmarks", "data_preprocess.py --extract_landmarks", preprocess("--extract_landmarks")),
    Step("crops", "data_preprocess.py --crop_faces", preprocess("--crop_faces")),
    Step("mri_dataset", "data_preprocess.py --gen_mri_dataset", preprocess("--gen_mri_dataset")),
    Step("mri_gan", "train_MRI_GAN.py --train_from_scratch (reduced width)", train_mri_gan),
    Step("dfdc_mri", "data_preprocess.py --gen_dfdc_mri", preprocess("--gen_dfdc_mri")),
    Step("metadata", "data_preprocess.py --gen_deepfake_metadata", preprocess("--gen_deepfake_metadata")),
    Step("classifier_plain", "deep_fake_detect.py --train_from_scratch --export (plain frames)",
         train_classifier("plain")),
    Step("classifier_mri", "deep_fake_detect.py --train_from_scratch --export (MRI)", train_classifier("mri")),
    Step("app_plain", "detect_deepfake_app.py --input_dir <test videos> --method plain_frames",
         run_app("plain_frames")),
    Step("app_mri", "detect_deepfake_app.py --input_dir <test videos> --method MRI", run_app("MRI")),
    Step("app_one", "detect_deepfake_app.py --input_videofile <a fake> --save_mri --output_json", app_on_one_video),
]


# --- the report -----------------------------------------------------------------------------------


def results(demo: Demo) -> dict:
    """Test metrics of both classifiers and the app's accuracy on the test videos, from the files written."""
    steps = {step.name for step in STEPS}  # the state file also records `make ablation`'s steps
    report = {"profile": demo.profile_name, "methods": {},
              "step_seconds": {name: seconds for name, seconds in demo.state.items() if name in steps}}
    labels = pd.read_csv(demo.data / "dfdc" / "test" / "data" / "labels.csv")
    truth = dict(zip(labels["filename"], labels["label"]))
    for dataset, method in METHOD_OF_DATASET.items():
        metrics_path = newest(demo.work / "logs" / f"classifier_{dataset}", f"*/{CLASSIFIER_TASK}/test*/metrics.json")
        metrics = json.loads(metrics_path.read_text(encoding="utf-8"))
        app = pd.read_csv(demo.out / f"app_{method}.csv")
        app["truth"] = [truth.get(Path(path).name) for path in app["path"]]
        decided = app[app["status"] == "ok"]
        correct = int(sum((decided["verdict"] == "fake") == (decided["truth"] == 1)))
        report["methods"][method] = {"metrics_file": str(metrics_path), "test": metrics,
                                     "app_correct": correct, "app_videos": int(len(app)),
                                     "app_no_verdict": int(len(app) - len(decided))}
    return report


def _pair(thresholds: dict) -> str:
    return f"{thresholds['fake_threshold']:g} / {thresholds['fake_fraction']:g}"


def print_report(report: dict, demo: Demo) -> None:
    print("\n=== demo results (synthetic data, tiny models: this shows the pipeline works, not how well "
          "the paper's models detect real deepfakes) ===")
    step_times = ", ".join(f"{name} {seconds:.0f}" for name, seconds in report["step_seconds"].items())
    print("\ntime per step (s): " + step_times)
    rows = []
    for method, info in report["methods"].items():
        test = info["test"]
        frame, video = test.get("frame", {}), test.get("video", {})
        rows.append({"method": method, "frame acc": frame.get("accuracy"), "frame AUC": frame.get("roc_auc"),
                     "frame EER": frame.get("eer"), "video acc": video.get("accuracy"),
                     "video AUC": video.get("roc_auc"),
                     "app correct": f"{info['app_correct']}/{info['app_videos']}"})
    print("\ntest split (held out; thresholds tuned on the validation split):")
    print(pd.DataFrame(rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    paper_rows = []
    for method, info in report["methods"].items():
        paper, video = info["test"]["paper"], info["test"]["video"]
        paper_rows.append({"method": method, "protocol": "ours", "thresholds": _pair(info["test"]["thresholds"]),
                           "videos": video["n"], "ACC": video["accuracy"], "AUC": video["roc_auc"],
                           "F1": video["f1"]})
        paper_rows.append({"method": method, "protocol": "paper", "thresholds": _pair(paper["thresholds"]),
                           "videos": paper["n_videos"], "ACC": paper["acc"], "AUC": paper["auc"], "F1": paper["f1"]})
    print("\nvideo level, both protocols. Ours: thresholds from validation, videos without a face counted as real, "
          "ACC = accuracy.\nThe paper's: thresholds searched on this test split, videos without a face dropped, "
          "ACC = mean of the class recalls;\nit is only for comparison with the paper's Table, not an unbiased "
          "estimate.")
    print(pd.DataFrame(paper_rows).to_string(index=False, float_format=lambda v: f"{v:.3f}"))
    print(f"\nplots and metrics: {demo.work / 'logs'} (ROC curves roc_frame.png / roc_video.png beside each "
          f"metrics.json); MRI montage: {demo.out / 'app_mri'}; app CSVs: {demo.out}/app_*.csv")
