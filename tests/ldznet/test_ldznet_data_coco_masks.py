"""COCO RLE and polygon masks (pycocotools, as refer's getMask) checked against hand-worked examples and a
second, independent pixel-centre rasteriser (formats.md §12)."""

import numpy as np
import pytest

from ldznet.data.coco_masks import (
    decode_rle,
    encode_rle,
    mask_to_counts,
    polygon_to_mask,
    rle_string_to_counts,
    segmentation_to_mask,
)


def _counts_to_mask(counts, height, width):
    """Second method: expand column-major run lengths (zeros first) with numpy."""
    values = (np.arange(len(counts)) % 2).astype(np.uint8)
    return np.repeat(values, counts).reshape(width, height).T


def test_compressed_string_hand_worked():
    # 5 -> '5'; 40 = 8 + 1*32 -> chars (8|0x20)+48 = 'X', 1+48 = '1'; 3 -> '3';
    # index 3 is stored as 38 - counts[1] = -2 -> 5-bit two's complement 30 -> chr(78) = 'N'.
    mask = _counts_to_mask([5, 40, 3, 38], 2, 43)
    assert encode_rle(mask) == {"size": [2, 43], "counts": "5X13N"}  # pycocotools' encoder
    assert np.array_equal(decode_rle({"size": [2, 43], "counts": "5X13N"}), mask)  # and its decoder
    assert rle_string_to_counts("5X13N") == [5, 40, 3, 38]
    assert rle_string_to_counts(b"5X13N") == [5, 40, 3, 38]
    # 16 has bit 0x10 set, so it needs a continuation char: (16|0x20)+48 = '`', then '0'.
    assert encode_rle(np.zeros((4, 4), np.uint8))["counts"] == "`0"
    assert rle_string_to_counts("`0") == [16]


def test_decode_uncompressed_and_compressed_column_major():
    # size [H=2, W=3], runs 1 zero, 2 ones, 3 zeros over the column-major order:
    # flat F-order [0, 1, 1, 0, 0, 0] -> column 0 = (0, 1), column 1 = (1, 0), column 2 = (0, 0).
    expected = np.array([[0, 1, 0], [1, 0, 0]], dtype=np.uint8)
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": [1, 2, 3]}), expected)
    assert np.array_equal(decode_rle({"size": [2, 3], "counts": "123"}), expected)
    assert mask_to_counts(expected) == [1, 2, 3]
    # A mask starting with foreground begins with a zero-length run of zeros.
    assert mask_to_counts(np.ones((2, 2), np.uint8)) == [0, 4]


def test_rle_round_trip_random_masks():
    rng = np.random.default_rng(0)
    for _ in range(50):
        height, width = rng.integers(1, 30, size=2)
        mask = (rng.random((height, width)) > rng.random()).astype(np.uint8)
        for compressed in (True, False):
            rle = encode_rle(mask, compressed=compressed)
            assert rle["size"] == [height, width]
            assert np.array_equal(decode_rle(rle), mask)
        counts = mask_to_counts(mask)
        assert np.array_equal(_counts_to_mask(counts, height, width), mask)
        assert rle_string_to_counts(encode_rle(mask)["counts"]) == counts  # library encoder = our run lengths


def test_rle_bad_counts_name_the_problem():
    with pytest.raises(ValueError, match="sum to 5 but size 2x3 needs 6"):
        decode_rle({"size": [2, 3], "counts": [1, 2, 2]}, where="ann 7")
    with pytest.raises(ValueError, match="ann 7"):
        decode_rle({"size": [2], "counts": [6]}, where="ann 7")
    with pytest.raises(ValueError, match="invalid character"):
        rle_string_to_counts("12 3")
    # pycocotools alone would decode runs that fall short of H x W from uninitialised memory
    with pytest.raises(ValueError, match="ann 8: RLE counts sum to 3 but size 2x3 needs 6"):
        decode_rle({"size": [2, 3], "counts": "12"}, where="ann 8")


def test_polygon_rectangle_is_half_open():
    # formats.md §1/§12 probe: rect (1,1)-(6,4) in an 8x6 image -> 15 px with pycocotools.
    mask = polygon_to_mask([1, 1, 6, 1, 6, 4, 1, 4], 6, 8)
    expected = np.zeros((6, 8), np.uint8)
    expected[1:4, 1:6] = 1
    assert np.array_equal(mask, expected)
    # Orientation does not matter.
    assert np.array_equal(polygon_to_mask([1, 1, 1, 4, 6, 4, 6, 1], 6, 8), expected)


@pytest.mark.parametrize("x0,y0,x1,y1", [(0, 0, 3, 2), (2, 1, 9, 7), (4, 0, 5, 10), (0, 3, 12, 4)])
def test_integer_rectangles_cover_x0_to_x1_minus_1(x0, y0, x1, y1):
    mask = polygon_to_mask([x0, y0, x1, y0, x1, y1, x0, y1], 10, 12)
    expected = np.zeros((10, 12), np.uint8)
    expected[y0:y1, x0:x1] = 1
    assert np.array_equal(mask, expected)


def test_polygon_clipped_to_image_and_area_matches_shoelace():
    # A rectangle partly outside the image is clipped.
    mask = polygon_to_mask([-3, -2, 4, -2, 4, 3, -3, 3], 6, 8)
    assert mask.sum() == 4 * 3 and mask[:3, :4].all()
    # A large triangle: pixel count within the boundary band of the exact (shoelace) area.
    xy = [5.3, 4.1, 90.7, 12.2, 40.2, 75.9]
    mask = polygon_to_mask(xy, 80, 100)
    x, y = np.array(xy[0::2]), np.array(xy[1::2])
    area = 0.5 * abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))
    perimeter = np.hypot(np.diff(np.append(x, x[0])), np.diff(np.append(y, y[0]))).sum()
    assert abs(int(mask.sum()) - area) < 0.5 * perimeter
    # The pixel at the centroid is inside, a far corner is not.
    assert mask[int(round(y.mean())), int(round(x.mean()))] == 1 and mask[79, 0] == 0


def test_polygon_rejects_bbox_like_parts():
    with pytest.raises(ValueError, match=r"ann 3\[0\].*>= 6"):
        segmentation_to_mask([[1, 2, 3, 4]], 5, 5, where="ann 3")


def test_segmentation_union_of_parts_and_rle():
    parts = [[0, 0, 4, 0, 4, 4, 0, 4], [2, 2, 6, 2, 6, 5, 2, 5]]  # overlapping squares
    mask = segmentation_to_mask(parts, 6, 8)
    expected = np.zeros((6, 8), np.uint8)
    expected[0:4, 0:4] = 1
    expected[2:5, 2:6] = 1
    assert np.array_equal(mask, expected) and mask.max() == 1
    rle = encode_rle(expected)
    assert np.array_equal(segmentation_to_mask(rle, 6, 8), expected)
    with pytest.raises(ValueError, match="differs from the image size"):
        segmentation_to_mask(rle, 8, 6)


def _centre_inside_and_boundary_distance(xy, height, width):
    """Second method: even-odd test of each pixel centre and its distance to the polygon outline.

    COCO coordinates name pixel corners: pixel (row r, column c) covers [c, c+1) x [r, r+1).
    """
    pts = np.asarray(xy, dtype=np.float64).reshape(-1, 2)
    ys, xs = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    inside = np.zeros((height, width), bool)
    distance = np.full((height, width), np.inf)
    for (x0, y0), (x1, y1) in zip(pts, np.roll(pts, -1, axis=0)):
        crosses = (y0 > ys) != (y1 > ys)
        with np.errstate(divide="ignore", invalid="ignore"):
            x_at = x0 + (ys - y0) * (x1 - x0) / (y1 - y0)
        inside ^= crosses & (xs < x_at)
        dx, dy = x1 - x0, y1 - y0
        t = np.clip(((xs - x0) * dx + (ys - y0) * dy) / (dx * dx + dy * dy), 0, 1)
        distance = np.minimum(distance, np.hypot(xs - (x0 + t * dx), ys - (y0 + t * dy)))
    return inside, distance


def test_random_polygons_agree_with_a_pixel_centre_test_away_from_the_outline():
    rng = np.random.default_rng(3)
    for _ in range(20):
        n = int(rng.integers(3, 7))
        angles = np.sort(rng.uniform(0, 2 * np.pi, n))
        radii = rng.uniform(5, 14, n)
        xy = np.stack([15 + radii * np.cos(angles), 12 + radii * np.sin(angles)], axis=1).ravel().tolist()
        mask = polygon_to_mask(xy, 24, 32).astype(bool)
        inside, distance = _centre_inside_and_boundary_distance(xy, 24, 32)
        disagree = mask != inside
        # pycocotools snaps vertices to a 1/5-pixel grid, so only pixels next to the outline may differ.
        assert distance[disagree].max(initial=0.0) < 0.25
        assert inside.sum() > 0 and disagree.sum() < inside.sum()


def _refer_get_mask(segmentation, height, width):
    """refer's getMask with pycocotools (docs/ref-ldznet.md §5): frPyObjects -> decode -> sum -> foreground."""
    from pycocotools import mask as coco_mask

    if isinstance(segmentation, list) or isinstance(segmentation["counts"], list):
        rle = coco_mask.frPyObjects(segmentation, height, width)
    else:
        rle = segmentation
    decoded = coco_mask.decode(rle)
    return (decoded.reshape(height, width, -1).sum(axis=2) > 0).astype(np.uint8)


def test_masks_are_pycocotools_masks_as_refer_draws_them(monkeypatch):
    """Issue 12 item 5: RefCOCO masks come from pycocotools itself (not a re-implementation of it)."""
    import ldznet.data.coco_masks as coco_masks

    rng = np.random.default_rng(11)
    for _ in range(30):
        parts = [rng.uniform(-4, 40, 2 * int(rng.integers(3, 9))).tolist() for _ in range(int(rng.integers(1, 4)))]
        assert np.array_equal(segmentation_to_mask(parts, 30, 36), _refer_get_mask(parts, 30, 36))
        crowd = (rng.random((30, 36)) > 0.7).astype(np.uint8)
        for compressed in (True, False):
            rle = encode_rle(crowd, compressed=compressed)
            assert np.array_equal(segmentation_to_mask(rle, 30, 36), _refer_get_mask(rle, 30, 36))
    calls = []
    decode = coco_masks.coco_mask.decode
    monkeypatch.setattr(coco_masks.coco_mask, "decode", lambda rle: calls.append(rle) or decode(rle))
    segmentation_to_mask([[1, 1, 6, 1, 6, 4, 1, 4]], 6, 8)
    decode_rle({"size": [2, 3], "counts": [1, 2, 3]})
    assert len(calls) == 2
