"""--crop_faces: the face crops listed in each video's (or image folder's) landmarks JSON."""
from __future__ import annotations

from pathlib import Path

from utils.config import Config
from utils.datasets import image_key
from utils.fileio import atomic_dir, folder_complete, png_complete, read_json_intermediate, read_rgb, write_png
from utils.media.faces import crop_face, crop_name, faces_from_entry
from utils.media.video import VideoReader
from utils.preprocess import jobs
from utils.preprocess.common import Options, image_sets, video_sets


def crop_job(item) -> jobs.Outcome:
    """Crop every face listed in a video's landmarks JSON; the crop folder appears only when complete."""
    video, json_path, crop_dir, step, margin = item
    crop_dir = Path(crop_dir)
    if folder_complete(crop_dir):
        return jobs.Outcome(jobs.SKIPPED)
    record = read_json_intermediate(json_path, "--extract_landmarks")
    written = 0
    with VideoReader(video) as reader, atomic_dir(crop_dir) as tmp:
        for index, frame in reader.frames(step):
            for face_index, face in enumerate(faces_from_entry(record.get(str(index)))):
                crop = crop_face(frame, face.box, margin)
                if crop is not None:
                    write_png(tmp / crop_name(index, face_index), crop)
                    written += 1
    return jobs.Outcome(jobs.DONE, count=written, problem="" if written else "no face crops (no face found)")


def image_crop_job(item) -> jobs.Outcome:
    """Crop the faces of one image into <crops_dir>/<stem>_<j>.png (crops_dir: the image's sub-folder under the
    crops folder); done when every listed crop exists."""
    image, entry, crops_dir, margin = item
    faces = faces_from_entry(entry)
    targets = [Path(crops_dir) / f"{Path(image).stem}_{j}.png" for j in range(len(faces))]
    if all(png_complete(t) for t in targets):
        return jobs.Outcome(jobs.SKIPPED)
    rgb = read_rgb(image)
    written = 0
    for face, target in zip(faces, targets):
        crop = crop_face(rgb, face.box, margin)
        if crop is not None and not png_complete(target):
            write_png(target, crop)
            written += 1
    return jobs.Outcome(jobs.DONE, count=written)


def crop_faces(cfg: Config, datasets: list[str], options: Options) -> list[jobs.Summary]:
    step, margin = cfg["faces.frame_step"], cfg["faces.crop_margin"]
    summaries = []
    for vset in video_sets(cfg, datasets):
        items = [(str(v), str(vset.landmarks_dir / f"{v.stem}.json"), str(vset.crops_dir / v.stem), step, margin)
                 for v in vset.videos]
        summaries.append(jobs.run_items(f"crops {vset.name}", jobs.select_shard(items, options.shard), crop_job,
                                        key=lambda it: it[0], workers=options.workers,
                                        failures_csv=options.failures_csv(f"crop_faces_{vset.name}")))
    for iset in image_sets(cfg, datasets):
        record = read_json_intermediate(iset.json_path, f"--extract_landmarks --datasets {iset.name}")
        # crops keep the image's sub-folder (FFHQ's 00000/00000.png -> <crops>/00000/00000_0.png): unique names
        keys = {p: image_key(iset.root, p) for p in iset.images}
        items = [(str(p), record[keys[p]], str(iset.crops_dir / Path(keys[p]).parent), margin)
                 for p in iset.images if keys[p] in record]
        summaries.append(jobs.run_items(f"crops {iset.name}", jobs.select_shard(items, options.shard),
                                        image_crop_job, key=lambda it: it[0], workers=options.workers,
                                        failures_csv=options.failures_csv(f"crop_faces_{iset.name}")))
    return summaries
