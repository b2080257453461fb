"""The segmentation world: coloured shapes over stuff regions, with phrases, captions and referring
expressions (dissertation Chapter 3).

A scene is a sky band over one to three ground regions (grass, water, sand) and one to four objects
(circle, square, triangle, diamond, star in eight colours), all polygons. From one scene:

- ``photo`` style (the PhraseCut stand-in): shaded objects with a light from the top left and a soft drop
  shadow, textured stuff (grass blades, water ripples, sand grain, clouds), camera noise and blur;
- ``illustration`` style (the AIGI stand-in): flat pastel fills, thick dark outlines, no texture, no noise;
- phrases in PhraseCut's structure: "red circle" (name + colour attribute; every instance of it), "circle"
  (name only), "sky"/"grass"/... (stuff); stuff polygons are amodal (they include what objects cover);
- a caption per image for the tiny LDM ("a red circle and a blue square on grass under the sky");
- referring expressions with positions for RefCOCO ("the red circle on the left", "the top square").

Arrays and polygons only; files are written by ``ldznet.data.phrasecut`` / ``aigi`` / ``refcoco`` writers.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from skimage.draw import polygon2mask
from tqdm.auto import tqdm

from demo.worlds.noise import gaussian_blur, sensor, to_uint8, value_noise
from ldznet.data.aigi import write_aigi_sample
from ldznet.data.phrasecut import write_phrasecut_split
from ldznet.data.refcoco import write_refer_dataset

SHAPES = ("circle", "square", "triangle", "diamond", "star")
COLORS = {
    "red": (0.85, 0.12, 0.1), "green": (0.15, 0.7, 0.2), "blue": (0.12, 0.25, 0.85), "yellow": (0.95, 0.85, 0.1),
    "purple": (0.55, 0.2, 0.7), "orange": (0.95, 0.5, 0.08), "white": (0.95, 0.95, 0.95), "black": (0.08, 0.08, 0.08),
}
STUFF = {"sky": (0.45, 0.65, 0.92), "grass": (0.25, 0.55, 0.15), "water": (0.1, 0.35, 0.6), "sand": (0.85, 0.75, 0.5)}
GROUND = ("grass", "water", "sand")
# Every other word the language below produces (captions, phrases, the three referring-expression styles); the
# tiny LDM's tokenizer makes each of them one token, as CLIP's vocabulary does (demo/tiny_ldm.py VOCABULARY).
LANGUAGE_WORDS = ("a", "an", "the", "and", "on", "under", "in", "at", "of", "that", "is", "colored", "one",
                  "picture", "side", "left", "right", "top", "bottom")
# The illustration palette: brighter, flatter colours (the "AI-generated art" domain shift).
ILLUSTRATION_STUFF = {"sky": (0.6, 0.85, 1.0), "grass": (0.45, 0.85, 0.35), "water": (0.3, 0.6, 0.95),
                      "sand": (1.0, 0.88, 0.6)}


def _shape_polygon(shape: str, cx: float, cy: float, r: float, angle: float) -> list[list[float]]:
    if shape == "circle":
        t = np.linspace(0, 2 * np.pi, 24, endpoint=False)
        radii = np.full_like(t, r)
    elif shape == "square":
        t = np.deg2rad([45, 135, 225, 315]) + angle
        radii = np.full(4, r * 1.2)
    elif shape == "triangle":
        t = np.deg2rad([-90, 30, 150]) + angle
        radii = np.full(3, r * 1.25)
    elif shape == "diamond":
        t = np.deg2rad([-90, 0, 90, 180])
        radii = np.array([r * 1.3, r * 0.8, r * 1.3, r * 0.8])
    elif shape == "star":
        t = np.deg2rad(np.arange(10) * 36 - 90) + angle
        radii = np.where(np.arange(10) % 2 == 0, r * 1.3, r * 0.55)
    else:
        raise ValueError(f"unknown shape {shape!r}")
    return [[float(cx + q * np.cos(a)), float(cy + q * np.sin(a))] for a, q in zip(t, radii)]


def rasterize(polygon: list[list[float]], height: int, width: int) -> np.ndarray:
    """Binary mask of a polygon of [x, y] points: the pixels whose centre lies inside (boundary included).

    The same rasteriser as the PhraseCut evaluation protocol (``ldznet.data.transforms.xy_polygons_to_mask``:
    skimage ``polygon2mask`` on the float coordinates), so the pixels an object is painted on are the pixels its
    ground-truth mask holds. PIL's ``polygon(outline=1)`` used before also painted the boundary pixels: for the
    world's 5-11 px objects the painted shape and the scored mask overlapped at IoU 0.87 on average (0.61 worst).
    """
    points = np.asarray(polygon, dtype=np.float64).reshape(-1, 2)
    return polygon2mask((int(height), int(width)), points[:, ::-1])


def sample_scene(rng: np.random.Generator, size: int, max_objects: int = 4,
                 duplicate_prob: float = 0.3) -> dict:
    """Stuff regions and non-overlapping objects on a `size` x `size` canvas (polygons, in pixels)."""
    w = h = float(size)
    horizon = rng.uniform(0.25, 0.5) * h
    xs = np.linspace(0, w, 9)
    wave = horizon + rng.uniform(-0.04, 0.04, size=9) * h
    sky = [[0.0, 0.0], [w, 0.0]] + [[float(x), float(y)] for x, y in zip(xs[::-1], wave[::-1])]
    regions = [{"name": "sky", "attributes": [], "kind": "stuff", "polygon": sky}]
    n_ground = int(rng.integers(1, 3))
    types = list(rng.choice(GROUND, size=n_ground, replace=False))
    if n_ground == 1:
        polys = [[[float(x), float(y)] for x, y in zip(xs, wave)] + [[w, h], [0.0, h]]]
    elif rng.random() < 0.5:  # left / right split with a slanted border
        top_x, bottom_x = rng.uniform(0.3, 0.7) * w, rng.uniform(0.3, 0.7) * w
        left_top = [[float(x), float(y)] for x, y in zip(xs, wave) if x <= top_x]
        right_top = [[float(x), float(y)] for x, y in zip(xs, wave) if x > top_x]
        y_split = float(np.interp(top_x, xs, wave))
        polys = [left_top + [[top_x, y_split], [bottom_x, h], [0.0, h]],
                 [[top_x, y_split]] + right_top + [[w, h], [bottom_x, h]]]
    else:  # far band / near band
        band = rng.uniform(0.55, 0.75) * h
        polys = [[[float(x), float(y)] for x, y in zip(xs, wave)] + [[w, band], [0.0, band]],
                 [[0.0, band], [w, band], [w, h], [0.0, h]]]
    for name, poly in zip(types, polys):
        regions.append({"name": str(name), "attributes": [], "kind": "stuff", "polygon": poly})
    objects = []
    n_objects = int(rng.integers(1, max_objects + 1))
    for _ in range(60):
        if len(objects) >= n_objects:
            break
        if objects and rng.random() < duplicate_prob:  # same category again: phrases may cover instances
            shape, color = objects[-1]["name"], objects[-1]["attributes"][0]
        else:
            shape, color = str(rng.choice(SHAPES)), str(rng.choice(list(COLORS)))
        r = rng.uniform(0.08, 0.17) * size
        cx, cy = rng.uniform(r * 1.3, w - r * 1.3), rng.uniform(r * 1.3, h - r * 1.3)
        if any(np.hypot(cx - o["center"][0], cy - o["center"][1]) < (r + o["radius"]) * 1.35 for o in objects):
            continue
        polygon = _shape_polygon(shape, cx, cy, r, rng.uniform(-0.3, 0.3))
        objects.append({"name": shape, "attributes": [color], "kind": "object", "polygon": polygon,
                        "center": (float(cx), float(cy)), "radius": float(r)})
    regions.extend(objects)
    for region in regions:
        region["mask"] = rasterize(region["polygon"], size, size)
        ys, xs_ = np.nonzero(region["mask"])
        region["bbox"] = ([float(xs_.min()), float(ys.min()), float(xs_.max() - xs_.min() + 1),
                           float(ys.max() - ys.min() + 1)] if len(xs_) else [0.0, 0.0, 0.0, 0.0])
    return {"size": size, "regions": regions, "seed": int(rng.integers(0, 2**31 - 1))}


# ----------------------------------------------------------------------------------------------------------
# Rendering

def _stuff_texture(name: str, x, y, seed: int) -> np.ndarray:
    if name == "sky":
        clouds = np.clip(value_noise(x / 18, y / 8, seed, 4) - 0.45, 0, 1) * 1.6
        return (1 - 0.25 * y / y.max())[..., None] * np.array(STUFF["sky"]) + clouds[..., None] * 0.6
    if name == "grass":
        blades = value_noise(x / 1.5, y / 6, seed + 1, 2)
        return np.array(STUFF["grass"]) * (0.65 + 0.7 * blades)[..., None]
    if name == "water":
        ripples = 0.5 + 0.5 * np.sin(y * 1.3 + 2 * value_noise(x / 10, y / 10, seed + 2, 2) * 6)
        return np.array(STUFF["water"]) * (0.75 + 0.5 * ripples)[..., None]
    grain = value_noise(x / 1.2, y / 1.2, seed + 3, 2)
    return np.array(STUFF["sand"]) * (0.8 + 0.35 * grain)[..., None]


def _outline(image: np.ndarray, polygon, size: int) -> None:
    canvas = Image.new("L", (size, size), 0)
    ImageDraw.Draw(canvas).polygon([tuple(p) for p in polygon], outline=1, width=max(1, size // 64))
    image[np.asarray(canvas, dtype=bool)] = (0.12, 0.1, 0.15)


def render(scene: dict, style: str, rng: np.random.Generator) -> np.ndarray:
    """Render a scene as HxWx3 uint8 in the ``photo`` or ``illustration`` style."""
    size = scene["size"]
    y, x = np.mgrid[0:size, 0:size].astype(np.float64)
    image = np.zeros((size, size, 3))
    seed = scene["seed"]
    for region in scene["regions"]:
        m = region["mask"]
        if region["kind"] == "stuff":
            if style == "photo":
                image[m] = _stuff_texture(region["name"], x, y, seed)[m]
            else:
                image[m] = ILLUSTRATION_STUFF[region["name"]]
                _outline(image, region["polygon"], size)
            continue
        color = np.array(COLORS[region["attributes"][0]])
        cx, cy, r = *region["center"], region["radius"]
        if style == "photo":
            shadow = rasterize([[px + r * 0.25, py + r * 0.25] for px, py in region["polygon"]], size, size)
            soft = gaussian_blur(shadow.astype(np.float64), r * 0.15)
            image *= (1 - 0.45 * soft)[..., None]
            lit = 0.75 + 0.45 * np.clip(-((x - cx) + (y - cy)) / (2 * r), -1, 1)
            image[m] = (color[None, :] * lit[m][:, None])
        else:
            image[m] = 0.35 + 0.65 * color
            _outline(image, region["polygon"], size)
    if style == "illustration":
        return to_uint8(image)
    return to_uint8(sensor(image, rng, cast=rng.uniform(0.92, 1.08, size=3), noise=0.03, blur=0.5, gamma=1.0))


# ----------------------------------------------------------------------------------------------------------
# Language

def phrases(scene: dict) -> list[dict]:
    """PhraseCut-style phrases: each object category with its colour, each shape name, each stuff name.

    Returns dicts with ``phrase``, ``name``, ``attributes``, ``type`` (name / attribute) and ``regions``
    (indices into ``scene["regions"]`` of every instance the phrase covers).
    """
    out = {}
    for i, region in enumerate(scene["regions"]):
        keys = [(region["name"], tuple(region["attributes"]))]
        if region["kind"] == "object":
            keys.append((region["name"], ()))
        for name, attrs in keys:
            out.setdefault((name, attrs), []).append(i)
    result = []
    for (name, attrs), idx in out.items():
        if not any(scene["regions"][i]["mask"].any() for i in idx):
            continue
        result.append({"phrase": " ".join([*attrs, name]), "name": name, "attributes": list(attrs),
                       "type": "attribute" if attrs else "name", "regions": idx})
    return result


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def caption(scene: dict) -> str:
    """One sentence describing the scene (the tiny LDM's training text)."""
    objects = sorted((r for r in scene["regions"] if r["kind"] == "object"), key=lambda r: r["center"][0])
    things = [f"{_article(r['attributes'][0])} {r['attributes'][0]} {r['name']}" for r in objects]
    ground = [r["name"] for r in scene["regions"] if r["kind"] == "stuff" and r["name"] != "sky"]
    text = things[0] if len(things) == 1 else ", ".join(things[:-1]) + " and " + things[-1]
    return f"{text} on {' and '.join(ground)} under the sky"


def _stuff_at(scene: dict, x: float, y: float) -> str:
    """The stuff region under a point (the last stuff polygon containing it)."""
    name = "sky"
    xi, yi = int(np.clip(x, 0, scene["size"] - 1)), int(np.clip(y, 0, scene["size"] - 1))
    for region in scene["regions"]:
        if region["kind"] == "stuff" and region["mask"][yi, xi]:
            name = region["name"]
    return name


def referring_expressions(scene: dict, rng: np.random.Generator, style: str = "refcoco") -> list[dict]:
    """Single-instance referring expressions, one ref per object that the style can name uniquely.

    - ``refcoco``: short, with absolute positions to tell instances apart ("left red circle", "the top star");
    - ``refcoco+``: no location words (RefCOCO+'s rule): appearance only, so only objects unique by their
      colour and shape get a ref ("the red circle", "red one" when the colour is unique);
    - ``refcocog``: longer sentences with context ("the red circle that is on the grass", plus a position
      when needed).
    """
    objects = [(i, r) for i, r in enumerate(scene["regions"]) if r["kind"] == "object"]
    refs = []
    for i, region in objects:
        color, shape = region["attributes"][0], region["name"]
        label = f"{color} {shape}"
        same = [r for _, r in objects if r["name"] == shape and r["attributes"] == region["attributes"]]
        same_shape = [r for _, r in objects if r["name"] == shape]
        same_color = [r for _, r in objects if r["attributes"] == region["attributes"]]
        position = []
        if len(same) > 1:
            cx, cy = region["center"]
            xs, ys = [r["center"][0] for r in same], [r["center"][1] for r in same]
            if cx == min(xs):
                position.append("left")
            elif cx == max(xs):
                position.append("right")
            if cy == min(ys):
                position.append("top")
            elif cy == max(ys):
                position.append("bottom")
            if not position:
                continue  # a middle instance without a unique position word: skipped, as annotators would
        where = _stuff_at(scene, *region["center"])
        where_text = "in the sky" if where == "sky" else f"on the {where}"
        if style == "refcoco":
            if position:
                sentences = [f"{position[0]} {label}", f"the {label} on the {position[0]}"]
            else:
                sentences = [f"the {label}", label] + ([f"the {shape}"] if len(same_shape) == 1 else [])
        elif style == "refcoco+":
            if position:
                continue
            sentences = [f"the {label}", label] + ([f"the {color} one"] if len(same_color) == 1 else [])
        elif style == "refcocog":
            if position:
                sentences = [f"the {label} {where_text} at the {position[0]} of the picture",
                             f"a {label} that is {where_text} on the {position[0]} side"]
            else:
                sentences = [f"the {label} that is {where_text}", f"a {color} colored {shape} {where_text}"]
        else:
            raise ValueError(f"unknown referring-expression style {style!r}")
        pick = rng.permutation(len(sentences))[: min(2, len(sentences))]
        refs.append({"region": i, "sentences": [sentences[k] for k in sorted(pick)], "category": shape})
    return refs


# ----------------------------------------------------------------------------------------------------------
# Writers: the arrays above through the chapter-3 format writers

def _scenes(seed: int, n: int, size: int):
    rng = np.random.default_rng(seed)
    for k in range(n):
        yield k, rng, sample_scene(rng, size)


def write_phrasecut(root: str | Path, counts: dict, size: int, seed: int = 0) -> dict:
    """VGPhraseCut_v0 layout via ``ldznet.data.phrasecut.write_phrasecut_split`` (photo style).

    `counts` = {split: images}; every phrase of an image is a task; polygons are the scene's own."""
    written = {}
    next_id = 1_000_000
    for split_index, (split, n) in enumerate(counts.items()):
        samples, tasks = [], 0
        for _, rng, scene in tqdm(_scenes(seed * 1000 + split_index, int(n), size), total=int(n),
                                  desc=f"PhraseCut {split}", leave=False):
            image = render(scene, "photo", rng)
            items = []
            for item in phrases(scene):
                items.append({"phrase": item["phrase"], "name": item["name"], "attributes": item["attributes"],
                              "instances": [[scene["regions"][i]["polygon"]] for i in item["regions"]],
                              "ann_ids": [next_id * 100 + i for i in item["regions"]]})
            samples.append({"image_id": next_id, "image": image, "phrases": items})
            tasks += len(items)
            next_id += 1
        write_phrasecut_split(root, split, samples)
        written[split] = {"images": len(samples), "tasks": tasks}
    return written


def write_aigi(root: str | Path, n: int, size: int, seed: int = 0) -> dict:
    """AIGI layout via ``ldznet.data.aigi.write_aigi_sample``: illustration style, one mask per prompt
    (categorical prompts: "star", "red star", "water", ...; a prompt's mask covers all its regions)."""
    prompts = 0
    for k, rng, scene in tqdm(_scenes(seed * 1000 + 77, int(n), size), total=int(n), desc="AIGI", leave=False):
        image = render(scene, "illustration", rng)
        masks = []
        for item in phrases(scene):
            mask = np.zeros((size, size), dtype=bool)
            for i in item["regions"]:
                mask |= scene["regions"][i]["mask"]
            masks.append((item["phrase"], mask.astype(np.uint8)))
        write_aigi_sample(root, f"{k:04d}", image, masks)
        prompts += len(masks)
    return {"images": int(n), "prompts": prompts}


def write_refcoco(root: str | Path, n: int, size: int, seed: int = 0,
                  datasets=("refcoco", "refcoco+", "refcocog"), split: str = "val") -> dict:
    """refer layout via ``ldznet.data.refcoco.write_refer_dataset`` for RefCOCO (unc), RefCOCO+ (unc) and
    G-Ref (umd): photo-style scenes with several same-category objects, COCO polygon segmentations. The
    models are only evaluated on them (zero-shot, §3.4.3), so every ref goes to one `split`."""
    counts = {}
    for d, dataset in enumerate(datasets):
        samples, refs = [], 0
        for k, rng, scene in tqdm(_scenes(seed * 1000 + 300 + d, int(n), size), total=int(n),
                                  desc=f"{dataset}", leave=False):
            image = render(scene, "photo", rng)
            image_id = 500_000 + 10_000 * d + k
            objects = []
            for ref in referring_expressions(scene, rng, dataset):
                polygon = scene["regions"][ref["region"]]["polygon"]
                # COCO polygons put pixel (x, y) on the square [x, x+1) x [y, y+1); the world paints pixel
                # centres at integer coordinates (``rasterize``), hence the half-pixel shift: pycocotools then
                # decodes the painted object (IoU 0.98 on average; 0.84 without the shift).
                objects.append({"ann_id": image_id * 10 + ref["region"], "split": split,
                                "sentences": ref["sentences"],
                                "segmentation": [[float(v) + 0.5 for point in polygon for v in point]]})
            if objects:
                samples.append({"image_id": image_id, "image": image, "objects": objects})
                refs += len(objects)
        write_refer_dataset(root, dataset, samples)
        counts[dataset] = {"images": len(samples), "refs": refs}
    return counts


def write_shapes_fixture(root: str | Path, n: int = 3, size: int = 64, seed: int = 0) -> dict:
    """A tiny segmentation world for tests: ``phrasecut/`` (train/val/test), ``aigi/``, ``refer/``."""
    root = Path(root)
    return {"phrasecut": write_phrasecut(root / "phrasecut", {"train": n, "val": n, "test": n}, size, seed),
            "aigi": write_aigi(root / "aigi", n, size, seed),
            "refer": write_refcoco(root / "refer", n, size, seed)}
