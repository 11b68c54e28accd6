"""`make ablation`: the paper's τ ablation at demo size. The MRI-GAN of `make demo` is trained once for each
τ in {0, 0.3, 0.5, 0.7, 1.0} on the demo's MRI data set (generated with the demo's own steps when missing), then
gen_plots.py draws the runs' curves and compare_MRI_GANs.py their MRIs of the same test faces. The demo's own
MRI-GAN (τ = 1.0) is reused when `make demo` trained it. Every step is a real command; finished steps are skipped
on a re-run. See docs/reproducing.md#tau-ablation.
"""
from __future__ import annotations

import time
from pathlib import Path

import pandas as pd

from utils.cli import make_parser, run
from utils.demo.steps import STEPS, Demo, Step, add_demo_flags, demo_from_args, newest, train_or_resume
from utils.evaluation.figures import read_mri_gan_run
from utils.fileio import write_json
from utils.names import BEST_G, MRI_GAN_TASK

TAUS = (0.0, 0.3, 0.5, 0.7, 1.0)
DATA_STEPS = ("data", "augment", "landmarks", "crops", "mri_dataset")  # the demo's steps up to the MRI data set
MODEL_NAME = MRI_GAN_TASK  # the demo config keeps MRI_GAN.model_params.model_name's default


def run_root(demo: Demo, tau: float) -> Path:
    return demo.out / "ablation" / f"tau_{tau:g}"


def demo_run(demo: Demo, tau: float) -> Path | None:
    """The MRI-GAN run `make demo` trained, when it finished and used this τ (the same model: it is reused)."""
    runs = sorted((demo.work / "logs" / "mri_gan").glob(f"*/{MODEL_NAME}/{BEST_G}"), key=lambda p: p.stat().st_mtime)
    if "mri_gan" not in demo.state or not runs:
        return None
    folder = runs[-1].parent
    return folder if read_mri_gan_run(folder).tau == tau else None


def train_tau(tau: float) -> Step:
    def action(demo: Demo) -> None:
        if demo_run(demo, tau) is not None:
            print(f"the demo's MRI-GAN was trained with tau = {tau:g}: reusing {demo_run(demo, tau)}", flush=True)
            return
        train_or_resume(demo, "train_MRI_GAN.py", run_root(demo, tau), "--set", f"MRI_GAN.model_params.tau={tau}",
                        log=f"ablation_tau_{tau:g}")
    return Step(f"ablation_tau_{tau:g}", f"train_MRI_GAN.py, tau = {tau:g} (demo size)", action)


def run_folders(demo: Demo) -> list[Path]:
    """The finished run of each τ: the ablation's own, or the demo's for the τ the demo used."""
    folders = []
    for tau in TAUS:
        own = sorted(run_root(demo, tau).glob(f"*/{MODEL_NAME}/{BEST_G}"), key=lambda p: p.stat().st_mtime)
        folders.append(own[-1].parent if own else demo_run(demo, tau) or newest(run_root(demo, tau), BEST_G))
    return folders


def gen_plots(demo: Demo) -> None:
    demo.script("gen_plots.py", "--mri_gan_runs", *map(str, run_folders(demo)),
                "--out", str(demo.out / "ablation" / "plots"), log="ablation_gen_plots")


def compare(demo: Demo) -> None:
    demo.script("compare_MRI_GANs.py", "--generators",
                *(str(folder / BEST_G) for folder in run_folders(demo)),
                "--out", str(demo.out / "ablation" / "compare_MRI_GANs.png"), log="ablation_compare")


ABLATION_STEPS = [step for step in STEPS if step.name in DATA_STEPS] + [train_tau(tau) for tau in TAUS] + [
    Step("ablation_gen_plots", "gen_plots.py --mri_gan_runs <the five runs>", gen_plots),
    Step("ablation_compare", "compare_MRI_GANs.py --generators <the five best generators>", compare),
]


def summary(demo: Demo) -> pd.DataFrame:
    """One row per τ: the runs' test SSIM (best and last epoch) and the comparison's scores of the best G."""
    runs = pd.read_csv(demo.out / "ablation" / "plots" / "mri_gan_runs.csv")
    scores = pd.read_csv(demo.out / "ablation" / "compare_MRI_GANs.csv")
    table = pd.DataFrame({"tau": runs["tau"], "best_test_ssim": runs["best_test_ssim"],
                          "final_test_ssim": runs["final_test_ssim"], "best_G_pixel_mse": scores["test_pixel_mse"],
                          "mri_brightness_real": scores["mean_mri_real"],
                          "mri_brightness_fake": scores["mean_mri_fake"]})
    return table


def build_parser():
    return add_demo_flags(make_parser(__doc__))


def main() -> int:
    demo = demo_from_args(build_parser().parse_args(), "full")
    started = time.perf_counter()
    demo.run(ABLATION_STEPS)  # a failed step is a StepFailed: one line and exit code 1 (utils.cli.run)
    table = summary(demo)
    write_json(demo.out / "ablation" / "ablation_results.json",
               {"rows": table.to_dict(orient="records"), "seconds_this_run": round(time.perf_counter() - started, 1),
                "step_seconds": {step.name: demo.state.get(step.name) for step in ABLATION_STEPS}})
    print("\n=== the τ ablation at demo size (synthetic data, width-16 MRI-GAN, 8 epochs) ===")
    print("loss_G = GAN + λ·(τ·pixel MSE + (1 − τ)·sqrt(1 − SSIM + ε)): τ = 0 keeps only the SSIM term, "
          "τ = 1 only the pixel MSE")
    print(table.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    print(f"\nfigures: {demo.out / 'ablation' / 'plots'}; MRIs of the same test faces: "
          f"{demo.out / 'ablation' / 'compare_MRI_GANs.png'}")
    return 0


if __name__ == "__main__":
    run(main)
