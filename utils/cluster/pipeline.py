"""The whole pipeline as SLURM jobs (cluster/submit_pipeline.sh): its stages, the stages each one needs, and the
sbatch command line of each. Every stage is submitted at once with --dependency=afterok on the job ids of the
stages it needs (on an array job, afterok waits for every task), or printed as shell with --dry-run.
See docs/clusters.md#pipeline.
"""
from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from utils.cli import run
from utils.config import PROJECT_ROOT, SCHEMA, load_config
from utils.errors import ConfigError
from utils.fileio import write_json
from utils.names import METHOD_OF_DATASET

STEP, ARRAY, TRAIN = "cluster/step.sbatch", "cluster/preprocess.sbatch", "cluster/train.sbatch"
CLASSIFIER_DATASET = "deep_fake.training.model_params.dataset"
NAME = re.compile(r"[A-Za-z0-9._-]+")


@dataclass
class Stage:
    name: str
    recipe: str  # the sbatch script in cluster/
    args: tuple[str, ...]  # the recipe's arguments
    needs: tuple[str, ...] = ()  # the stages that must have ended with exit code 0 before this one starts
    gpu: bool = False  # runs the networks: gets GPUs
    env: dict[str, str] = field(default_factory=dict)  # variables the recipe reads (--export)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cluster/submit_pipeline.sh", allow_abbrev=False,
        description="Submit the whole pipeline to SLURM in one command: every stage is a job that starts when the "
                    "stages it needs have ended with exit code 0. Run from the project root. "
                    "See docs/clusters.md#pipeline.")
    parser.add_argument("--config", metavar="FILE", required=True, help="the config file, passed to every step")
    parser.add_argument("--dry-run", action="store_true",
                        help="print the sbatch lines as shell, one per stage, and submit nothing")
    parser.add_argument("--array", type=positive, default=64, metavar="N", help="tasks per array stage (default 64)")
    parser.add_argument("--nodes", type=positive, default=1, help="nodes per training job (default 1)")
    parser.add_argument("--gpus-per-node", type=positive, default=8, metavar="G",
                        help="GPUs per node of a training job, one process each (default 8)")
    parser.add_argument("--cpus-per-task", type=positive, default=64, metavar="C",
                        help="CPUs per node of a training job (default 64)")
    parser.add_argument("--preprocess-cpus", type=positive, default=8, metavar="C",
                        help="CPUs of each preprocessing task and of the other one-process steps (default 8)")
    parser.add_argument("--device", choices=SCHEMA["runtime.device"].choices, default="cuda",
                        help="where the GPU stages run the networks (default cuda)")
    parser.add_argument("--from", dest="start", metavar="STAGE", default=None,
                        help="submit only STAGE and the stages after it (the earlier ones are done)")
    parser.add_argument("--sbatch-arg", dest="sbatch_args", metavar="ARG", action="append", default=[],
                        help="added to every sbatch line, e.g. --sbatch-arg=--partition=gpu (repeatable)")
    parser.add_argument("--cross-dataset", nargs=2, metavar=("DIR", "LABELS"), default=None,
                        help="also score each classifier on the labelled videos in DIR with the app "
                             "(docs/reproducing.md#cross-dataset-evaluation)")
    parser.add_argument("--name", default=None,
                        help="the pipeline folder is <logs>/pipeline_<name>/ (default: the config file's stem)")
    parser.add_argument("--logs", metavar="DIR", default="logs",
                        help="where the pipeline folder and the job logs (<logs>/slurm/) go (default logs)")
    return parser


def positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of at least 1, got {text}")
    return value


def stages(args: argparse.Namespace, folder: Path) -> list[Stage]:
    """Every stage in the order it is submitted, each after the stages it needs. Training stages write their runs
    under <folder>/<stage>/, where a resubmitted stage finds its checkpoint and continues."""
    config = ("--config", args.config)

    def training(name: str, script: tuple[str, ...], needs: tuple[str, ...]) -> Stage:
        return Stage(name, TRAIN, script, needs, gpu=True,
                     env={"LOG_ROOT": str(folder / name), "CONFIG": args.config, "DEVICE": args.device})

    plan = [
        Stage("aug_plan", STEP, ("data_preprocess.py", "--gen_aug_plan", *config)),
        Stage("apply_aug", ARRAY, ("--apply_aug_to_all", *config), ("aug_plan",)),
        # two arrays: a shard's --crop_faces needs the FDF/FFHQ landmarks JSON, which the last landmarks shard writes
        Stage("landmarks", ARRAY, ("--extract_landmarks", *config), ("apply_aug",)),
        Stage("crops", ARRAY, ("--crop_faces", *config), ("landmarks",)),
        Stage("mri_pairs", ARRAY, ("--gen_mri_dataset", *config), ("crops",)),
        # unsharded, after the array: writes the split CSVs, skips the finished pairs
        Stage("mri_csvs", STEP, ("data_preprocess.py", "--gen_mri_dataset", *config), ("mri_pairs",)),
        training("mri_gan", ("train_MRI_GAN.py", "--export"), ("mri_csvs",)),
        Stage("dfdc_mri", ARRAY, ("--gen_dfdc_mri", *config), ("mri_gan",), gpu=True, env={"DEVICE": args.device}),
        Stage("metadata", STEP, ("data_preprocess.py", "--gen_deepfake_metadata", *config), ("dfdc_mri",)),
    ]
    plan += [training(f"classifier_{dataset}", ("deep_fake_detect.py", "--export", "--set",
                                                f"{CLASSIFIER_DATASET}={dataset}"), ("metadata",))
             for dataset in METHOD_OF_DATASET]
    if args.cross_dataset:
        input_dir, labels = args.cross_dataset
        for dataset, method in METHOD_OF_DATASET.items():
            out = folder / f"cross_{dataset}"
            plan.append(Stage(f"cross_{dataset}", STEP, (
                "detect_deepfake_app.py", *config, "--input_dir", input_dir, "--labels", labels, "--method", method,
                "--device", args.device, "--output_json", f"{out}.json", "--output_csv", f"{out}.csv"),
                (f"classifier_{dataset}",), gpu=True))
    return plan


def starting_from(plan: list[Stage], start: str | None) -> list[Stage]:
    """`start` and the stages after it; their dependencies on the stages left out are dropped (those are done)."""
    if start is None:
        return plan
    names = [stage.name for stage in plan]
    if start not in names:
        raise ConfigError(f"--from {start}: no such stage; the stages are {', '.join(names)}")
    return plan[names.index(start):]


def resources(stage: Stage, args: argparse.Namespace) -> list[str]:
    """The stage's sbatch resource flags: training jobs take whole nodes' GPUs, array stages their tasks."""
    if stage.recipe == TRAIN:
        return [f"--nodes={args.nodes}", f"--gpus-per-node={args.gpus_per_node}",
                f"--cpus-per-task={args.cpus_per_task}"]
    flags = [f"--array=0-{args.array - 1}"] if stage.recipe == ARRAY else []
    flags.append(f"--cpus-per-task={args.preprocess_cpus}")
    return flags + (["--ntasks=1", "--gpus-per-task=1"] if stage.gpu else [])  # sbatch needs the task count


def export_flag(env: dict[str, str]) -> list[str]:
    """--export=ALL,NAME=VALUE,...: the submitting environment (the venv, PYTHON) and the stage's own variables."""
    for name, value in env.items():
        if "," in value:
            raise ConfigError(f"{name}={value}: sbatch --export cannot pass a value with a comma; rename the path")
    return [f"--export=ALL,{','.join(f'{name}={value}' for name, value in env.items())}"] if env else []


def sbatch_command(stage: Stage, args: argparse.Namespace, job_ids: dict[str, str]) -> list[str]:
    """`sbatch --parsable ...` for the stage; `job_ids` holds the ids of the stages submitted before it (a stage it
    needs that is not there was left out with --from)."""
    pattern = "%x_%A_%a.out" if stage.recipe == ARRAY else "%x_%j.out"
    command = ["sbatch", "--parsable", f"--job-name=mri-gan-{stage.name}",
               f"--output={Path(args.logs) / 'slurm' / pattern}"]
    needed = [job_ids[name] for name in stage.needs if name in job_ids]
    if needed:
        command.append(f"--dependency=afterok:{':'.join(needed)}")
    return [*command, *resources(stage, args), *export_flag(stage.env), *args.sbatch_args, stage.recipe, *stage.args]


def shell_line(command: list[str]) -> str:
    """The command as shell; the dependency flag is left unquoted, so its $<stage> references expand."""
    return " ".join(arg if arg.startswith("--dependency=") else shlex.quote(arg) for arg in command)


def dry_run(plan: list[Stage], args: argparse.Namespace) -> None:
    """Print the submission as shell: each stage's job id goes into a variable of its name."""
    print(shell_line(["cd", str(PROJECT_ROOT)]))
    print(shell_line(["mkdir", "-p", str(Path(args.logs) / "slurm")]))
    references = {stage.name: f"${stage.name}" for stage in plan}
    for stage in plan:
        print(f"{stage.name}=$({shell_line(sbatch_command(stage, args, references))})")


def submit_one(command: list[str], stage: str, submitted: dict[str, str]) -> str:
    """Run sbatch --parsable; the job id. A failure is one line naming the stage and the jobs already queued."""
    queued = f"; the stages before it are queued: cancel them with scancel {' '.join(submitted.values())}" \
        if submitted else ""
    try:
        result = subprocess.run(command, cwd=PROJECT_ROOT, capture_output=True, text=True)
    except FileNotFoundError:
        raise ConfigError(f"stage {stage}: sbatch not found: submit from a machine with the SLURM commands{queued}") \
            from None
    job_id = result.stdout.strip().split(";")[0]  # "<id>" or "<id>;<cluster>"
    if result.returncode != 0 or not job_id.isdigit():
        said = (result.stderr.strip() or result.stdout.strip()).splitlines()
        reason = said[-1] if said else f"exit code {result.returncode}"
        raise ConfigError(f"stage {stage}: sbatch refused the job: {reason}{queued}")
    return job_id


def submit(plan: list[Stage], args: argparse.Namespace, folder: Path, argv: list[str]) -> dict[str, str]:
    """Submit every stage in order; <folder>/jobs.json records each job id and sbatch line as it is queued."""
    (PROJECT_ROOT / args.logs / "slurm").mkdir(parents=True, exist_ok=True)
    record = {"command": ["cluster/submit_pipeline.sh", *argv],
              "submitted": datetime.now().isoformat(timespec="seconds"), "stages": {}}
    job_ids: dict[str, str] = {}
    for stage in plan:
        command = sbatch_command(stage, args, job_ids)
        job_ids[stage.name] = submit_one(command, stage.name, job_ids)
        record["stages"][stage.name] = {"job_id": job_ids[stage.name], "sbatch": shell_line(command)}
        write_json(PROJECT_ROOT / folder / "jobs.json", record)
        print(f"{stage.name}: job {job_ids[stage.name]}", flush=True)
    return job_ids


def without_from(argv: list[str]) -> list[str]:
    """The command-line arguments less --from and its value."""
    kept, skip = [], False
    for arg in argv:
        if not skip and arg != "--from" and not arg.startswith("--from="):
            kept.append(arg)
        skip = arg == "--from"
    return kept


def check_inputs(args: argparse.Namespace) -> str:
    """Refuse what would make a stage fail at once: a bad config file, a missing cross-dataset input, a name that
    is no folder name. Paths are relative to the project root. Returns the pipeline's name."""
    load_config(PROJECT_ROOT / args.config)
    if args.cross_dataset:
        input_dir, labels = (PROJECT_ROOT / path for path in args.cross_dataset)
        if not input_dir.is_dir() or not labels.is_file():
            raise ConfigError(f"--cross-dataset: {input_dir if not input_dir.is_dir() else labels} not found")
    name = args.name or Path(args.config).stem
    if not NAME.fullmatch(name):
        raise ConfigError(f"pipeline name {name!r}: use letters, digits, '.', '_' and '-' only (set --name)")
    return name


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser().parse_args(argv)
    folder = Path(args.logs) / f"pipeline_{check_inputs(args)}"
    plan = starting_from(stages(args, folder), args.start)
    if args.dry_run:
        dry_run(plan, args)
        return 0
    job_ids = submit(plan, args, folder, argv)
    print(f"the jobs are recorded in {folder / 'jobs.json'}")
    print(f"to cancel every stage: scancel {' '.join(job_ids.values())}")
    print("a stage that fails leaves the stages after it pending (DependencyNeverSatisfied): cancel them with the "
          "line above, fix the cause, then resubmit from that stage (finished work is skipped, training continues "
          f"from its checkpoint): {shell_line(['cluster/submit_pipeline.sh', *without_from(argv)])} --from STAGE",
          flush=True)
    return 0


if __name__ == "__main__":
    run(main)
