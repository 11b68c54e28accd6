"""--extract_landmarks: faces and five-point landmarks of every k-th frame of each video (one JSON per video),
and of every image of the FDF/FFHQ folders (one JSON per data set, built from chunks)."""
from __future__ import annotations

from pathlib import Path

from utils.config import Config
from utils.datasets import image_key
from utils.fileio import read_rgb, write_json
from utils.media.faces import landmarks_entry
from utils.preprocess import jobs
from utils.preprocess.common import (
    IMAGE_CHUNK,
    Options,
    detector,
    detector_settings,
    image_sets,
    init_detector,
    read_json,
    video_sets,
)


def landmarks_job(item) -> jobs.Outcome:
    """Detect faces on every k-th frame of one video; write <landmarks_dir>/<video_id>.json."""
    video, json_path, step = item
    json_path = Path(json_path)
    if json_path.exists() and isinstance(read_json(json_path), dict):
        return jobs.Outcome(jobs.SKIPPED)
    record = {str(index): landmarks_entry(faces) for index, _, faces in detector().detect_video(video, step)}
    write_json(json_path, record, indent=None)
    found = sum(entry[0] is not None for entry in record.values())
    return jobs.Outcome(jobs.DONE, count=1, problem="" if found else "no face in any sampled frame")


def image_landmarks_job(item) -> jobs.Outcome:
    """Detect faces on a chunk of (image, name in the JSON) pairs; write one partial JSON for the chunk."""
    images, chunk_path = item
    chunk_path = Path(chunk_path)
    if chunk_path.exists() and isinstance(read_json(chunk_path), dict):
        return jobs.Outcome(jobs.SKIPPED)
    record, problems = {}, []
    for path, name in images:
        try:
            faces = detector().detect([read_rgb(path)])[0]
        except OSError as exc:
            problems.append(str(exc))
            continue
        record[name] = landmarks_entry(faces)
    write_json(chunk_path, record, indent=None)
    return jobs.Outcome(jobs.DONE, count=len(record), problem="; ".join(problems))


def extract_landmarks(cfg: Config, datasets: list[str], options: Options) -> list[jobs.Summary]:
    step = cfg["faces.frame_step"]
    init = (init_detector, (detector_settings(cfg, options.device),))
    summaries = []
    for vset in video_sets(cfg, datasets):
        items = [(str(v), str(vset.landmarks_dir / f"{v.stem}.json"), step) for v in vset.videos]
        summaries.append(jobs.run_items(f"landmarks {vset.name}", jobs.select_shard(items, options.shard),
                                        landmarks_job, key=lambda it: it[0], workers=options.model_workers(),
                                        init=init[0], init_args=init[1],
                                        failures_csv=options.failures_csv(f"extract_landmarks_{vset.name}")))
    for iset in image_sets(cfg, datasets):
        chunks_dir = iset.json_path.with_name(f".{iset.json_path.stem}.chunks")
        items = [(tuple((str(p), image_key(iset.root, p)) for p in iset.images[i:i + IMAGE_CHUNK]),
                  str(chunks_dir / f"{i // IMAGE_CHUNK:06d}.json"))
                 for i in range(0, len(iset.images), IMAGE_CHUNK)]
        summary = jobs.run_items(f"landmarks {iset.name}", jobs.select_shard(items, options.shard),
                                 image_landmarks_job, key=lambda it: it[1], workers=options.model_workers(),
                                 init=init[0], init_args=init[1],
                                 failures_csv=options.failures_csv(f"extract_landmarks_{iset.name}"))
        _merge_chunks(items, iset.json_path)
        summaries.append(summary)
    return summaries


def _merge_chunks(items, json_path: Path) -> None:
    """Write the data set's single JSON once every chunk exists (the last shard to finish does it)."""
    merged = {}
    for _, chunk in items:
        part = read_json(Path(chunk))
        if not isinstance(part, dict):
            return
        merged.update(part)
    write_json(json_path, merged, indent=None)
