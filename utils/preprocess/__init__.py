"""Preprocessing: one module per data_preprocess.py step, and the job runner (workers, shards, resume).
Never imports training code."""
