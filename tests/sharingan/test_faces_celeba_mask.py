"""CelebA face masks from the five landmarks (list_landmarks_align_celeba.txt): the parser reads the real format,
the ellipse matches a hand-worked example, the miniature world writes landmarks that sit on its faces, and the
pseudo-labels carry that mask instead of all ones (docs/chapter2-faces.md)."""

import math

import numpy as np
import pytest
import torch

from demo.worlds import faces
from sharingan.data import celeba
from sharingan.data.sfsnet_synthetic import read_mask
from sharingan.models.sfsnet import SfSNet
from sharingan.pseudo_labels import generate_pseudo_labels

# the layout of CelebA's file: count, column names, then "<file> <10 ints>" with runs of spaces
REAL_FORMAT = """3
lefteye_x lefteye_y righteye_x righteye_y nose_x nose_y leftmouth_x leftmouth_y rightmouth_x rightmouth_y
000001.jpg    69  109  106  113   77  142   73  152  108  154
000002.jpg    69  110  107  112   81  135   70  151  108  153
000003.jpg    76  112  104  106  108  128   74  156   98  158
"""


def test_landmark_parser_reads_the_real_format_and_round_trips(tmp_path):
    (tmp_path / celeba.LANDMARK_FILE).write_text(REAL_FORMAT)
    marks = celeba.read_landmarks(tmp_path)
    assert sorted(marks) == ["000001.jpg", "000002.jpg", "000003.jpg"]
    assert marks["000001.jpg"].tolist() == [[69, 109], [106, 113], [77, 142], [73, 152], [108, 154]]
    out = tmp_path / "written"
    celeba.write_landmarks(out, marks)
    assert celeba.read_landmarks(out).keys() == marks.keys()
    assert all(np.array_equal(celeba.read_landmarks(out)[k], marks[k]) for k in marks)
    lines = (out / celeba.LANDMARK_FILE).read_text().splitlines()
    assert lines[0] == "3" and lines[1].split() == list(celeba.LANDMARK_COLUMNS)
    assert lines[2].split() == REAL_FORMAT.splitlines()[2].split()


@pytest.mark.parametrize("text, message", [
    (REAL_FORMAT.replace("3\n", "4\n", 1), "announces 4 images, 3 rows"),
    (REAL_FORMAT.replace("nose_x", "nosex"), "line 2: expected the column names"),
    (REAL_FORMAT.replace("  154\n", "\n"), "line 3: expected '<file> <10 coordinates>'"),
    (REAL_FORMAT.replace("  142", "  1x2"), "line 3: a coordinate is not a number"),
])
def test_landmark_parser_names_file_and_line(tmp_path, text, message):
    (tmp_path / celeba.LANDMARK_FILE).write_text(text)
    with pytest.raises(ValueError, match=message):
        celeba.read_landmarks(tmp_path)


def test_landmark_mask_matches_a_hand_worked_ellipse():
    # eyes (40, 50), (60, 50); mouth corners (44, 70), (56, 70): E = (50, 50), M = (50, 70), h = 20, d = 20.
    # centre E + 0.4 h = (50, 58); semi-axes 1.1 h = 22 down the face, 0.95 d = 19 across it.
    points = np.array([[40, 50], [60, 50], [50, 60], [44, 70], [56, 70]], dtype=float)
    mask = celeba.landmark_face_mask(points, (100, 100))
    assert mask.dtype == np.float32 and set(np.unique(mask)) == {0.0, 1.0}
    assert mask[58, 50] == 1
    assert mask[36, 50] == 1 and mask[35, 50] == 0 and mask[80, 50] == 1 and mask[81, 50] == 0
    assert mask[58, 31] == 1 and mask[58, 30] == 0 and mask[58, 69] == 1 and mask[58, 70] == 0
    assert abs(mask.sum() - math.pi * 22 * 19) < 0.02 * math.pi * 22 * 19
    # a face turned by 90 degrees (eye-mouth axis along +x) gives the transposed mask
    turned = celeba.landmark_face_mask(points[:, ::-1], (100, 100))
    assert np.array_equal(turned, mask.T)
    with pytest.raises(ValueError, match="distinct"):
        celeba.landmark_face_mask(np.zeros((5, 2)), (10, 10))


def test_crop_landmarks_by_hand():
    # 178 x 218 aligned image, central 178 square (rows 20..197) resized to 89: x' = (x + 0.5) / 2 - 0.5
    cropped = celeba.crop_landmarks(np.array([[69, 109]] * 5, dtype=float), (218, 178), 178, None, 89)
    assert np.allclose(cropped[0], [34.25, 44.25])


def test_world_landmarks_sit_on_the_face_features():
    rng = np.random.default_rng(5)
    for _ in range(5):
        params = faces.sample_face(rng)
        geometry = faces.face_geometry(params, 64)
        points = faces.face_landmarks(params, 64)
        columns, rows = np.rint(points).astype(int).T
        iris = np.asarray(params["iris"])
        for r, c in zip(rows[:2], columns[:2]):  # eye centres are on the iris
            assert np.allclose(geometry["albedo"][r, c], iris, atol=1e-6)
        lips = np.asarray(params["lip"])
        for r, c in zip(rows[3:], columns[3:]):  # mouth corners within a pixel of the lips
            window = geometry["albedo"][r - 1:r + 2, c - 1:c + 2].reshape(-1, 3)
            assert np.any(np.all(np.isclose(window, lips, atol=1e-6), axis=1))
        mask = celeba.landmark_face_mask(points, (64, 64)).astype(bool)
        assert (mask & geometry["mask"]).sum() >= 0.98 * mask.sum()  # inside the head
        assert mask.sum() > 0.5 * geometry["mask"].sum()  # and most of it


@pytest.fixture(scope="module")
def world_celeba(tmp_path_factory):
    root = tmp_path_factory.mktemp("celeba")
    faces.write_celeba(root, (6, 1, 1), 32, seed=2)
    return root


def test_world_celeba_writes_the_landmark_file_and_the_reader_masks(world_celeba):
    marks = celeba.read_landmarks(world_celeba)
    assert len(marks) == 8 and all(m.shape == (5, 2) for m in marks.values())
    dataset = celeba.CelebAImages(world_celeba, "train", image_size=32, crop_size=178, mask="landmarks")
    item = dataset[0]
    assert item["mask"].shape == (1, 32, 32) and 0.2 < float(item["mask"].mean()) < 0.8
    assert "mask" not in celeba.CelebAImages(world_celeba, "train", image_size=32, crop_size=178)[0]


def test_landmark_mask_without_the_file_is_an_error_naming_it(tmp_path):
    root = celeba.write_celeba_fixture(tmp_path, counts=(2, 1, 1), images=[np.zeros((20, 20, 3))] * 4)
    assert not (root / celeba.LANDMARK_FILE).exists()
    with pytest.raises(FileNotFoundError, match="list_landmarks_align_celeba.txt"):
        celeba.CelebAImages(root, "train", image_size=32, mask="landmarks")
    with pytest.raises(ValueError, match="face mask 'ellipse'"):
        celeba.CelebAImages(root, "train", image_size=32, mask="ellipse")


def test_pseudo_label_masks_are_the_landmark_face_not_all_ones(world_celeba, tmp_path):
    torch.manual_seed(0)
    dataset = celeba.CelebAImages(world_celeba, "train", image_size=32, crop_size=178, mask="landmarks")
    csv_path = generate_pseudo_labels(SfSNet(width=0.0625, blocks=1), dataset, tmp_path, "train", batch_size=4)
    labelled = celeba.pseudo_labelled_dataset(csv_path, "all", 32)
    assert len(labelled) == 6
    for index in range(len(labelled)):
        mask = labelled[index]["mask"]
        assert 0.2 < float(mask.mean()) < 0.8, "pseudo-label mask covers the whole crop"
        assert torch.equal(mask, dataset[index]["mask"])
    written = read_mask(tmp_path / "train" / "000001_mask.png")
    assert written.mean() < 0.8
    unmasked = celeba.CelebAImages(world_celeba, "train", image_size=32, crop_size=178, mask="none")
    generate_pseudo_labels(SfSNet(width=0.0625, blocks=1), unmasked, tmp_path / "none", "train", batch_size=4)
    assert read_mask(tmp_path / "none" / "train" / "000001_mask.png").min() == 1.0
