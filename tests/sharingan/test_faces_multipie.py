"""Multi-PIE tree reader and the lighting-classification protocol (Table 2.4)."""

import numpy as np
import pytest
import torch

from common.metrics.lighting import topk_accuracy
from sharingan.data.multipie import (
    MultiPIEDataset,
    lighting_class_scores,
    lighting_signature,
    scan_multipie,
    shot_lighting,
    write_multipie_fixture,
)


def test_tree_names_and_preprocessing(tmp_path):
    root = write_multipie_fixture(tmp_path / "data", subjects=(1, 2), recordings=((1, 1), (2, 1)), shots=(0, 7, 12))
    path = root / "session01" / "multiview" / "001" / "01" / "05_1" / "001_01_01_051_07.png"
    assert path.is_file()
    images = scan_multipie(root, recordings=((1, 1),), shots=(0, 7))
    assert len(images) == 4 and {i.shot for i in images} == {0, 7} and {i.session for i in images} == {1}
    dataset = MultiPIEDataset(root, shots=(0, 7, 12))
    assert len(dataset) == 12
    item = dataset[1]
    assert item["image"].shape == (3, 128, 128) and item["label"] == 1 and item["subject"] == 1
    with pytest.raises(FileNotFoundError, match="05_1"):
        scan_multipie(tmp_path / "data" / "session01" / "multiview")
    bad = path.with_name("001_01_01_051_7.png")
    bad.write_bytes(b"")
    with pytest.raises(ValueError, match="001_01_01_051_7.png"):
        scan_multipie(root)


def test_signature_ignores_brightness_and_separates_directions():
    left, right = shot_lighting(1), shot_lighting(18)
    signatures = lighting_signature(torch.tensor(np.stack([left, 3 * left, right])))
    assert torch.allclose(signatures.norm(dim=1), torch.ones(3, dtype=torch.float64))
    assert torch.allclose(signatures[0], signatures[1])
    assert (signatures[0] @ signatures[2]).item() < 0.99


def test_leave_one_subject_out_by_hand():
    a, b = shot_lighting(1), shot_lighting(18)
    # subject 0 is lit correctly; subject 1's estimates are swapped between the two classes
    lighting = np.stack([a, b, b, a])
    labels, subjects = [0, 1, 0, 1], [0, 0, 1, 1]
    scores = lighting_class_scores(lighting, labels, subjects, class_count=2)
    # each subject is compared with the OTHER subject's prototypes only -> every image is misclassified
    assert topk_accuracy(scores, labels, 1) == 0.0
    assert topk_accuracy(scores, labels, 2) == 100.0
    with pytest.raises(ValueError, match="no image from a subject other than"):
        lighting_class_scores(lighting[:2], [0, 1], [0, 0], class_count=2)


def test_true_lighting_is_classified_perfectly_and_noise_lowers_accuracy():
    shots = list(range(19))
    rng = np.random.default_rng(0)
    lighting, labels, subjects = [], [], []
    for subject in range(4):
        for label, shot in enumerate(shots):
            lighting.append(shot_lighting(shot) * rng.uniform(0.7, 1.3) + rng.normal(scale=0.01, size=27))
            labels.append(label)
            subjects.append(subject)
    scores = lighting_class_scores(np.stack(lighting), labels, subjects, class_count=19)
    assert topk_accuracy(scores, labels, 1) == 100.0
    noisy = np.stack(lighting) + rng.normal(scale=0.5, size=(len(labels), 27))
    noisy_scores = lighting_class_scores(noisy, labels, subjects, class_count=19)
    top1, top3 = topk_accuracy(noisy_scores, labels, 1), topk_accuracy(noisy_scores, labels, 3)
    assert top1 < 90.0 and top3 >= top1
