"""world <-> voxel: round trips and agreement with SimpleITK."""

import numpy as np
import SimpleITK as sitk

from focalmix_lib.data.coordinates import ScanGeometry, voxel_to_world, world_to_voxel


def _oblique_geometry() -> ScanGeometry:
    a = np.deg2rad(20.0)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    flip = np.diag([1.0, -1.0, -1.0])
    direction = tuple(float(v) for v in (rz @ flip).reshape(-1))
    return ScanGeometry((40, 60, 70), (-171.3, -185.9, -312.5), (0.68, 0.68, 2.5), direction)


def test_round_trip_anisotropic_origin_direction():
    g = _oblique_geometry()
    rng = np.random.default_rng(0)
    voxels = rng.uniform(-5, 80, size=(100, 3))
    np.testing.assert_allclose(world_to_voxel(voxel_to_world(voxels, g), g), voxels, atol=1e-9)
    world = rng.uniform(-300, 100, size=(100, 3))
    np.testing.assert_allclose(voxel_to_world(world_to_voxel(world, g), g), world, atol=1e-9)
    # The origin is the centre of voxel (0, 0, 0); one step along x moves spacing_x along direction column 0.
    np.testing.assert_allclose(voxel_to_world([0, 0, 0], g), g.origin_xyz)
    step = voxel_to_world([0, 0, 1], g) - np.asarray(g.origin_xyz)
    np.testing.assert_allclose(step, g.direction_matrix[:, 0] * 0.68)


def test_matches_simpleitk_continuous_index():
    g = _oblique_geometry()
    image = sitk.Image(g.shape_zyx[2], g.shape_zyx[1], g.shape_zyx[0], sitk.sitkInt16)
    image.SetOrigin(g.origin_xyz)
    image.SetSpacing(g.spacing_xyz)
    image.SetDirection(g.direction)
    rng = np.random.default_rng(1)
    for voxel in rng.uniform(0, 40, size=(20, 3)):
        world = voxel_to_world(voxel, g)
        index_xyz = image.TransformPhysicalPointToContinuousIndex(tuple(world))
        np.testing.assert_allclose(index_xyz[::-1], voxel, atol=1e-7)
        np.testing.assert_allclose(image.TransformContinuousIndexToPhysicalPoint(tuple(voxel[::-1])), world, atol=1e-7)


def test_resampled_keeps_origin_and_extent():
    g = ScanGeometry((40, 100, 120), (-170.0, -160.0, -300.0), (0.7, 0.7, 2.5))
    r = g.resampled(1.0)
    assert r.origin_xyz == g.origin_xyz and r.spacing_xyz == (1.0, 1.0, 1.0)
    assert r.shape_zyx == (100, 70, 84)
    # A world point keeps its position: voxel coordinates scale by old / new spacing.
    world = voxel_to_world([10.0, 20.0, 30.0], g)
    np.testing.assert_allclose(world_to_voxel(world, r), [25.0, 14.0, 21.0])
