"""cluster/submit_pipeline.sh (utils/cluster/pipeline.py): the stages as sbatch lines with their dependencies and
resources (--dry-run, run as shell), bad input in one line, the submission with its record and its failures, and
the whole pipeline on a real SLURM on generated data."""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import pytest

from utils.cli import run
from utils.cluster.pipeline import main
from utils.config import PROJECT_ROOT
from utils.demo.steps import Demo, write_config
from utils.names import BEST_G

SUBMIT = "cluster/submit_pipeline.sh"
STAGES = ["aug_plan", "apply_aug", "landmarks", "crops", "mri_pairs", "mri_csvs", "mri_gan", "dfdc_mri", "metadata",
          "classifier_plain", "classifier_mri"]
CROSS = ["cross_plain", "cross_mri"]
NEEDS = {"apply_aug": "aug_plan", "landmarks": "apply_aug", "crops": "landmarks", "mri_pairs": "crops",
         "mri_csvs": "mri_pairs", "mri_gan": "mri_csvs", "dfdc_mri": "mri_gan", "metadata": "dfdc_mri",
         "classifier_plain": "metadata", "classifier_mri": "metadata", "cross_plain": "classifier_plain",
         "cross_mri": "classifier_mri"}
ARRAYS = {"apply_aug", "landmarks", "crops", "mri_pairs", "dfdc_mri"}
TRAINING = {"mri_gan", "classifier_plain", "classifier_mri"}
LINE = re.compile(r"(\w+)=\$\((sbatch .*)\)")


def submit(*args: str, env: dict | None = None, cwd: Path = PROJECT_ROOT) -> subprocess.CompletedProcess:
    """cluster/submit_pipeline.sh with these arguments, with this Python."""
    return subprocess.run(["bash", str(PROJECT_ROOT / SUBMIT), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env={**(env or os.environ), "PYTHON": sys.executable})


def pipeline(capsys, *args: str) -> subprocess.CompletedProcess:
    """The module's main in this process, as the wrapper runs it (one-line errors and exit codes by utils.cli.run)."""
    with pytest.raises(SystemExit) as ended:
        run(lambda: main(list(args)))
    out, err = capsys.readouterr()
    return subprocess.CompletedProcess(args, ended.value.code, out, err)


@pytest.fixture
def config(tmp_path) -> Path:
    path = tmp_path / "my_run.yml"
    path.write_text(f"logging:\n  root_log_dir: {tmp_path / 'runs'}\n")
    return path


@pytest.fixture
def cross_data(tmp_path) -> tuple[str, str]:
    (tmp_path / "videos").mkdir()
    (tmp_path / "videos" / "labels.csv").write_text("filename,label\n")
    return str(tmp_path / "videos"), str(tmp_path / "videos" / "labels.csv")


def dry_run(capsys, config: Path, logs: Path, *args: str) -> dict[str, list[str]]:
    """{stage: its sbatch command} in the order printed, from --dry-run's shell."""
    result = pipeline(capsys, "--config", str(config), "--logs", str(logs), "--dry-run", *args)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[:2] == [f"cd {PROJECT_ROOT}", f"mkdir -p {logs / 'slurm'}"]
    stages = {}
    for line in lines[2:]:
        name, command = LINE.fullmatch(line).groups()
        stages[name] = shlex.split(command)
    return stages


def flags(command: list[str], prefix: str) -> list[str]:
    """The values of the sbatch flags `prefix`=VALUE before the recipe."""
    recipe = next(i for i, arg in enumerate(command) if arg.startswith("cluster/"))
    return [arg.split("=", 1)[1] for arg in command[:recipe] if arg.startswith(prefix + "=")]


def dependencies(command: list[str]) -> list[str]:
    """The stage variables (dry run) or job ids the command waits for."""
    return [ref.lstrip("$") for value in flags(command, "--dependency") for ref in value.split(":")[1:]]


# --- the dry run --------------------------------------------------------------------------------


def test_dry_run_lists_every_stage_after_the_stages_it_needs(capsys, config, cross_data, tmp_path):
    logs = tmp_path / "logs"
    stages = dry_run(capsys, config, logs, "--cross-dataset", *cross_data, "--sbatch-arg=--partition=gpu",
                     "--sbatch-arg=--account=lab")
    assert list(stages) == STAGES + CROSS
    for position, (name, command) in enumerate(stages.items()):
        assert command[:2] == ["sbatch", "--parsable"]
        assert dependencies(command) == ([NEEDS[name]] if name in NEEDS else [])
        assert all(need in list(stages)[:position] for need in dependencies(command))  # submitted before
        assert flags(command, "--job-name") == [f"mri-gan-{name}"]
        pattern = "%x_%A_%a.out" if name in ARRAYS else "%x_%j.out"
        assert flags(command, "--output") == [str(logs / "slurm" / pattern)]
        assert flags(command, "--partition") == ["gpu"] and flags(command, "--account") == ["lab"]
        recipe = next(arg for arg in command if arg.startswith("cluster/"))
        script_args = command[command.index(recipe) + 1:]
        if name in TRAINING:  # the config goes in CONFIG, read when training starts
            assert recipe == "cluster/train.sbatch" and "--export" in script_args
        else:
            assert script_args[script_args.index("--config") + 1] == str(config)
    assert stages["classifier_plain"][-2:] == ["--set", "deep_fake.training.model_params.dataset=plain"]
    assert stages["classifier_mri"][-2:] == ["--set", "deep_fake.training.model_params.dataset=mri"]
    assert stages["mri_csvs"][-4:] == ["data_preprocess.py", "--gen_mri_dataset", "--config", str(config)]
    for name, method in (("cross_plain", "plain_frames"), ("cross_mri", "MRI")):
        args = stages[name]
        assert args[args.index("--method") + 1] == method and args[args.index("--device") + 1] == "cuda"
        assert args[args.index("--output_json") + 1] == str(logs / "pipeline_my_run" / f"{name}.json")


def test_resources_go_to_the_stages_that_use_them(capsys, config, cross_data, tmp_path):
    logs = tmp_path / "logs"
    stages = dry_run(capsys, config, logs, "--array", "5", "--nodes", "2", "--gpus-per-node", "4", "--cpus-per-task",
                     "32", "--preprocess-cpus", "6", "--device", "cpu", "--name", "paper", "--cross-dataset",
                     *cross_data)
    one_gpu = {"dfdc_mri", *CROSS}
    for name, command in stages.items():
        assert flags(command, "--array") == (["0-4"] if name in ARRAYS else [])
        gpus = [arg for arg in command if arg.startswith("--gpus")]
        if name in TRAINING:
            assert gpus == ["--gpus-per-node=4"] and flags(command, "--nodes") == ["2"]
            assert flags(command, "--cpus-per-task") == ["32"]
            assert flags(command, "--export") == [f"ALL,LOG_ROOT={logs / 'pipeline_paper' / name},CONFIG={config},"
                                                  "DEVICE=cpu"]
        else:
            assert gpus == (["--gpus-per-task=1"] if name in one_gpu else [])
            assert flags(command, "--ntasks") == (["1"] if name in one_gpu else [])
            assert flags(command, "--nodes") == [] and flags(command, "--cpus-per-task") == ["6"]
            assert flags(command, "--export") == (["ALL,DEVICE=cpu"] if name == "dfdc_mri" else [])


def test_from_submits_that_stage_and_the_later_ones_without_dependencies_on_the_earlier(capsys, config, tmp_path):
    stages = dry_run(capsys, config, tmp_path / "logs", "--from", "metadata")
    assert list(stages) == ["metadata", "classifier_plain", "classifier_mri"]
    assert dependencies(stages["metadata"]) == []
    assert dependencies(stages["classifier_plain"]) == dependencies(stages["classifier_mri"]) == ["metadata"]
    # training stages keep their folder, so a resubmitted one continues from its checkpoint
    assert flags(stages["classifier_mri"], "--export")[0].startswith(
        f"ALL,LOG_ROOT={tmp_path / 'logs' / 'pipeline_my_run' / 'classifier_mri'},")


def test_the_dry_run_is_shell_that_submits_each_stage_after_the_jobs_it_needs(capsys, config, cross_data, tmp_path):
    """The printed lines run as they are: with sbatch standing in as a shell function that numbers the jobs, each
    --dependency gets the job id of the stage it names."""
    result = pipeline(capsys, "--config", str(config), "--logs", str(tmp_path / "logs"), "--dry-run",
                      "--cross-dataset", *cross_data)
    calls = tmp_path / "calls"
    stand_in = f'n=100; sbatch() {{ n=$((n + 1)); echo "$n $*" >> {calls}; echo "$n"; }}\n'
    ran = subprocess.run(["bash", "-euo", "pipefail", "-c", stand_in + result.stdout], capture_output=True, text=True)
    assert ran.returncode == 0, ran.stderr
    assert (tmp_path / "logs" / "slurm").is_dir()
    jobs = {}
    for line in calls.read_text().splitlines():
        job_id, *command = shlex.split(line)
        name = flags(command, "--job-name")[0].removeprefix("mri-gan-")
        jobs[name] = job_id
        assert dependencies(command) == ([jobs[NEEDS[name]]] if name in NEEDS else [])
    assert list(jobs) == STAGES + CROSS


@pytest.mark.parametrize("args, message", [
    (["--from", "training"], "--from training: no such stage; the stages are aug_plan, apply_aug, landmarks, crops"),
    (["--from", "cross_mri"], "--from cross_mri: no such stage"),  # only with --cross-dataset
    (["--cross-dataset", "no/such/folder", "labels.csv"], "--cross-dataset: "),
    (["--name", "my run"], "pipeline name 'my run': use letters, digits"),
])
def test_bad_input_is_one_line_and_exit_code_2(capsys, config, tmp_path, args, message):
    result = pipeline(capsys, "--config", str(config), "--logs", str(tmp_path / "logs"), "--dry-run", *args)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and message in result.stderr, result.stderr


def test_a_missing_or_bad_config_file_is_one_line_and_exit_code_2(capsys, tmp_path):
    missing = pipeline(capsys, "--config", str(tmp_path / "nope.yml"), "--dry-run")
    assert missing.returncode == 2 and missing.stderr.count("\n") == 1 and "nope.yml" in missing.stderr
    bad = tmp_path / "bad.yml"
    bad.write_text("runtime:\n  no_such_key: 1\n")
    refused = pipeline(capsys, "--config", str(bad), "--dry-run")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "no_such_key" in refused.stderr


# --- submission, with sbatch missing or standing in -------------------------------------------


def fake_sbatch(monkeypatch, folder: Path, refuse: str = "") -> None:
    """Put first on PATH an sbatch that numbers the jobs from 101, logs each call, and refuses the stage `refuse` as
    SLURM does (a message on stderr, exit 1)."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"""#!/bin/bash
echo "$*" >> {folder / 'calls'}
if [[ " $* " == *" --job-name=mri-gan-{refuse or 'none'} "* ]]; then
    echo "sbatch: error: Batch job submission failed: Invalid account or account/partition combination" >&2
    exit 1
fi
echo "$((100 + $(wc -l < {folder / 'calls'})));cluster_a"  # --parsable on a federation: "<id>;<cluster>"
""")
    (bin_dir / "sbatch").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")


def test_submission_records_every_job_and_prints_how_to_cancel_and_resume(capsys, monkeypatch, config, tmp_path):
    logs = tmp_path / "logs"
    fake_sbatch(monkeypatch, tmp_path)
    result = pipeline(capsys, "--config", str(config), "--logs", str(logs), "--array", "3")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    ids = {name: str(101 + i) for i, name in enumerate(STAGES)}
    assert lines[:len(STAGES)] == [f"{name}: job {ids[name]}" for name in STAGES]
    assert f"scancel {' '.join(ids.values())}" in lines[len(STAGES) + 1]
    assert lines[-1].endswith(f"{SUBMIT} --config {config} --logs {logs} --array 3 --from STAGE")
    assert (logs / "slurm").is_dir()
    record = json.loads((logs / "pipeline_my_run" / "jobs.json").read_text())
    assert list(record["stages"]) == STAGES
    calls = (tmp_path / "calls").read_text().splitlines()
    for (name, entry), call in zip(record["stages"].items(), calls):
        assert entry["job_id"] == ids[name] and entry["sbatch"] == f"sbatch {call}"
        assert dependencies(shlex.split(call)) == ([ids[NEEDS[name]]] if name in NEEDS else [])


def test_a_refused_stage_is_one_line_naming_it_and_the_jobs_already_queued(capsys, monkeypatch, config, tmp_path):
    logs = tmp_path / "logs"
    fake_sbatch(monkeypatch, tmp_path, refuse="crops")
    result = pipeline(capsys, "--config", str(config), "--logs", str(logs))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert ("stage crops: sbatch refused the job: sbatch: error: Batch job submission failed: Invalid account or "
            "account/partition combination; the stages before it are queued: cancel them with scancel 101 102 103"
            ) in result.stderr
    assert list(json.loads((logs / "pipeline_my_run" / "jobs.json").read_text())["stages"]) == STAGES[:3]


def test_sbatch_not_found_is_one_line_naming_the_stage(capsys, monkeypatch, config, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    result = pipeline(capsys, "--config", str(config), "--logs", str(tmp_path / "logs"))
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "stage aug_plan: sbatch not found" in result.stderr


@pytest.mark.slow  # runs the wrapper script
def test_the_wrapper_runs_from_any_folder_and_passes_the_exit_code_on(config, tmp_path):
    """cluster/submit_pipeline.sh runs the module from the project root, wherever it is called from."""
    printed = submit("--config", str(config), "--dry-run", cwd=tmp_path)
    assert printed.returncode == 0 and printed.stdout.splitlines()[0] == f"cd {PROJECT_ROOT}", printed.stderr
    assert len(printed.stdout.splitlines()) == 2 + len(STAGES)
    refused = submit("--config", str(config), "--dry-run", "--from", "nowhere", cwd=tmp_path)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--from nowhere" in refused.stderr


# --- a real SLURM ---------------------------------------------------------------------------------


def job_records(job_id: str, env: dict) -> list[dict]:
    """scontrol's records of a job: one, or one per task of an array."""
    shown = subprocess.run(["scontrol", "show", "job", "-o", job_id], capture_output=True, text=True, env=env,
                           check=True).stdout
    return [dict(field.split("=", 1) for field in line.split() if "=" in field) for line in shown.splitlines()]


def wait_for(job_ids: list[str], env: dict, logs: Path, timeout: float) -> None:
    """Until none of the jobs is queued or running; fails at once when one can never start."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        queued = subprocess.run(["squeue", "-h", "-j", ",".join(job_ids), "-o", "%i %T %r"], capture_output=True,
                                text=True, env=env).stdout
        if not queued.strip():
            return
        if "DependencyNeverSatisfied" in queued:
            subprocess.run(["scancel", *job_ids], env=env)
            raise AssertionError(f"a stage failed:\n{queued}\n{job_logs(logs)}")
        time.sleep(5)
    subprocess.run(["scancel", *job_ids], env=env)
    raise AssertionError(f"the pipeline did not end within {timeout:.0f} s\n{job_logs(logs)}")


def job_logs(logs: Path) -> str:
    return "\n".join(f"--- {path.name}\n{path.read_text()[-3000:]}" for path in sorted((logs / "slurm").glob("*.out")))


@pytest.mark.slurm
def test_a_refused_submission_on_a_real_slurm_queues_nothing(slurm_cluster, config, tmp_path):
    result = submit("--config", str(config), "--logs", str(tmp_path / "logs"),
                    "--sbatch-arg=--partition=no_such_partition", env=slurm_cluster)
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "stage aug_plan: sbatch refused the job: sbatch: error: " in result.stderr
    assert "invalid partition" in result.stderr.lower() and "scancel" not in result.stderr
    assert not (tmp_path / "logs" / "pipeline_my_run" / "jobs.json").exists()


@pytest.mark.slurm
@pytest.mark.timeout(3600)
def test_the_whole_pipeline_runs_on_a_real_slurm_each_stage_after_the_stages_it_needs(slurm_cluster, tmp_path):
    """demo.py's quick data and models, every stage a SLURM job on the local node (2 array tasks, 1 count-only GPU,
    the networks on the CPU): every job ends COMPLETED, none starts before the jobs it needs have ended, and the
    exported generator, both classifiers' test metrics and the cross-dataset scores are there."""
    demo = Demo(tmp_path / "demo", "quick", device="cpu", workers=1)
    write_config(demo)
    logs, test_videos = tmp_path / "logs", demo.data / "dfdc" / "test" / "data"
    env = {**slurm_cluster, "PATH": f"{Path(sys.executable).parent}:{slurm_cluster['PATH']}", "OMP_NUM_THREADS": "1"}
    started = time.time()
    result = submit("--config", str(demo.config), "--logs", str(logs), "--name", "quick", "--array", "2",
                    "--gpus-per-node", "1", "--cpus-per-task", "1", "--preprocess-cpus", "1", "--device", "cpu",
                    "--sbatch-arg=--time=30", "--cross-dataset", str(test_videos), str(test_videos / "labels.csv"),
                    env=env)
    folder = logs / "pipeline_quick"
    record = json.loads((folder / "jobs.json").read_text())["stages"] if (folder / "jobs.json").is_file() else {}
    ids = {name: entry["job_id"] for name, entry in record.items()}
    if result.returncode != 0:
        subprocess.run(["scancel", *ids.values()], env=env)
        raise AssertionError(result.stderr)
    assert list(record) == STAGES + CROSS
    wait_for(list(ids.values()), env, logs, timeout=3000)
    wall = time.time() - started

    times = {}
    for name, job_id in ids.items():
        records = job_records(job_id, env)
        assert len(records) == (2 if name in ARRAYS else 1), records
        for task in records:
            assert (task["JobState"], task["ExitCode"]) == ("COMPLETED", "0:0"), f"{name}: {task}\n{job_logs(logs)}"
        times[name] = (min(datetime.fromisoformat(task["StartTime"]) for task in records),
                       max(datetime.fromisoformat(task["EndTime"]) for task in records))
    for name, entry in record.items():
        waits_for = dependencies(shlex.split(entry["sbatch"]))
        assert waits_for == ([ids[NEEDS[name]]] if name in NEEDS else [])
        if name in NEEDS:
            assert times[name][0] >= times[NEEDS[name]][1], f"{name} started before {NEEDS[name]} ended"
    print(f"\nwhole pipeline: {wall:.0f} s from submission to the last job's end")
    for name, (start, end) in times.items():
        print(f"{name:17s} {start:%H:%M:%S} - {end:%H:%M:%S}  {(end - start).seconds:4d} s")

    (gan_run,) = (folder / "mri_gan").glob("*/MRI_GAN")
    assert (demo.work / "assets" / "weights" / "MRI_GAN_weights.chkpt").read_bytes() == (gan_run / BEST_G).read_bytes()
    for dataset in ("plain", "mri"):
        (metrics,) = (folder / f"classifier_{dataset}").glob("*/deep_fake/test/metrics.json")
        assert json.loads(metrics.read_text())["video"]["n"] == 2 * demo.profile["videos"]["test"]
        cross = json.loads((folder / f"cross_{dataset}.json").read_text())
        assert cross and (folder / f"cross_{dataset}.csv").is_file()
