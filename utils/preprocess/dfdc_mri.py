"""--gen_dfdc_mri: the trained generator's MRI of every DFDC face crop, for the classifier's MRI method."""
from __future__ import annotations

import logging
from pathlib import Path

from utils.config import Config
from utils.errors import ConfigError
from utils.fileio import folder_complete, read_rgb
from utils.infer.export import app_classifier_file
from utils.infer.provenance import ORIGINAL, check_folder, generator_source, preprocess_rendering, record_folder
from utils.names import BEST_G
from utils.preprocess import jobs
from utils.preprocess.common import SPLITS, Options, write_folder
from utils.runtime import Precision

log = logging.getLogger(__name__)


def init_generator(weights: str, device: str, precision: Precision | None) -> None:
    from utils.infer.generator import load_generator

    device = jobs.assigned_device(device)
    jobs.worker_state().update(generator=load_generator(weights, device), device=device, precision=precision)


def dfdc_mri_job(item) -> jobs.Outcome:
    """The generator's MRI of every face crop of one video, same file names; the folder appears when complete."""
    from utils.infer.generator import predict_mris

    crop_dir, out_dir, batch_size, original_rendering = Path(item[0]), Path(item[1]), item[2], item[3]
    if folder_complete(out_dir):
        return jobs.Outcome(jobs.SKIPPED)
    names = sorted(p.name for p in crop_dir.glob("*.png"))
    state = jobs.worker_state()
    # Each batch holds its own crops (the original reused the first 8 crops of the video for every batch).
    crops = [read_rgb(crop_dir / name, "--crop_faces") for name in names]
    mris = predict_mris(state["generator"], crops, state["device"], jobs.batch_size(batch_size), original_rendering,
                        precision=state["precision"])
    write_folder(out_dir, dict(zip(names, mris)))
    return jobs.Outcome(jobs.DONE, count=len(names), problem="" if names else "no face crops")


def gen_dfdc_mri(cfg: Config, options: Options) -> list[jobs.Summary]:
    """Run the trained generator (MRI_GAN.weights) over the DFDC crop folders of every split, rendering the MRIs as
    options.mri_rendering says, else the original way if the app's MRI classifier is the original authors', else
    ours (docs/pipeline.md#mri-rendering)."""
    weights = cfg.asset("MRI_GAN.weights")
    if not weights.is_file():
        raise ConfigError(f"config key 'MRI_GAN.weights': {weights} not found; train the MRI-GAN and copy its "
                          f"{BEST_G} there (docs/pipeline.md#install-the-generator)")
    rendering = preprocess_rendering(options.mri_rendering, app_classifier_file(cfg, "MRI"))
    source = generator_source(weights, rendering)
    splits = []
    for split in SPLITS:
        crops = cfg.path(f"features.dfdc.crop_faces.{split}")
        if not crops.is_dir():
            log.warning("MRIs for DFDC %s skipped: %s not found (run --crop_faces first)", split, crops)
            continue
        splits.append((split, crops, cfg.path(f"features.dfdc.{split}_mrip2p_faces")))
    # Finished videos are skipped, so a folder only ever holds one generator's MRIs, rendered one way
    # (docs/pipeline.md#mri-provenance); every split is checked before any is written.
    for split, _, out in splits:
        check_folder(out, source, f"features.dfdc.{split}_mrip2p_faces")
    summaries = []
    for split, crops, out in splits:
        record_folder(out, source)
        folders = sorted(p for p in crops.iterdir() if p.is_dir() and not p.name.startswith("."))
        items = [(str(folder), str(out / folder.name), 8, rendering == ORIGINAL) for folder in folders]
        summaries.append(jobs.run_items(f"mri {split}", jobs.select_shard(items, options.shard), dfdc_mri_job,
                                        key=lambda it: it[0], workers=options.model_workers(), init=init_generator,
                                        init_args=(str(weights), options.device, options.precision),
                                        failures_csv=options.failures_csv(f"gen_dfdc_mri_{split}")))
    return summaries
