"""Pseudo-labels for real faces: the synthetically pretrained SfSNet run over CelebA (dissertation §2.2.2.4:
"the supervision for real images is from the pseudo labels, obtained by applying a pre-trained task network
on real images"; the official code never released this step, docs/ref-sharingan.md §3.4).

    python -m sharingan.pseudo_labels --checkpoint runs/.../networks_last.pt --input CELEBA_ROOT --out DIR

Writes, per CelebA image of the split, into `DIR/<split>/`: the 128x128 crop `<stem>_face.png` that the labels
belong to, `<stem>_normal.png` ([0,1]-encoded unit normals), `<stem>_albedo.png`, `<stem>_mask.png` and
`<stem>_light.txt` (27 tab-separated SH coefficients); then `DIR/celeba_<split>.csv` in SharinGAN's CSV format
(image, mask, normal, albedo, L0..L26; paths relative to DIR), which `sharingan.data.celeba.
pseudo_labelled_dataset` reads. Masks are all ones: CelebA has no face masks and SfSNet predicts none, so the
whole crop is supervised (our choice, documented in docs/chapter2-faces.md). `DIR/pseudo_labels.json` records
the checkpoint, split, crop and count.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn
from torch.utils.data import DataLoader
from tqdm import tqdm

from common.checkpoints import sha256_of_file, write_json
from sharingan.checkpoints import load_networks
from sharingan.data.celeba import CelebAImages
from sharingan.data.sfsnet_synthetic import FaceRecord, write_face_csv, write_light, write_png
from sharingan.models.sfsnet import decode_normals, encode_normals


@torch.no_grad()
def generate_pseudo_labels(task_network: nn.Module, dataset: CelebAImages, out_dir: str | Path, split: str,
                           batch_size: int = 32, device: str = "cpu", num_workers: int = 0,
                           provenance: dict | None = None) -> Path:
    """Label every image of `dataset` with `task_network` (SfSNet); returns the CSV path."""
    out_dir = Path(out_dir)
    folder = out_dir / split
    folder.mkdir(parents=True, exist_ok=True)
    task_network = task_network.to(device).eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    records = []
    for batch in tqdm(loader, desc=f"pseudo-labels ({split})", unit="batch"):
        images = batch["image"].to(device)
        prediction = task_network(images)
        normals = encode_normals(decode_normals(prediction["normal"])).clamp(0, 1)
        albedo = prediction["albedo"].clamp(0, 1)
        for index, name in enumerate(batch["name"]):
            stem = Path(name).stem
            paths = {kind: folder / f"{stem}_{kind}.png" for kind in ("face", "normal", "albedo", "mask")}
            write_png(paths["face"], images[index].permute(1, 2, 0).cpu().numpy())
            write_png(paths["normal"], normals[index].permute(1, 2, 0).cpu().numpy())
            write_png(paths["albedo"], albedo[index].permute(1, 2, 0).cpu().numpy())
            mask = batch["mask"][index, 0].numpy() if "mask" in batch else np.ones(images.shape[-2:], np.float32)
            write_png(paths["mask"], mask)
            lighting = prediction["lighting"][index].cpu().double().numpy()
            write_light(folder / f"{stem}_light.txt", lighting)
            records.append(FaceRecord(stem, paths["face"], paths["mask"], paths["normal"], paths["albedo"],
                                      tuple(float(v) for v in lighting)))
    csv_path = write_face_csv(out_dir / f"celeba_{split}.csv", records, root=out_dir)
    write_json(out_dir / "pseudo_labels.json", {
        "split": split, "count": len(records), "csv": csv_path.name, "image_size": dataset.image_size,
        "crop_size": dataset.crop_size, "crop_center": dataset.crop_center,
        "mask": dataset.mask, "mask_construction": "ellipse from the five CelebA landmarks "
        "(sharingan.data.celeba.landmark_face_mask)" if dataset.mask == "landmarks" else "all ones",
        **(provenance or {}),
    })
    return csv_path


def face_image_size(cfg: DictConfig) -> int:
    """The face image side S of a config's `data.size` ([S, S]); `sharingan.tasks.normals.image_size`."""
    size = [int(v) for v in cfg.data.size]
    if len(size) != 2 or size[0] != size[1]:
        raise ValueError(f"config key data.size must be square [S, S] for faces, got {size}")
    return size[0]


def label_from_checkpoint(checkpoint: str | Path, celeba_root: str | Path, out_dir: str | Path,
                          split: str = "train", image_size: int | None = None, crop_size: int = 178,
                          crop_center: Sequence[float] | None = None, batch_size: int = 32,
                          device: str = "cpu", limit: int | None = None, num_workers: int = 0,
                          mask: str = "landmarks") -> Path:
    """Load the SfSNet of a face networks checkpoint (task 'normals') and label a CelebA split; `mask`:
    'landmarks' (face ellipse from CelebA's landmark file) or 'none' (all ones)."""
    networks, cfg, payload = load_networks(checkpoint, task="normals")
    size = int(image_size if image_size is not None else face_image_size(cfg))
    dataset = CelebAImages(celeba_root, split, image_size=size, crop_size=crop_size, crop_center=crop_center,
                           limit=limit, mask=mask)
    provenance = {"checkpoint": str(checkpoint), "checkpoint_sha256": sha256_of_file(checkpoint),
                  "checkpoint_stage": payload.get("stage"), "celeba_root": str(celeba_root), "limit": limit}
    return generate_pseudo_labels(networks["task_network"], dataset, out_dir, split, batch_size, device,
                                  num_workers, provenance)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(prog="python -m sharingan.pseudo_labels", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="face networks checkpoint (SfSNet pretrained)")
    parser.add_argument("--input", required=True, help="CelebA root (img_align_celeba/, list_eval_partition.txt)")
    parser.add_argument("--out", required=True, help="output folder for the labels and the CSV")
    parser.add_argument("--split", default="train", choices=["train", "val", "test", "all"])
    parser.add_argument("--image-size", type=int, default=None, help="default: the checkpoint's data.size")
    parser.add_argument("--crop-size", type=int, default=178)
    parser.add_argument("--crop-center", type=float, nargs=2, default=None, metavar=("X", "Y"))
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--limit", type=int, default=None, help="label only the first N images")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--num-workers", type=int, default=0)
    parser.add_argument("--mask", default="landmarks", choices=["landmarks", "none"],
                        help="face mask of the labels: ellipse from list_landmarks_align_celeba.txt, or all ones")
    args = parser.parse_args(argv)
    csv_path = label_from_checkpoint(args.checkpoint, args.input, args.out, args.split, args.image_size,
                                     args.crop_size, args.crop_center, args.batch_size, args.device, args.limit,
                                     args.num_workers, args.mask)
    print(f"pseudo-labels written: {csv_path}")
    return csv_path


if __name__ == "__main__":
    main()
