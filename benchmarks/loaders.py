"""Data loader throughput: images per second per worker for KITTI, vKITTI and PhraseCut.

Each dataset is first written to a temporary folder in its real on-disk format by the project's own fixture
writers (`sharingan.data.kitti.write_kitti_fixture`, `sharingan.data.vkitti.write_vkitti_fixture`,
`ldznet.data.phrasecut.write_phrasecut_split`) at the real image sizes (KITTI raw 375x1242 stereo PNGs,
vKITTI 1.3.1 375x1242 RGB + 16-bit depth PNGs, Visual Genome-sized JPEGs with polygon phrases); the RGB
content is replaced by smooth synthetic scenes so that PNG/JPEG decoding costs what natural images cost
(noise would not compress). Then the project's datasets are read in their training configuration
(augmentation on, resizing to 192x640 / 384x384) through a torch DataLoader, one untimed pass to start the
workers and warm the page cache, one timed pass.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from torch.utils.data import DataLoader, Dataset

from benchmarks.timing import Context, progress
from ldznet.data.phrasecut import PhraseCutDataset, write_phrasecut_split
from sharingan.data.images import write_rgb
from sharingan.data.kitti import KittiStereoDataset, write_kitti_fixture
from sharingan.data.vkitti import VirtualKittiDataset, write_vkitti_fixture


def plan(context: Context) -> dict:
    if context.quick:
        return {"samples": 4, "kitti_size": [64, 208], "phrasecut_size": [96, 128], "workers": [0],
                "reductions": ["quick: 4 small samples per dataset, main-process loading only"]}
    workers = [0, 4] if context.full else [0, 2]
    return {"samples": 24, "kitti_size": [375, 1242], "phrasecut_size": [375, 500], "workers": workers,
            "reductions": [] if context.full else ["cpu: 24 samples per dataset, 0 and 2 workers (2 CPU cores)"]}


def natural_image(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth street-like scene (sky/road gradients, a few boxes, mild noise) as HxWx3 uint8."""
    rows = np.linspace(0.0, 1.0, height)[:, None, None]
    cols = np.linspace(0.0, 1.0, width)[None, :, None]
    sky, road = rng.uniform(120, 230, 3), rng.uniform(40, 120, 3)
    image = np.where(rows < 0.45, sky * (1 - 0.4 * rows), road * (0.6 + 0.4 * rows)) + 20 * np.sin(6 * cols)
    for _ in range(6):
        top, left = int(rng.integers(0, height * 3 // 4)), int(rng.integers(0, width * 3 // 4))
        image[top:top + height // 5, left:left + width // 8] = rng.uniform(0, 255, 3)
    image = image + rng.normal(0.0, 3.0, image.shape)
    return np.clip(image, 0, 255).astype(np.uint8)


def write_kitti(root: Path, samples: int, size: list[int]):
    entries = write_kitti_fixture(root, frames=samples, image_size=tuple(size), points_per_frame=500)
    rng = np.random.default_rng(0)
    for entry in entries:
        for relative in (entry.left, entry.right):
            write_rgb(root / relative, natural_image(size[0], size[1], rng))
    return KittiStereoDataset(root, entries, size=(192, 640), augment=True), 2


def write_vkitti(root: Path, samples: int, size: list[int]):
    entries = write_vkitti_fixture(root, variations=("clone",), frames=samples, size=tuple(size))
    rng = np.random.default_rng(1)
    for entry in entries:
        write_rgb(root / entry, natural_image(size[0], size[1], rng))
    return VirtualKittiDataset(root, entries, size=(192, 640), augment=True), 1


def write_phrasecut(root: Path, samples: int, size: list[int]):
    rng = np.random.default_rng(2)
    height, width = size
    items = []
    for index in range(samples):
        x0, y0 = int(rng.integers(0, width // 2)), int(rng.integers(0, height // 2))
        polygon = [[x0, y0], [x0 + width // 3, y0], [x0 + width // 4, y0 + height // 3], [x0, y0 + height // 4]]
        items.append({"image_id": 1000 + index, "image": natural_image(height, width, rng),
                      "phrases": [{"phrase": "red car", "instances": [[polygon]]}]})
    write_phrasecut_split(root, "train", items)
    return PhraseCutDataset(root, "train", image_size=384, crop=True, prompt_mode="random"), 1


DATASETS: dict[str, tuple[str, Callable, str]] = {
    "KITTI raw stereo": ("kitti", write_kitti, "sharingan.data.kitti.KittiStereoDataset (train: flip, rotate, "
                                               "colour jitter; resize to 192x640)"),
    "Virtual KITTI 1.3.1": ("vkitti", write_vkitti, "sharingan.data.vkitti.VirtualKittiDataset (train: flip, "
                                                    "rotate; RGB + 16-bit depth; resize to 192x640)"),
    "PhraseCut": ("phrasecut", write_phrasecut, "ldznet.data.phrasecut.PhraseCutDataset (train: square crop, "
                                                "random prompt template; polygons -> mask; 384x384)"),
}


def throughput(dataset: Dataset, workers: int, batch_size: int) -> float:
    """Samples per second over one full timed pass (after one untimed pass)."""
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=workers,
                        persistent_workers=workers > 0, drop_last=False)
    for _ in loader:
        pass
    start = time.perf_counter()
    count = 0
    for batch in loader:
        count += len(batch["image"])
    elapsed = time.perf_counter() - start
    del loader
    return count / elapsed


def run(context: Context) -> dict:
    settings = plan(context)
    rows, notes = [], []
    with tempfile.TemporaryDirectory(prefix="bench-loaders-") as folder:
        for label, (key, writer, reader) in DATASETS.items():
            size = settings["phrasecut_size"] if key == "phrasecut" else settings["kitti_size"]
            try:
                dataset, images_per_sample = writer(Path(folder) / key, settings["samples"], size)
            except ModuleNotFoundError as error:
                rows.append({"dataset": label, "status": f"not measured: {error.name} missing"})
                continue
            for workers in settings["workers"]:
                samples_per_s = throughput(dataset, workers, batch_size=2)
                per_worker = samples_per_s / max(workers, 1)
                progress(f"{label}, {workers} workers: {samples_per_s * images_per_sample:.1f} images/s")
                rows.append({"dataset": label, "on_disk": f"{size[0]}x{size[1]}", "workers": workers,
                             "samples_per_s": samples_per_s, "images_per_s": samples_per_s * images_per_sample,
                             "images_per_s_per_worker": per_worker * images_per_sample,
                             "samples": len(dataset), "status": "ok"})
            notes.append(f"{label}: {reader}")
    notes.append("workers = 0 means loading in the main process (counted as one worker). A KITTI sample is a "
                 "stereo pair: 2 images.")
    return {
        "name": "loaders",
        "title": "Data loaders: throughput on generated data in the real formats",
        "settings": {k: v for k, v in settings.items() if k != "reductions"},
        "reductions": settings["reductions"],
        "tables": [{"title": "Images per second (batch 2, one timed pass)",
                    "columns": ["dataset", "on_disk", "workers", "samples_per_s", "images_per_s",
                                "images_per_s_per_worker", "samples", "status"], "rows": rows}],
        "notes": notes,
    }
