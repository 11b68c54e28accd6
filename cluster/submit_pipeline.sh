#!/bin/bash
# The whole pipeline in one command: every stage is a SLURM job that starts when the stages it needs have ended
# with exit code 0 (utils/cluster/pipeline.py; docs/clusters.md#pipeline). Paths are relative to the project root.
#
#   cluster/submit_pipeline.sh --config my.yml --dry-run        # print the sbatch lines, submit nothing
#   cluster/submit_pipeline.sh --config my.yml --sbatch-arg=--partition=gpu
#   cluster/submit_pipeline.sh --config my.yml --from dfdc_mri  # after a failed stage: it and the stages after it
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" -m utils.cluster.pipeline "$@"
