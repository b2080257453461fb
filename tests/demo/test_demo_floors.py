"""Sanity floors (demo/floors.py) scored by the chapters' own evaluation code, checked against hand computations;
the per-image harness (demo/per_image.py) agrees with the chapters' dataset numbers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from common.config import EXPERIMENTS_ROOT, load_config
from demo.data_overrides import depth_data_overrides, faces_data_overrides
from demo.floors import (
    AllForeground,
    ConstantDepthNetwork,
    ConstantFaceNetwork,
    PromptBlind,
    mean_training_depth,
    mean_training_lighting,
    write_prompt_blind_phrasecut,
)
from demo.per_image import depth_per_image, faces_per_image, segmentation_curves

DEMO = EXPERIMENTS_ROOT / "demo"


@pytest.mark.slow  # ~30 s on a loaded 2-core machine (world writing + two evaluation passes)
def test_depth_floor_through_the_chapter_evaluation(tmp_path):
    from demo.worlds import street
    from sharingan.tasks import depth

    street.write_street_fixture(tmp_path, n=3, size=(24, 80))
    overrides = [o for o in depth_data_overrides(tmp_path) if "val_list" not in o]
    cfg = load_config(DEMO / "depth.yaml", overrides + ["data.size=[24,80]", "data.kitti.val_list=null",
                                                   "data.make3d.resize_hw=[40,36]", "data.make3d.crop_hw=[20,32]"])
    mean_map = mean_training_depth(cfg)
    assert mean_map.shape == (1, 24, 80) and float(mean_map.min()) >= -1.0 and float(mean_map.max()) <= 1.0
    network = ConstantDepthNetwork(mean_map)
    images = torch.randn(2, 3, 24, 80)
    predicted = depth.predict_depth(None, network, images)
    assert torch.equal(predicted[0], predicted[1])  # the same map whatever the image
    floor = depth.evaluate(cfg, {"generator": None, "task_network": network}, tmp_path / "eval")
    per_image = depth_per_image(cfg, {"generator": None, "task_network": network})
    for benchmark in ("kitti_eigen_cap50", "kitti_eigen_cap80", "make3d_c1"):
        assert per_image[benchmark]["abs_rel"].mean() == pytest.approx(floor[benchmark]["metrics"]["abs_rel"],
                                                                       rel=1e-6)


def test_face_floor_scores_the_angle_to_the_camera_and_chance_lighting(tmp_path):
    from demo.worlds import faces
    from sharingan.data.photoface import PhotofaceDataset
    from sharingan.models.sfsnet import decode_normals
    from sharingan.tasks import normals

    faces.write_faces_fixture(tmp_path, n=4, size=32)
    cfg = load_config(DEMO / "faces.yaml", faces_data_overrides(tmp_path) + [
        "data.size=[32,32]", "eval.multipie.crop_size=64", "eval.batch_size=50", "data.photoface_lists=null",
        "eval.multipie.shots=[0,1,2,3]"])
    lighting = mean_training_lighting(cfg)
    assert lighting.shape == (27,)
    network = ConstantFaceNetwork(lighting)
    decoded = decode_normals(network(torch.zeros(2, 3, 32, 32))["normal"])
    assert torch.allclose(decoded, torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1).expand_as(decoded))
    floor = normals.evaluate(cfg, {"generator": None, "task_network": network}, tmp_path / "eval")
    # by hand: the angle between each ground-truth normal and the camera axis, over all masked pixels (one batch)
    dataset = PhotofaceDataset(tmp_path / "photoface", split="test", image_size=32)
    angles = []
    for k in range(len(dataset)):
        sample = dataset[k]
        gt = sample["normal"].double()
        gt = gt / gt.norm(dim=0, keepdim=True).clamp_min(1e-12)
        mask = sample["mask"][0] > 0.5
        angles.append(np.degrees(np.arccos(np.clip(gt[2][mask].numpy(), -1, 1))))
    assert floor["photoface"]["metrics"]["mae_deg"] == pytest.approx(np.concatenate(angles).mean(), rel=1e-5)
    classes = floor["multipie"]["protocol"]["classes"]
    assert classes == 4
    assert floor["multipie"]["metrics"]["top1"] == pytest.approx(100.0 / classes)  # every class ties
    per_image = faces_per_image(cfg, {"generator": None, "task_network": network})
    assert per_image["multipie"]["top1"].mean() == pytest.approx(floor["multipie"]["metrics"]["top1"])


def test_segmentation_floors_and_prompt_blind_copy(tmp_path):
    from demo.worlds import shapes
    from ldznet.data import build_dataset
    from ldznet.eval import evaluate_segmenter

    shapes.write_shapes_fixture(tmp_path, n=3, size=64)
    node = {"name": "phrasecut", "root": str(tmp_path / "phrasecut"), "split": "test", "image_size": 64}
    dataset = build_dataset(node)
    loader = DataLoader(dataset, batch_size=4, shuffle=False)
    metrics = evaluate_segmenter(AllForeground(), loader, progress=False)
    # by hand: all-foreground IoU of a sample = |gt| / (1 + H W) (CLIPSeg's +1), the same at every threshold
    ious = [float(dataset[k]["mask"].sum()) / (1.0 + 64 * 64) for k in range(len(dataset))]
    assert metrics["miou_best"] == pytest.approx(100.0 * np.mean(ious), rel=1e-9)
    curves = segmentation_curves(AllForeground(), loader)
    assert curves.shape == (len(dataset), 49) and 100.0 * curves.mean(0).max() == pytest.approx(metrics["miou_best"])

    seen = []

    class Recorder(torch.nn.Module):
        def forward(self, images, prompts):
            seen.extend(prompts)
            return torch.zeros(images.shape[0], 1, *images.shape[-2:])

    evaluate_segmenter(PromptBlind(Recorder(), "object"), loader, progress=False)
    assert set(seen) == {"object"} and len(seen) == len(dataset)

    blind = write_prompt_blind_phrasecut(tmp_path / "phrasecut", tmp_path / "blind")
    original = build_dataset({**node, "split": "train"})
    copy = build_dataset({**node, "split": "train", "root": str(blind)})
    assert len(copy) == len(original)
    assert {copy[k]["prompt"] for k in range(len(copy))} == {"object"}
    assert all(torch.equal(copy[k]["mask"], original[k]["mask"]) for k in range(len(copy)))


def test_per_image_scoring_brings_the_networks_back_to_the_cpu():
    """The chapter's evaluate moves the networks to the GPU when one is visible (eval.device auto); the per-image
    scoring that follows runs on the CPU, so it must move them back, not assume they are there."""
    from demo.per_image import on_cpu

    class Recording(torch.nn.Linear):
        def to(self, *args, **kwargs):
            self.moved_to = args
            return super().to(*args, **kwargs)

    network = Recording(2, 2).train()
    moved = on_cpu({"generator": None, "task_network": network})
    assert moved["generator"] is None and moved["task_network"] is network
    assert network.moved_to == ("cpu",) and not network.training
