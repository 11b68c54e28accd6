"""The recipes in cluster/ under a real SLURM (cluster/local_slurm.sh: slurmctld and slurmd on this machine):
submitted with sbatch, stopped with scancel, scontrol requeue and the time limit, and compared with runs that
were never interrupted. docs/clusters.md#preemption-and-time-limits says what they show."""
from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tests.helpers import run_folders, set_flags
from tests.test_deep_fake_detect import make_classifier_data
from tests.test_deep_fake_detect import settings as classifier_settings
from tests.test_mri_gan_training import make_mri_gan_dataset
from tests.test_mri_gan_training import settings as mri_gan_settings
from tests.test_preprocess import make_data, tree_hashes, write_config
from utils.config import PROJECT_ROOT

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]  # jobs wait in a real queue


# --- submitting and watching jobs -----------------------------------------------------------------------------


def job_env(cluster: dict, **extra: str) -> dict:
    """The submitting environment: the cluster's SLURM_CONF, this venv first on PATH, one thread per process,
    CPU training (the local node's GPUs are counted only)."""
    return {**cluster, "PATH": f"{Path(sys.executable).parent}:{cluster['PATH']}", "PYTHON": sys.executable,
            "TORCHRUN": str(Path(sys.executable).with_name("torchrun")), "OMP_NUM_THREADS": "1", "DEVICE": "cpu",
            **extra}


def sbatch(env: dict, out: Path, *args: str) -> str:
    """sbatch --parsable from the project root; the job's output goes to `out` (a folder)."""
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(["sbatch", "--parsable", f"--output={out}/%x_%j.out", *args], cwd=PROJECT_ROOT,
                            env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip().split(";")[0]


def job_info(env: dict, job: str) -> dict[str, str]:
    """scontrol show job, as KEY -> value (one job, or an array task as <id>_<index>)."""
    text = subprocess.run(["scontrol", "show", "job", "-o", job], env=env, capture_output=True, text=True,
                          timeout=60).stdout
    return dict(item.split("=", 1) for item in text.split() if "=" in item)


def wait_until_done(env: dict, job: str, timeout: float) -> dict[str, str]:
    deadline = time.time() + timeout
    while time.time() < deadline:
        info = job_info(env, job)
        if info.get("JobState") in {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY"}:
            return info
        time.sleep(1)
    subprocess.run(["scancel", job], env=env, timeout=60)
    raise AssertionError(f"job {job} not done after {timeout} s: {job_info(env, job)}")


def wait_for_files(pattern: str, root: Path, count: int, env: dict, job: str, timeout: float = 180) -> None:
    """Wait until `count` files match `pattern` under root (or, for a CSV, until it has `count` data rows)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = sorted(root.glob(pattern))
        if pattern.endswith(".csv"):
            found = found and found[0].read_text().splitlines()[1:]
        if len(found) >= count:
            return
        assert job_info(env, job).get("JobState") in {"PENDING", "RUNNING", "CONFIGURING"}, job_info(env, job)
        time.sleep(0.05)
    raise AssertionError(f"no {count} of {pattern} under {root} after {timeout} s")


def slurm_output(out: Path) -> str:
    return "\n".join(path.read_text() for path in sorted(out.glob("*.out")))


def same_weights(a: Path, b: Path, key: str) -> float:
    """The largest |difference| between the `key` state dicts of two checkpoints."""
    first, second = (torch.load(path, weights_only=True)[key] for path in (a, b))
    assert first.keys() == second.keys()
    return max(float((first[name].double() - second[name].double()).abs().max()) for name in first)


# --- preprocessing ---------------------------------------------------------------------------------------------


def test_a_preprocessing_task_requeued_mid_run_ends_with_the_files_of_one_uninterrupted_run(slurm_cluster, tmp_path):
    """A 2-task array of cluster/preprocess.sbatch (landmarks); task 0 is requeued by scontrol while it works: it
    stops between items, SLURM starts it again, and it skips what it had finished. The union of both tasks' files
    equals one plain run's, byte for byte."""
    env = job_env(slurm_cluster)
    data = make_data(tmp_path / "data", videos_per_split=4, n_frames=30, extras=False)
    steps = ["--extract_landmarks"]
    reference = write_config(data, tmp_path / "reference")
    # with the threads of a 1-CPU task, as the array's tasks have: detector coordinates depend on the thread count
    subprocess.run([sys.executable, "data_preprocess.py", "--config", str(reference), *steps, "--workers", "1"],
                   cwd=PROJECT_ROOT, env={**env, "SLURM_CPUS_PER_TASK": "1"}, check=True, capture_output=True,
                   timeout=600)
    config = write_config(data, tmp_path / "array")
    out = tmp_path / "slurm"
    job = sbatch(env, out, "--array=0-1", "--cpus-per-task=1", "cluster/preprocess.sbatch", *steps,
                 "--config", str(config))
    task = f"{job}_0"
    wait_for_files("features/dfdc/landmarks/*/*.json", tmp_path / "array", 1, env, task)
    requeue = subprocess.run(["scontrol", "requeue", task], env=env, capture_output=True, text=True, timeout=60)
    assert requeue.returncode == 0, requeue.stderr
    for index in (0, 1):
        info = wait_until_done(env, f"{job}_{index}", timeout=600)
        assert info["JobState"] == "COMPLETED", (info, slurm_output(out))
    assert job_info(env, task)["Restarts"] == "1"
    log = slurm_output(out)
    assert "shard 1/2 on" in log and "restart 1" in log and "stopped by SIGTERM" in log
    assert tree_hashes(tmp_path / "array/features") == tree_hashes(tmp_path / "reference/features")


# --- training ---------------------------------------------------------------------------------------------------


def train_job(env: dict, tmp_path: Path, name: str, trainer: str, flags: list[str], *sbatch_args: str) -> str:
    """cluster/train.sbatch with 2 CPU processes (gloo) on the local node, run folders under tmp_path/name."""
    logs = tmp_path / name
    return sbatch({**env, "LOG_ROOT": str(logs)}, tmp_path / f"{name}_slurm", "--gpus-per-node=2",
                  "--cpus-per-task=2", *sbatch_args, "cluster/train.sbatch", trainer, *flags)


def mri_gan_flags(data: Path, logs: Path, epochs: int) -> list[str]:
    return set_flags(mri_gan_settings(data, logs, "MRI_GAN.model_params.batch_size=4",
                                      f"MRI_GAN.model_params.n_epochs={epochs}", "runtime.loader_workers=2"))


@pytest.fixture(scope="module")
def mri_gan_data(tmp_path_factory) -> Path:
    return make_mri_gan_dataset(tmp_path_factory.mktemp("mri_gan_data"))


@pytest.fixture(scope="module")
def mri_gan_reference(slurm_cluster, mri_gan_data, tmp_path_factory) -> Path:
    """The uninterrupted run: 3 epochs of the tiny MRI-GAN, 2 processes with 2 loader workers each."""
    tmp = tmp_path_factory.mktemp("mri_gan_reference")
    env = job_env(slurm_cluster)
    job = train_job(env, tmp, "logs", "train_MRI_GAN.py", mri_gan_flags(mri_gan_data, tmp / "logs", 3))
    info = wait_until_done(env, job, timeout=600)
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "0", slurm_output(tmp / "logs_slurm")
    (run_dir,) = run_folders(tmp / "logs", "MRI_GAN")
    return run_dir


def check_continued_run(env: dict, job: str, logs: Path, task: str, reference: Path, key: str,
                        steps: int) -> str:
    """The job ended COMPLETED after at least one restart, in one run folder whose step log has every step once,
    and its final weights equal the uninterrupted run's. Returns the job's output."""
    info = wait_until_done(env, job, timeout=900)
    output = slurm_output(logs.with_name(f"{logs.name}_slurm"))
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, (info, output)
    (run_dir,) = run_folders(logs, task)
    with open(run_dir / "losses.csv" if task == "MRI_GAN" else run_dir / "summary.json") as handle:
        text = handle.read()
    if task == "MRI_GAN":
        assert [int(line.split(",")[2]) for line in text.splitlines()[1:]] == list(range(1, steps + 1)), text
    assert '"status": "finished"' in (run_dir / "summary.json").read_text()
    assert '"exact": true' in (run_dir / "summary.json").read_text()
    assert same_weights(run_dir / "checkpoint.chkpt", reference / "checkpoint.chkpt", key) <= 1e-6
    assert "stopped by SIGTERM at a safe point" in output and f"--train_resume {run_dir}" in output
    return output


def test_scancel_signal_term_full_stops_torchrun_at_one_step_and_the_job_requeues_itself(
        slurm_cluster, mri_gan_data, mri_gan_reference, tmp_path):
    """`scancel --signal=TERM --full`, as a preemption signals every process of the job (batch shell, torchrun,
    both trainers and their loader workers): the trainers stop at one step, rank 0 saves there, the batch shell
    requeues the job, and the same job id continues in the same run folder to the uninterrupted weights."""
    env = job_env(slurm_cluster)
    logs = tmp_path / "logs"
    job = train_job(env, tmp_path, "logs", "train_MRI_GAN.py", mri_gan_flags(mri_gan_data, logs, 3))
    wait_for_files("*/MRI_GAN/losses.csv", logs, 1, env, job)
    subprocess.run(["scancel", "--signal=TERM", "--full", job], env=env, check=True, timeout=60)
    output = check_continued_run(env, job, logs, "MRI_GAN", mri_gan_reference, "generator_state_dict", steps=6)
    assert f"requeued job {job} (restart 1)" in output
    # both ranks stopped at the same step (their lines may share a line of the file with a progress bar)
    steps = {rank: re.findall(rf"rank {rank}: stopped by SIGTERM at step (\d+)", output) for rank in (0, 1)}
    assert len(steps[0]) == 1 and steps[0] == steps[1], output


def test_a_time_limit_checkpoints_and_the_job_requeues_itself_until_it_finishes(
        slurm_cluster, mri_gan_data, tmp_path):
    """--time=2 with --signal=B:TERM@60: SLURM warns the batch shell a minute before the limit, the trainers save
    at one step, and the job requeues itself (same id, same run folder) as often as it takes to finish. (With a
    warning of half the limit or more, this SLURM sends it at once, while the trainers start.)"""
    env = job_env(slurm_cluster)
    logs = tmp_path / "logs"
    flags = mri_gan_flags(mri_gan_data, logs, 24)  # about 80 s of training here: more than the minute to the warning
    job = train_job(env, tmp_path, "logs", "train_MRI_GAN.py", flags, "--time=2", "--signal=B:TERM@60")
    info = wait_until_done(env, job, timeout=900)
    output = slurm_output(tmp_path / "logs_slurm")
    assert info["JobState"] == "COMPLETED" and int(info["Restarts"]) >= 1, (info, output)
    assert f"requeued job {job} (restart 1)" in output and "stopped by SIGTERM at step" in output
    (run_dir,) = run_folders(logs, "MRI_GAN")
    assert '"status": "finished"' in (run_dir / "summary.json").read_text()


@pytest.fixture(scope="module")
def classifier_data(tmp_path_factory) -> Path:
    return make_classifier_data(tmp_path_factory.mktemp("classifier_data"))


def classifier_flags(data: Path, logs: Path) -> list[str]:
    return set_flags(classifier_settings(data, logs, "deep_fake.training.model_params.dataset=plain",
                                         "deep_fake.training.model_params.chkpt_freq=1", "runtime.loader_workers=2"))


def test_scontrol_requeue_of_the_classifier_saves_at_one_step_and_the_job_continues_to_the_same_weights(
        slurm_cluster, classifier_data, tmp_path):
    """`scontrol requeue` on a running classifier training (SIGTERM to every process of the job, then SLURM puts
    it back in the queue): a checkpoint at the stop step, the same job continues from it and ends with the
    weights of an uninterrupted run (which is run first, as its own job)."""
    env = job_env(slurm_cluster)
    reference_logs = tmp_path / "reference"
    job = train_job(env, tmp_path, "reference", "deep_fake_detect.py", classifier_flags(classifier_data,
                                                                                        reference_logs))
    assert wait_until_done(env, job, timeout=600)["JobState"] == "COMPLETED", slurm_output(tmp_path / "reference_slurm")
    (reference,) = run_folders(reference_logs, "deep_fake")

    logs = tmp_path / "logs"
    job = train_job(env, tmp_path, "logs", "deep_fake_detect.py", classifier_flags(classifier_data, logs))
    wait_for_files("*/deep_fake/checkpoint.chkpt", logs, 1, env, job)
    subprocess.run(["scontrol", "requeue", job], env=env, check=True, timeout=60)
    check_continued_run(env, job, logs, "deep_fake", reference, "model_state_dict", steps=0)
