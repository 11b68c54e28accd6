"""File names and name maps shared by the scripts: checkpoints, exported weights, run folders, methods.

Defined once here; every module that writes or looks for one of these files imports the name.
"""
from __future__ import annotations

# The app's --method values, and the classifier data set (deep_fake.training.model_params.dataset) behind each.
METHODS = ("plain_frames", "MRI")
DATASET_OF_METHOD = {"plain_frames": "plain", "MRI": "mri"}
METHOD_OF_DATASET = {dataset: method for method, dataset in DATASET_OF_METHOD.items()}

# Weights the app reads from <assets>/weights/ (the original's file names, so its released files fit).
CLASSIFIER_FILES = {"plain_frames": "deepfake_plain_frames_weights.chkpt", "MRI": "deepfake_MRI_weights.chkpt"}
GENERATOR_FILE = "MRI_GAN_weights.chkpt"

# How a predicted MRI becomes an image: ours (de-normalised from [-1, 1]) or as the original saved them (tanh output
# times 255, clamped at 0), which the original's released MRI classifier was trained on
# (docs/differences.md#mri-prediction-eval-mode).
RENDERINGS = ("default", "original")

# Run folders: logs/<stamp>/<task>/
MRI_GAN_TASK, CLASSIFIER_TASK = "MRI_GAN", "deep_fake"

# Checkpoints inside a run folder.
PERIODIC = "checkpoint.chkpt"  # the resumable checkpoint, both trainers
BEST_G, BEST_D = "checkpoint_best_G.chkpt", "checkpoint_best_D.chkpt"  # MRI-GAN, chosen on its test split
HIGHEST_ACC, LOWEST_LOSS = "highest_acc.chkpt", "lowest_loss.chkpt"  # classifier, chosen on validation

# Keys inside checkpoints (the original's names, so its files load strictly).
GENERATOR_KEY, DISCRIMINATOR_KEY = "generator_state_dict", "discriminator_state_dict"
CLASSIFIER_KEY = "model_state_dict"
# The class name the original's training stored in each classifier checkpoint (`model_class_name`); ours is
# DeepFakeClassifier, and our exports keep it (docs/pipeline.md#mri-rendering).
ORIGINAL_CLASSIFIER_CLASS = "DeepFakeDetectModel"
