"""Figures of the miniature's report, drawn from the checkpoints the chapter stages trained.

- Fig 2.4 style: a real and a synthetic image, G(x) and |x - G(x)| (SharinGAN depth generator);
- depth: real test image, its Velodyne ground truth, the all-synthetic and the SharinGAN prediction;
- normals (Fig 2.6 / 2.7 style): Photoface test face, ground truth, SfSNet and SharinGAN normals, G(x);
- masks (Fig 3.7 style): PhraseCut and AIGI test images, ground truth, RGBNet / ZNet / LD-ZNet probabilities;
- Fig 3.1 style: the tiny LDM's coarse mask ||eps(z_t, c) - eps(z_t, "")|| at t = 400;
- the worlds themselves (synthetic vs real renders and labels).
Each figure is made independently; one that cannot be made says why instead (the report prints it).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch

from common.images import read_rgb
from common.viz import colorize_depth, image_grid, normals_to_rgb, overlay_mask, save_png

# Chapter code (sharingan.*, ldznet.*) is imported inside each figure function: a figure whose chapter module is
# missing or broken is reported "not made" alone (make_all) while the others are drawn; it also keeps this module
# cheap to import (sharingan.checkpoints ~2.4 s, ldznet.checkpoints ~3.0 s on top of it, measured).


def _rgb01(tensor: torch.Tensor) -> np.ndarray:
    """(3, H, W) in [-1, 1] -> HxWx3 uint8."""
    array = ((tensor.detach().float().clamp(-1, 1) + 1) / 2).permute(1, 2, 0).numpy()
    return (array * 255 + 0.5).astype(np.uint8)


def _fit(image: np.ndarray, height: int, width: int) -> np.ndarray:
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    return cv2.resize(image, (width, height), interpolation=cv2.INTER_NEAREST)


def _grid(rows: list[list[np.ndarray]], height: int, width: int) -> np.ndarray:
    tiles = [_fit(tile, height, width) for row in rows for tile in row]
    return image_grid(tiles, nrow=len(rows[0]))


def _first_seed(result: dict) -> dict:
    seeds = result.get("seeds", {})
    return seeds[sorted(seeds)[0]] if seeds else {}


# ------------------------------------------------------------------------------------------------ chapter 2

def depth_figures(result: dict, world: Path, out: Path, samples: int = 3) -> list[tuple[str, Path]]:
    from sharingan.checkpoints import load_networks
    from sharingan.data.images import resize, to_network
    from sharingan.data.kitti import generate_depth_map, read_kitti_list
    from sharingan.data.vkitti import read_vkitti_list
    from sharingan.tasks.depth import predict_depth

    seed = _first_seed(result)
    checkpoints = seed["checkpoints"]
    sharingan, cfg, _ = load_networks(checkpoints["SharinGAN (proposed)"], "depth")
    baseline, _, _ = load_networks(checkpoints["All synthetic (baseline)"], "depth")
    size = tuple(int(v) for v in cfg.data.size)
    kitti_root = world / "kitti"
    tests = read_kitti_list(kitti_root / "test.txt")
    picks = [tests[i] for i in np.linspace(0, len(tests) - 1, samples).astype(int)]
    synthetic = read_vkitti_list(world / "vkitti" / "trainA.txt")
    synthetic = [synthetic[i] for i in np.linspace(0, len(synthetic) - 1, samples).astype(int)]
    fig24, depth_rows = [], []
    with torch.no_grad():
        for entry, syn_entry in zip(picks, synthetic):
            real = read_rgb(kitti_root / entry.left)
            syn = read_rgb(world / "vkitti" / syn_entry)
            x_r, x_s = to_network(resize(real, size))[None], to_network(resize(syn, size))[None]
            g_r, g_s = sharingan["generator"](x_r), sharingan["generator"](x_s)
            diff_r = ((g_r - x_r).abs().mean(1, keepdim=True) / 2).clamp(0, 1)[0, 0].numpy()
            diff_s = ((g_s - x_s).abs().mean(1, keepdim=True) / 2).clamp(0, 1)[0, 0].numpy()
            scale = max(diff_r.max(), diff_s.max(), 1e-6)
            fig24.append([_rgb01(x_r[0]), _rgb01(g_r[0]), (diff_r / scale * 255).astype(np.uint8),
                          _rgb01(x_s[0]), _rgb01(g_s[0]), (diff_s / scale * 255).astype(np.uint8)])
            gt = generate_depth_map(kitti_root / entry.calib_dir, kitti_root / entry.velodyne)
            gt = cv2.dilate(gt.astype(np.float32), np.ones((3, 3), np.uint8))
            ours = predict_depth(sharingan["generator"], sharingan["task_network"], x_r)[0, 0].numpy()
            base = predict_depth(None, baseline["task_network"], x_r)[0, 0].numpy()
            depth_rows.append([_rgb01(x_r[0]), colorize_depth(gt, vmax=80.0), colorize_depth(base, vmax=80.0),
                               colorize_depth(ours, vmax=80.0)])
    h, w = size
    paths = []
    save_png(out / "fig2_4_shared_domain.png", _grid(fig24, h, w))
    paths.append(("Fig 2.4 style, left to right: x_r, G(x_r), |x_r - G(x_r)|, x_s, G(x_s), |x_s - G(x_s)| "
                  "(differences scaled by the largest one in the figure)", out / "fig2_4_shared_domain.png"))
    save_png(out / "fig2_3_depth.png", _grid(depth_rows, h, w))
    paths.append(("Depth on the real test drive: image, Velodyne ground truth (dilated), all-synthetic "
                  "baseline, SharinGAN (0-80 m, same colour scale)", out / "fig2_3_depth.png"))
    return paths


def _normal_image(encoded: torch.Tensor, mask: np.ndarray) -> np.ndarray:
    """(1, 3, H, W) [0, 1]-encoded normals -> HxWx3 uint8 (re-normalised, masked)."""
    n = encoded[0].permute(1, 2, 0).numpy() * 2 - 1
    rgb = normals_to_rgb(n / np.maximum(np.linalg.norm(n, axis=-1, keepdims=True), 1e-6))
    return rgb * mask[..., None]


def _image01(tensor: torch.Tensor) -> np.ndarray:
    return (tensor[0].clamp(0, 1).permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)


def face_figures(result: dict, world: Path, out: Path, samples: int = 4) -> list[tuple[str, Path]]:
    from sharingan.checkpoints import load_networks
    from sharingan.data.photoface import PhotofaceDataset
    from sharingan.tasks.normals import shared_and_predict

    seed = _first_seed(result)
    checkpoints = seed["checkpoints"]
    names = [name for name in checkpoints if checkpoints[name]]
    ours_name = next(n for n in names if n.startswith("SharinGAN"))
    base_name = next(n for n in names if not n.startswith("SharinGAN"))
    ours, cfg, _ = load_networks(checkpoints[ours_name], "normals")
    base, _, _ = load_networks(checkpoints[base_name], "normals")
    size = int(cfg.data.size[0])
    dataset = PhotofaceDataset(world / "photoface", split="test", image_size=size)
    rows = []
    with torch.no_grad():
        for index in np.linspace(0, len(dataset) - 1, samples).astype(int):
            sample = dataset[int(index)]
            image = sample["image"][None]
            mask = sample["mask"][0].numpy() > 0.5
            shared, predicted = shared_and_predict(ours["generator"], ours["task_network"], image)
            _, predicted_base = shared_and_predict(base["generator"], base["task_network"], image)

            rows.append([_image01(image), _normal_image(sample["normal"][None], mask),
                         _normal_image(predicted_base["normal"], mask), _normal_image(predicted["normal"], mask),
                         _image01(shared)])
    save_png(out / "fig2_6_normals.png", _grid(rows, size, size))
    return [(f"Photoface test faces: image, ground-truth normals, {base_name}, {ours_name}, and G(x) of "
             "SharinGAN (normals as RGB = (n + 1) / 2, masked)", out / "fig2_6_normals.png")]


# ------------------------------------------------------------------------------------------------ chapter 3

def mask_figures(result: dict, world: Path, out: Path, samples: int = 4) -> list[tuple[str, Path]]:
    from ldznet.checkpoints import load_segmenter
    from ldznet.data.aigi import AIGIDataset
    from ldznet.data.phrasecut import PhraseCutDataset

    seed = _first_seed(result)
    runs = seed["runs"]
    order = [v for v in ("rgbnet", "znet", "ldznet", "ldznet_concat") if v in runs]
    models = {v: load_segmenter(runs[v]["segmenter"], variant=v) for v in order}
    size = int(seed["results"]["phrasecut"]["protocol"]["image_size"])
    paths = []
    for name, dataset in (("phrasecut", PhraseCutDataset(world / "phrasecut", "test", image_size=size)),
                          ("aigi", AIGIDataset(world / "aigi", image_size=size))):
        rows, prompts = [], []
        with torch.no_grad():
            for index in np.linspace(0, len(dataset) - 1, samples).astype(int):
                sample = dataset[int(index)]
                image = _rgb01(sample["image"])
                row = [image, overlay_mask(image, sample["mask"][0].numpy() > 0.5)]
                for variant in order:
                    logits = models[variant](sample["image"][None], [sample["prompt"]])
                    row.append((torch.sigmoid(logits)[0, 0].numpy() * 255).astype(np.uint8))
                rows.append(row)
                prompts.append(sample["prompt"])
        path = out / f"fig3_7_masks_{name}.png"
        save_png(path, _grid(rows, size, size))
        paths.append((f"{name} test: image, ground truth, then the foreground probability of "
                      f"{', '.join(order)}; prompts top to bottom: " + "; ".join(f'"{p}"' for p in prompts), path))
    return paths


def coarse_mask_figure(ldm_folder: Path, world: Path, out: Path, samples: int = 4) -> list[tuple[str, Path]]:
    from ldznet.analysis.coarse_masks import coarse_mask
    from ldznet.data.phrasecut import PhraseCutDataset
    from ldznet.stable_diffusion import load_stable_diffusion

    components = load_stable_diffusion(ldm_folder, hash_files=False)
    size = int(components.vae.config.sample_size)
    dataset = PhraseCutDataset(world / "phrasecut", "test", image_size=size)
    rows, prompts = [], []
    with torch.no_grad():
        for index in np.linspace(0, len(dataset) - 1, samples).astype(int):
            sample = dataset[int(index)]
            heat = coarse_mask(components, sample["image"][None], [sample["prompt"]], timestep=400)[0].numpy()
            heat = cv2.resize(heat / max(heat.max(), 1e-6), (size, size), interpolation=cv2.INTER_LINEAR)
            image = _rgb01(sample["image"])
            rows.append([image, overlay_mask(image, sample["mask"][0].numpy() > 0.5), (heat * 255).astype(np.uint8)])
            prompts.append(sample["prompt"])
    save_png(out / "fig3_1_coarse_masks.png", _grid(rows, size, size))
    return [("Fig 3.1 style, the tiny LDM's coarse mask at t = 400: image, ground truth, ||eps(z_t, t, c) - "
             "eps(z_t, t, \"\")|| (normalised); prompts: " + "; ".join(f'"{p}"' for p in prompts),
             out / "fig3_1_coarse_masks.png")]


# ------------------------------------------------------------------------------------------------ worlds

def world_figures(root: Path, out: Path) -> list[tuple[str, Path]]:
    """Samples of each world as written on disk (read back through the chapter loaders' readers)."""
    from sharingan.data.vkitti import depth_path_for, read_depth_png_cm, read_vkitti_list

    paths = []
    street = root / "world_street"
    if (street / "vkitti" / "trainA.txt").is_file():
        entries = read_vkitti_list(street / "vkitti" / "trainA.txt")
        syn = read_rgb(street / "vkitti" / entries[len(entries) // 3])
        depth = read_depth_png_cm(street / "vkitti" / depth_path_for(entries[len(entries) // 3])) / 100.0
        reals = sorted((street / "kitti").rglob("image_02/data/*.png"))
        real = read_rgb(reals[len(reals) // 2])
        right = read_rgb(Path(str(reals[len(reals) // 2]).replace("image_02", "image_03")))
        make3d = sorted((street / "make3d" / "Test134").glob("*.jpg"))
        h, w = syn.shape[:2]
        tiles = [syn, colorize_depth(np.minimum(depth, 80.0), vmax=80.0), real, right]
        if make3d:
            m3 = read_rgb(make3d[0])
            tiles.append(cv2.resize(m3, (int(m3.shape[1] * h / m3.shape[0]), h)))
            tiles[-1] = np.pad(tiles[-1], ((0, 0), (0, w - tiles[-1].shape[1]), (0, 0)))
        save_png(out / "world_street.png", image_grid(tiles, nrow=len(tiles)))
        paths.append(("Depth world: vKITTI-layout synthetic render, its exact depth, the KITTI-layout real "
                      "stereo pair (image_02 / image_03), a Make3D-style image", out / "world_street.png"))
    faces = root / "world_faces"
    if (faces / "sfsnet").is_dir():
        face = sorted((faces / "sfsnet").rglob("*_face_*.png"))[0]
        normal = Path(str(face).replace("_face_", "_normal_"))
        albedo = Path(str(face).replace("_face_", "_albedo_"))
        celeba = sorted((faces / "celeba" / "img_align_celeba").glob("*.jpg"))[0]
        photo = sorted((faces / "photoface").rglob("im0_align.png"))[0]
        tiles = [read_rgb(face), read_rgb(normal), read_rgb(albedo)]
        size = tiles[0].shape[0]
        c = read_rgb(celeba)
        tiles += [cv2.resize(c[(c.shape[0] - c.shape[1]) // 2:][: c.shape[1]], (size, size)),
                  cv2.resize(read_rgb(photo), (size, size))]
        save_png(out / "world_faces.png", image_grid(tiles, nrow=len(tiles)))
        paths.append(("Face world: SfSNet-layout synthetic face, its normals and albedo; a CelebA-layout and a "
                      "Photoface-layout real face", out / "world_faces.png"))
    shapes = root / "world_shapes"
    if (shapes / "phrasecut" / "images").is_dir():
        photo = sorted((shapes / "phrasecut" / "images").glob("*.jpg"))[:3]
        art = sorted((shapes / "aigi" / "images").glob("*"))[:3]
        tiles = [read_rgb(p) for p in photo + art]
        save_png(out / "world_shapes.png", image_grid(tiles, nrow=len(tiles)))
        paths.append(("Segmentation world: PhraseCut-layout photo-style scenes, AIGI-layout illustrations",
                      out / "world_shapes.png"))
    return paths


def make_all(root: Path, status: dict, out: Path) -> list[tuple[str, Path | None, str | None]]:
    """Every figure that the finished stages allow; (caption, path, None) or (what, None, why not)."""
    out.mkdir(parents=True, exist_ok=True)
    done = {name: entry.get("result", {}) for name, entry in status.items() if entry["status"] in ("done", "cached")}
    jobs: list[tuple[str, list[str], Callable[[], list]]] = [
        ("worlds", [], lambda: world_figures(root, out)),
        ("Fig 2.4 / depth", ["depth"], lambda: depth_figures(done["depth"], root / "world_street", out)),
        ("Fig 2.6 / normals", ["faces"], lambda: face_figures(done["faces"], root / "world_faces", out)),
        ("Fig 3.7 / masks", ["ldznet"], lambda: mask_figures(done["ldznet"], root / "world_shapes", out)),
        ("Fig 3.1 / coarse masks", ["tiny_ldm", "world_shapes"],
         lambda: coarse_mask_figure(root / "tiny_ldm" / "stable_diffusion", root / "world_shapes", out)),
    ]
    figures = []
    for name, needs, job in jobs:
        missing = [n for n in needs if n not in done]
        if missing:
            figures.append((name, None, f"not made: stage {', '.join(missing)} did not finish"))
            continue
        try:
            figures += [(caption, path, None) for caption, path in job()]
        except Exception as error:  # noqa: BLE001 - the report says which figure failed and why
            figures.append((name, None, f"not made: {type(error).__name__}: {error}"[:300]))
    if "probe" in done and done["probe"].get("heat_map"):
        figures.append(("Fig 3.4: AP of a small decoder per spatial-attention block (rows 1-16) and timestep "
                        "(columns)", Path(done["probe"]["heat_map"]), None))
    return figures
