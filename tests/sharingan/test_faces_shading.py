"""sh_shading against values worked out by hand (SH constants and ordering of docs/ref-sharingan.md §1.6)."""

import math

import pytest
import torch

from sharingan.models.sfsnet import decode_normals, encode_normals, render, sh_shading

# Constants by hand: c1 = pi / sqrt(4 pi) = sqrt(pi) / 2; c2 = (2 pi / 3) sqrt(3 / (4 pi));
# c3 = (pi / 4) (1/2) sqrt(5 / (4 pi)); c4 = (pi / 4) 3 sqrt(5 / (12 pi)); c5 = (pi / 4) 3 sqrt(5 / (48 pi)).
C1, C2, C3, C4, C5 = 0.886227, 1.023327, 0.247708, 0.858086, 0.429043


def normals_image(vectors):
    """List of (x, y, z) -> (1,3,1,N) normal image."""
    return torch.tensor(vectors, dtype=torch.float64).T.reshape(1, 3, 1, len(vectors))


def one_hot_lighting(red: int, green: int, blue: int) -> torch.Tensor:
    lighting = torch.zeros(1, 27, dtype=torch.float64)
    lighting[0, red] = lighting[0, 9 + green] = lighting[0, 18 + blue] = 1.0
    return lighting


AXES = [(1, 0, 0), (0, 1, 0), (0, 0, 1), (0, 0, -1)]


@pytest.mark.parametrize("k, expected", [
    (0, [C1, C1, C1, C1]),                     # constant band
    (1, [0, 0, C2, -C2]),                      # c2 nz
    (2, [C2, 0, 0, 0]),                        # c2 nx
    (3, [0, C2, 0, 0]),                        # c2 ny
    (4, [-C3, -C3, 2 * C3, 2 * C3]),           # c3 (2 nz^2 - nx^2 - ny^2)
    (5, [0, 0, 0, 0]),                         # c4 nx nz
    (7, [C5, -C5, 0, 0]),                      # c5 (nx^2 - ny^2)
])
def test_each_basis_function_on_axis_aligned_normals(k, expected):
    shading = sh_shading(normals_image(AXES), one_hot_lighting(k, k, k))
    for channel in range(3):
        assert shading[0, channel, 0].tolist() == pytest.approx(expected, abs=1e-5)


def test_mixed_products_and_channel_ordering():
    diagonal = 1 / math.sqrt(2)
    normals = normals_image([(diagonal, 0, diagonal), (0, diagonal, diagonal), (diagonal, diagonal, 0)])
    # red <- k=5 (c4 nx nz), green <- k=6 (c4 ny nz), blue <- k=8 (c4 nx ny): each is c4 / 2 at its own normal.
    shading = sh_shading(normals, one_hot_lighting(5, 6, 8))
    assert shading[0, 0, 0].tolist() == pytest.approx([C4 / 2, 0, 0], abs=1e-5)
    assert shading[0, 1, 0].tolist() == pytest.approx([0, C4 / 2, 0], abs=1e-5)
    assert shading[0, 2, 0].tolist() == pytest.approx([0, 0, C4 / 2], abs=1e-5)


def real_sh(direction):
    """Standard real SH Y_k(d) in the SfSNet order [1, z, x, y, 3z^2-1, xz, yz, x^2-y^2, xy] (textbook constants)."""
    x, y, z = direction
    return [0.282095, 0.488603 * z, 0.488603 * x, 0.488603 * y, 0.315392 * (3 * z * z - 1),
            1.092548 * x * z, 1.092548 * y * z, 0.546274 * (x * x - y * y), 1.092548 * x * y]


@pytest.mark.parametrize("direction", [(0, 0, 1), (0.6, 0.0, 0.8), (0.36, -0.48, 0.8)])
def test_point_light_irradiance_follows_the_addition_theorem(direction):
    """A light from d has SH coefficients Y_k(d); by the addition theorem the order-2 irradiance is
    1/4 + 1/2 cos + 5/16 (3 cos^2 - 1) / 2: 17/16 facing the light, 3/32 at 90 degrees, 1/16 facing away."""
    d = torch.tensor(direction, dtype=torch.float64)
    perpendicular = torch.linalg.cross(d, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    perpendicular = perpendicular / perpendicular.norm()
    lighting = torch.tensor(real_sh(direction) * 3, dtype=torch.float64)[None]
    shading = sh_shading(normals_image([d.tolist(), perpendicular.tolist(), (-d).tolist()]), lighting)
    assert shading[0, 1, 0].tolist() == pytest.approx([17 / 16, 3 / 32, 1 / 16], abs=1e-5)


def test_render_decodes_normals_and_multiplies_albedo():
    encoded = encode_normals(normals_image([(0, 0, 1), (1, 0, 0)]))
    assert torch.allclose(decode_normals(encoded), normals_image([(0, 0, 1), (1, 0, 0)]))
    albedo = torch.full((1, 3, 1, 2), 0.5, dtype=torch.float64)
    shading, reconstruction = render(encoded, albedo, one_hot_lighting(0, 0, 0))
    assert torch.allclose(reconstruction, 0.5 * shading)
    assert torch.allclose(shading, torch.full_like(shading, C1), atol=1e-5)


def test_shape_errors_name_the_argument():
    with pytest.raises(ValueError, match="lighting must be"):
        sh_shading(torch.zeros(1, 3, 2, 2), torch.zeros(1, 9))
    with pytest.raises(ValueError, match="normals must be"):
        sh_shading(torch.zeros(1, 2, 2, 2), torch.zeros(1, 27))
