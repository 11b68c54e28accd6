"""The data_preprocess.py steps in the order they run, each with its help text and the function behind it."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from utils.config import Config
from utils.preprocess import augmentation, crops, dfdc_mri, landmarks, metadata, mri_dataset
from utils.preprocess.common import Options
from utils.preprocess.jobs import Summary


@dataclass(frozen=True)
class Step:
    flag: str
    help: str
    run: Callable[[Config, list[str], Options, str | None], list[Summary]]  # cfg, datasets, options, sample video


STEPS = (
    Step("apply_aug_to_sample", "write every augmentation and distraction of one sample video (--sample_video)",
         lambda cfg, datasets, options, sample: [augmentation.apply_aug_to_sample(cfg, sample)]),
    Step("gen_aug_plan", "draw the seeded augmentation/distraction plan of the DFDC training videos (JSON)",
         lambda cfg, datasets, options, sample: [augmentation.gen_aug_plan(cfg)]),
    Step("apply_aug_to_all", "write augmented copies of the DFDC training videos as the plan says",
         lambda cfg, datasets, options, sample: [augmentation.apply_aug_to_all(cfg, options)]),
    Step("extract_landmarks", "detect faces and landmarks on every k-th frame; one JSON per video",
         lambda cfg, datasets, options, sample: landmarks.extract_landmarks(cfg, datasets, options)),
    Step("crop_faces", "crop every face of every k-th frame (10%% margin) into <crop root>/<video>/<frame>_<face>.png",
         lambda cfg, datasets, options, sample: crops.crop_faces(cfg, datasets, options)),
    Step("gen_mri_dataset", "SSIM MRI targets of aligned real/fake pairs and the MRI-GAN split CSVs",
         lambda cfg, datasets, options, sample: mri_dataset.gen_mri_dataset(cfg, datasets, options)),
    Step("gen_dfdc_mri", "predict MRIs of the DFDC face crops with the trained generator",
         lambda cfg, datasets, options, sample: dfdc_mri.gen_dfdc_mri(cfg, options)),
    Step("gen_deepfake_metadata", "frame label CSVs for the classifier (plain crops and MRIs)",
         lambda cfg, datasets, options, sample: metadata.gen_deepfake_metadata(cfg, options)),
)
