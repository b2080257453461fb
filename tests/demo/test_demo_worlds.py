"""The procedural worlds of the miniature: exact labels, determinism, and the real-format round trips."""

from __future__ import annotations

import numpy as np
import pytest

from demo.worlds import faces, shapes, street
from demo.worlds.raycast import camera_rays, raycast


# ----------------------------------------------------------------------------------------------- ray casting
def test_raycast_ground_plane_depth_is_exact():
    scene = {"ground_y": 1.6, "boxes": [], "cylinders": []}
    dirs = np.array([[0.0, 0.1, 1.0], [0.0, 0.2, 1.0], [0.0, -0.1, 1.0]])
    hit = raycast(np.zeros(3), dirs, scene)
    assert hit["t"][0] == pytest.approx(16.0) and hit["t"][1] == pytest.approx(8.0)
    assert hit["kind"].tolist() == [1, 1, 0] and np.isinf(hit["t"][2])


def test_raycast_nearest_of_box_and_cylinder():
    scene = {"ground_y": 1.6, "boxes": [(-1.5, 1.5, -1, 1.6, 10, 12)], "cylinders": [(0.0, 5.0, 0.5, 3.0)]}
    hit = raycast(np.zeros(3), np.array([[0.0, 0.0, 1.0], [0.12, 0.0, 1.0]]), scene)
    assert hit["kind"][0] == 3 and hit["t"][0] == pytest.approx(4.5)  # cylinder front face at z = 5 - 0.5
    assert hit["kind"][1] == 2 and hit["t"][1] == pytest.approx(10.0)  # box front face at z = 10
    assert hit["normal"][1].tolist() == [0.0, 0.0, -1.0]


def test_camera_rays_centre_pixel_convention():
    dirs = camera_rays(3, 5, fx=10.0, fy=10.0, cx=2.0, cy=1.0).reshape(3, 5, 3)
    assert dirs[1, 2].tolist() == [0.0, 0.0, 1.0]
    assert dirs[0, 4, 0] == pytest.approx(0.2) and dirs[0, 4, 1] == pytest.approx(-0.1)


# ---------------------------------------------------------------------------------------------- street world
def test_street_render_depth_matches_lidar_and_is_deterministic():
    camera = street.Camera.kitti_like(24, 80)
    a = street.render_street_sequence(3, 1, camera, "real", stereo=True, lidar=True)[0]
    b = street.render_street_sequence(3, 1, camera, "real", stereo=True, lidar=True)[0]
    assert np.array_equal(a["image"], b["image"]) and np.array_equal(a["velodyne"], b["velodyne"])
    assert a["image"].shape == (24, 80, 3) and a["image"].dtype == np.uint8
    assert not np.array_equal(a["image"], a["image_right"])
    # project the scan into camera 2 with the calibration: the laser sees the same geometry the camera does
    calib = street.kitti_calibration(camera)
    points = a["velodyne"][:, :3] @ calib["velo_R"].T + calib["velo_T"]
    front = points[:, 2] > 1.0
    uvw = points[front] @ calib["P_rect_02"][:, :3].T + calib["P_rect_02"][:, 3]
    u, v = np.round(uvw[:, 0] / uvw[:, 2]).astype(int), np.round(uvw[:, 1] / uvw[:, 2]).astype(int)
    inside = (u >= 0) & (u < 80) & (v >= 0) & (v < 24)
    rel = np.abs(a["depth"][v[inside], u[inside]] - uvw[inside, 2]) / uvw[inside, 2]
    assert inside.sum() > 100 and np.median(rel) < 0.02


def test_synthetic_and_real_styles_differ_on_same_geometry():
    camera = street.Camera.kitti_like(24, 80)
    syn = street.render_street_sequence(5, 1, camera, "synthetic")[0]
    real = street.render_street_sequence(5, 1, camera, "real")[0]
    assert np.array_equal(np.isinf(syn["depth"]), np.isinf(real["depth"]))
    assert np.abs(syn["image"].astype(int) - real["image"].astype(int)).mean() > 10


def test_vkitti_depth_encoding():
    cm = street.vkitti_depth_cm(np.array([[1.234, np.inf], [700.0, 0.001]]))
    assert cm.dtype == np.uint16 and cm.tolist() == [[123, 65535], [65535, 1]]


def test_make3d_grid_shape_and_sky_saturation():
    sample = street.render_make3d(0, street.Camera.make3d_like(32, 24))
    grid = sample["grid"]
    assert grid.shape == (55, 305, 4) and sample["image"].shape == (32, 24, 3)
    assert grid[..., 3].max() <= 81.9 and grid[..., 3].min() > 0
    assert (grid[0, :, 3] > grid[-1, :, 3]).mean() > 0.9  # top rows (sky / far) are farther than the ground


# ------------------------------------------------------------------------------------------------ face world
def test_face_normals_unit_and_synthetic_render_is_lambertian_sh():
    rng = np.random.default_rng(0)
    params, light = faces.sample_face(rng), faces.sample_light(rng)
    s = faces.render_synthetic(params, light, 32)
    assert np.allclose(np.linalg.norm(s["normal"], axis=-1), 1.0)
    expected = np.clip(faces.sh_shading(s["normal"], light) * s["albedo"] / 255.0, 0, 1) * s["mask"][..., None]
    assert np.abs(s["image"] / 255.0 - expected).max() < 0.01
    # the face bulges towards the camera: nz is largest near the centre
    assert s["normal"][16, 16, 2] > s["normal"][16, 3, 2] or not s["mask"][16, 3]


def test_face_sh_matches_chapter2_shading_layer():
    torch = pytest.importorskip("torch")
    sfsnet = pytest.importorskip("sharingan.models.sfsnet")
    rng = np.random.default_rng(1)
    normals = rng.normal(size=(4, 5, 3))
    normals /= np.linalg.norm(normals, axis=-1, keepdims=True)
    light = faces.sample_light(rng)
    ours = faces.sh_shading(normals, light)
    theirs = sfsnet.sh_shading(torch.from_numpy(normals).permute(2, 0, 1)[None],
                               torch.from_numpy(light)[None])[0].permute(1, 2, 0).numpy()
    assert np.allclose(ours, theirs, atol=1e-6)


def test_directional_sh_is_ambient_plus_cosine():
    light = faces.directional_sh((0.0, 0.0, 1.0), 0.5, 0.3)
    shading = faces.sh_shading(np.array([[[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]), light)
    assert shading[0, 0] == pytest.approx([0.8] * 3) and shading[0, 1] == pytest.approx([0.3] * 3)


def test_real_face_has_hair_and_background():
    rng = np.random.default_rng(2)
    params = faces.sample_face(rng)
    light = faces.sample_light(rng)
    real = faces.render_real(params, light, 48, rng)
    syn = faces.render_synthetic(params, light, 48)
    assert real["mask"].sum() < syn["mask"].sum()  # hair covers the forehead
    assert real["image"][0, 0].sum() > 0 and syn["image"][0, 0].sum() == 0  # background texture vs black


def test_switching_a_real_effect_off_changes_only_that_effect():
    """The domain-gap attribution (demo.domain_gap, faces) re-renders the real style with one effect off: the
    face, the light and the random stream must stay those of the full render, and only that effect may go."""
    def render(effects):
        rng = np.random.default_rng(5)
        params, light = faces.sample_face(rng), faces.sample_light(rng)
        out = faces.render_real(params, light, 48, rng, effects)
        return out, rng.random()

    full, after_full = render(faces.REAL_EFFECTS)
    for effect in faces.REAL_EFFECTS:
        without, after = render(tuple(e for e in faces.REAL_EFFECTS if e != effect))
        assert after == after_full, effect  # same draws
        assert (without["normal"] == full["normal"]).all(), effect
        assert not (without["image"] == full["image"]).all(), effect  # the effect shows in the image
    without_background, _ = render(tuple(e for e in faces.REAL_EFFECTS if e != "background"))
    corner = (slice(0, 3), slice(0, 3))  # outside the face and the hair
    assert without_background["image"][corner].max() < 12 < full["image"][corner].max()  # black + camera noise
    assert (without_background["mask"] == full["mask"]).all()
    with pytest.raises(ValueError, match="unknown effects"):
        render(("glare",))


def test_multipie_shots_are_distinct_lights():
    lights = np.stack([faces.multipie_light(k) for k in range(19)])
    distances = np.linalg.norm(lights[:, None] - lights[None], axis=-1) + np.eye(19)
    assert distances.min() > 0.05


# ---------------------------------------------------------------------------------------- segmentation world
def test_shapes_scene_phrases_masks_and_caption():
    rng = np.random.default_rng(4)
    scene = shapes.sample_scene(rng, 64)
    items = shapes.phrases(scene)
    names = {item["phrase"] for item in items}
    assert "sky" in names
    objects = [r for r in scene["regions"] if r["kind"] == "object"]
    for obj in objects:
        assert f"{obj['attributes'][0]} {obj['name']}" in names and obj["mask"].any()
    for a in objects:  # objects never overlap
        for b in objects:
            assert a is b or not (a["mask"] & b["mask"]).any()
    text = shapes.caption(scene)
    assert text.endswith("under the sky") and all(o["name"] in text for o in objects)


def test_shapes_styles_differ_and_are_deterministic():
    scene = shapes.sample_scene(np.random.default_rng(7), 48)
    photo = shapes.render(scene, "photo", np.random.default_rng(0))
    again = shapes.render(scene, "photo", np.random.default_rng(0))
    art = shapes.render(scene, "illustration", np.random.default_rng(0))
    assert np.array_equal(photo, again) and photo.shape == (48, 48, 3)
    assert np.abs(photo.astype(int) - art.astype(int)).mean() > 10


def test_referring_expressions_styles():
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = shapes.sample_scene(rng, 64, duplicate_prob=0.9)
        for style in ("refcoco", "refcoco+", "refcocog"):
            for ref in shapes.referring_expressions(scene, rng, style):
                assert ref["sentences"] and scene["regions"][ref["region"]]["kind"] == "object"
                if style == "refcoco+":
                    assert not any(w in s.split() for s in ref["sentences"] for w in ("left", "right", "top"))


# ------------------------------------------------------------------------------ real formats via the writers
def test_street_fixture_reads_back_through_chapter2_loaders(tmp_path):
    kitti = pytest.importorskip("sharingan.data.kitti")
    vkitti = pytest.importorskip("sharingan.data.vkitti")
    make3d = pytest.importorskip("sharingan.data.make3d")
    street.write_street_fixture(tmp_path, n=2, size=(24, 80))
    entries = vkitti.read_vkitti_list(tmp_path / "vkitti" / "trainA.txt")
    depth_cm = vkitti.read_depth_png_cm(tmp_path / "vkitti" / vkitti.depth_path_for(entries[0]))
    assert depth_cm.shape == (24, 80) and depth_cm.max() == 65535  # sky code
    test = kitti.read_kitti_list(tmp_path / "kitti" / "test.txt")
    gt = kitti.generate_depth_map(tmp_path / "kitti" / test[0].calib_dir, tmp_path / "kitti" / test[0].velodyne)
    camera = street.Camera.kitti_like(24, 80)
    exact = street.render_street_sequence(500 + 2, 1, camera, "real", stereo=True, lidar=True)[0]["depth"]
    valid = gt > 0
    # Velodyne ground truth = laser forward distance (0.27 m behind the camera), as monodepth2's vel_depth
    rel = np.abs(gt[valid] - (exact[valid] + 0.27)) / gt[valid]
    # 24x80 pixels are coarse (0.6 % at 96x320); a one-pixel misalignment of the calibration gives > 8 %
    assert valid.mean() > 0.2 and np.median(rel) < 0.06
    assert not (tmp_path / "kitti" / kitti.read_kitti_list(tmp_path / "kitti" / "train.txt")[0].velodyne).exists()
    depth = make3d.read_make3d_depth(next((tmp_path / "make3d" / "Gridlaserdata").glob("*.mat")))
    assert depth.shape == (55, 305)


def test_faces_fixture_reads_back_through_chapter2_loaders(tmp_path):
    synthetic = pytest.importorskip("sharingan.data.sfsnet_synthetic")
    multipie = pytest.importorskip("sharingan.data.multipie")
    written = faces.write_faces_fixture(tmp_path, n=3, size=32)
    records = synthetic.scan_synthetic(tmp_path / "sfsnet")
    assert len(records) == 3 and len(records[0].lighting if not hasattr(records[0].lighting, "is_file")
                                     else synthetic.read_light(records[0].lighting)) == 27
    assert len(multipie.scan_multipie(tmp_path / "multipie")) == written["multipie"] == 8
    assert (tmp_path / "celeba" / "img_align_celeba" / "000001.jpg").is_file()
    assert written["photoface"] == {"train": 4, "test": 4}


def test_shapes_fixture_reads_back_through_chapter3_loaders(tmp_path):
    phrasecut = pytest.importorskip("ldznet.data.phrasecut")
    refcoco = pytest.importorskip("ldznet.data.refcoco")
    aigi = pytest.importorskip("ldznet.data.aigi")
    written = shapes.write_shapes_fixture(tmp_path, n=3, size=64)
    test = phrasecut.PhraseCutDataset(tmp_path / "phrasecut", "test", image_size=64)
    assert len(test) == written["phrasecut"]["test"]["tasks"]
    sample = test[0]
    assert sample["mask"].shape == (1, 64, 64) and 0 < sample["mask"].mean() < 1
    assert len(aigi.AIGIDataset(tmp_path / "aigi", image_size=64)) == written["aigi"]["prompts"]
    refs = refcoco.RefCOCODataset(tmp_path / "refer", "val", image_size=64, dataset="refcoco")
    assert len(refs) > 0


def test_shapes_painted_pixels_are_the_ground_truth_masks(tmp_path):
    """Writer -> format -> reader: the pixels an object is painted on are the mask the PhraseCut reader draws from
    the written polygons (the protocol's rasteriser), and nearly the mask RefCOCO's pycocotools decoding gives.
    The world painted with PIL's polygon(outline=1) before: painted shape and scored mask met at IoU 0.87."""
    phrasecut = pytest.importorskip("ldznet.data.phrasecut")
    refcoco = pytest.importorskip("ldznet.data.refcoco")
    n, size = 4, 64
    shapes.write_phrasecut(tmp_path / "phrasecut", {"test": n}, size, seed=0)
    dataset = phrasecut.PhraseCutDataset(tmp_path / "phrasecut", "test", image_size=size)
    k = 0
    for _, rng, scene in shapes._scenes(0 * 1000 + 0, n, size):  # the writer's scene stream of split 0
        shapes.render(scene, "photo", rng)  # the writer renders before drawing the next scene
        for item in shapes.phrases(scene):
            painted = np.zeros((size, size), dtype=bool)
            for index in item["regions"]:
                painted |= scene["regions"][index]["mask"]
            sample = dataset[k]
            assert sample["prompt"] == item["phrase"]
            assert np.array_equal(sample["mask"][0].numpy() > 0.5, painted), item["phrase"]
            k += 1
    assert k == len(dataset)
    shapes.write_refcoco(tmp_path / "refer", n, size, seed=0, datasets=("refcoco",))
    refs = refcoco.RefCOCODataset(tmp_path / "refer", "val", image_size=size, dataset="refcoco")
    masks = [refs[i]["mask"][0].numpy() > 0.5 for i in range(len(refs))]
    objects = []
    for _, rng, scene in shapes._scenes(300, n, size):  # the writer's stream: render, then expressions
        shapes.render(scene, "photo", rng)
        shapes.referring_expressions(scene, rng, "refcoco")
        objects += [r["mask"] for r in scene["regions"] if r["kind"] == "object"]
    # each ref mask is one of the painted objects, up to pycocotools' boundary rule (COCO polygons are in pixel
    # area coordinates: written without the half-pixel shift they met the painted objects at IoU 0.84 on average)
    best = [max((mask & o).sum() / (mask | o).sum() for o in objects) for mask in masks]
    assert len(best) > 0 and min(best) > 0.9 and np.mean(best) > 0.95


def test_kitti_synthetic_style_rerender_keeps_geometry_and_scans(tmp_path):
    """demo/domain_gap.py: the test drives re-rendered in the synthetic style have the same Velodyne scans
    (same geometry) and list, and other pixels; the other splits are skipped without shifting any seed."""
    from demo.worlds.street import write_kitti

    drives = {"train": (1, 2), "test": (1, 2)}
    real = write_kitti(tmp_path / "real", drives, (24, 80), seed=3)
    synthetic = write_kitti(tmp_path / "syn", drives, (24, 80), seed=3, style="synthetic", splits=["test"])
    assert synthetic == {"test": real["test"]} and not (tmp_path / "syn" / "train.txt").exists()
    assert (tmp_path / "real" / "test.txt").read_text() == (tmp_path / "syn" / "test.txt").read_text()
    scans = sorted((tmp_path / "real").rglob("*.bin"))
    test_scans = [p for p in scans if "drive_0002" in str(p)]
    assert test_scans
    for scan in test_scans:
        assert scan.read_bytes() == (tmp_path / "syn" / scan.relative_to(tmp_path / "real")).read_bytes()
    image = next(iter(sorted((tmp_path / "real").rglob("*drive_0002_sync/image_02/data/*.png"))))
    assert image.read_bytes() != (tmp_path / "syn" / image.relative_to(tmp_path / "real")).read_bytes()


def test_photoface_synthetic_style_rerender_keeps_labels(tmp_path):
    """demo/domain_gap.py: the synthetic-style Photoface has the same lists, normals and masks, other images."""
    from demo.worlds.faces import write_photoface

    real = write_photoface(tmp_path / "real", 1, 1, 1, 24, seed=5)
    synthetic = write_photoface(tmp_path / "syn", 1, 1, 1, 24, seed=5, style="synthetic")
    assert real == synthetic
    files = sorted(p.relative_to(tmp_path / "real") for p in (tmp_path / "real").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(tmp_path / "syn") for p in (tmp_path / "syn").rglob("*") if p.is_file())
    labels = [f for f in files if f.name.endswith(("_normal.png", "_mask.png")) or f.suffix == ".txt"]
    images = [f for f in files if f.name.endswith("_align.png")]
    assert labels and images
    assert all((tmp_path / "real" / f).read_bytes() == (tmp_path / "syn" / f).read_bytes() for f in labels)
    assert all((tmp_path / "real" / f).read_bytes() != (tmp_path / "syn" / f).read_bytes() for f in images)
    with pytest.raises(ValueError, match="style"):
        write_photoface(tmp_path / "bad", 1, 1, 1, 24, style="cartoon")


def test_kitti_stereo_pairs_favour_the_true_depth(tmp_path):
    """The depth chain of the street world (writer -> calib_cam_to_cam.txt -> KittiStereoDataset's f·B ->
    warp -> L_GC, eq. 2.7): on the written real-layout pairs, the renderer's dense true depth gives a lower
    geometric-consistency loss than that depth scaled by 0.7 or 1.5 and than constant depths, at all four
    scales (docs/chapter2-depth.md, "Pretraining T's coarse outputs")."""
    import torch

    from sharingan.data.kitti import KittiStereoDataset, read_kitti_list
    from sharingan.data.vkitti import normalise_depth_cm
    from sharingan.losses import geometric_consistency_loss, scale_pyramid

    size, frames = (48, 160), 4
    street.write_kitti(tmp_path, {"train": (1, frames)}, size, seed=2)
    dataset = KittiStereoDataset(tmp_path, read_kitti_list(tmp_path / "train.txt"), size=size, augment=False,
                                 rotation_degrees=0.0)
    camera = street.Camera.kitti_like(*size)
    rendered = street.render_street_sequence(street.kitti_drive_seed(2, 1), frames, camera, "real", stereo=True)
    samples = [dataset[k] for k in range(frames)]
    written = torch.stack([s["image"] for s in samples])
    again = torch.from_numpy(np.stack([f["image"] for f in rendered])).permute(0, 3, 1, 2).float() / 127.5 - 1
    assert torch.equal(written, again), "the re-rendered drive is not the written one"
    assert samples[0]["focal_baseline"].item() == pytest.approx(camera.fx * (street.CAM3_X - street.CAM2_X),
                                                                 rel=1e-5)
    true_depth = torch.from_numpy(np.stack([np.minimum(f["depth"], 80.0) for f in rendered])).float()[:, None]
    left = torch.stack([s["image"] for s in samples]) / 2 + 0.5
    right = torch.stack([s["right"] for s in samples]) / 2 + 0.5
    focal_baseline = torch.stack([s["focal_baseline"] for s in samples])

    def loss(depth_m):
        network_units = normalise_depth_cm(depth_m * 100.0)  # the task network's tanh range, 0..80 m
        return geometric_consistency_loss(scale_pyramid(network_units, 4), left, right, focal_baseline).item()

    at_truth = loss(true_depth)
    for other in (true_depth * 0.7, (true_depth * 1.5).clamp(max=80.0), torch.full_like(true_depth, 20.0),
                  torch.full_like(true_depth, 80.0)):
        assert at_truth < 0.97 * loss(other)
