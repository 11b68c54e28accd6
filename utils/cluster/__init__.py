"""Running the pipeline on a cluster: the SLURM stages and their sbatch lines (cluster/submit_pipeline.sh)."""
