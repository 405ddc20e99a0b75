"""World (x, y, z) millimetres <-> voxel (z, y, x) indices: the one conversion pair.

Voxel coordinates are *continuous indices* in array order (z, y, x): the centre of
voxel ``volume[k, j, i]`` is at exactly ``(k, j, i)``, as in SimpleITK's
``TransformPhysicalPointToContinuousIndex`` (which orders them x, y, z). World
coordinates appear only at the file boundary (LUNA16 CSVs) and follow ITK:

    world_xyz = origin_xyz + direction @ (spacing_xyz * index_xyz)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray


@dataclass(frozen=True)
class ScanGeometry:
    """Where a volume's voxels lie in the world.

    ``direction`` holds the 3x3 direction-cosine matrix row-major, exactly as
    ``SimpleITK.Image.GetDirection()`` returns it (columns are the x, y, z index axes).
    """

    shape_zyx: tuple[int, int, int]
    origin_xyz: tuple[float, float, float]
    spacing_xyz: tuple[float, float, float]
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)

    @property
    def spacing_zyx(self) -> tuple[float, float, float]:
        x, y, z = self.spacing_xyz
        return (z, y, x)

    @property
    def direction_matrix(self) -> NDArray[np.float64]:
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    def resampled(self, spacing_mm: float) -> "ScanGeometry":
        """Geometry of the same scan resampled to isotropic ``spacing_mm``.

        The first voxel centre (the origin) and the axes stay where they are; the
        grid keeps the physical extent of the original, rounded to whole voxels.
        """
        shape = tuple(
            max(1, int(round(n * s / spacing_mm))) for n, s in zip(self.shape_zyx, self.spacing_zyx)
        )
        return ScanGeometry(shape, self.origin_xyz, (spacing_mm,) * 3, self.direction)  # type: ignore[arg-type]


def world_to_voxel(world_xyz: ArrayLike, geometry: ScanGeometry) -> NDArray[np.float64]:
    """Continuous voxel index (z, y, x) of world points (x, y, z) in mm.

    Shapes: ``(3,)`` -> ``(3,)`` or ``(N, 3)`` -> ``(N, 3)``.
    """
    points = np.asarray(world_xyz, dtype=np.float64)
    offset = points - np.asarray(geometry.origin_xyz, dtype=np.float64)
    index_xyz = np.linalg.solve(geometry.direction_matrix, offset.T).T / np.asarray(geometry.spacing_xyz)
    return index_xyz[..., ::-1].copy()


def voxel_to_world(voxel_zyx: ArrayLike, geometry: ScanGeometry) -> NDArray[np.float64]:
    """World points (x, y, z) in mm of continuous voxel indices (z, y, x).

    Shapes: ``(3,)`` -> ``(3,)`` or ``(N, 3)`` -> ``(N, 3)``.
    """
    index_xyz = np.asarray(voxel_zyx, dtype=np.float64)[..., ::-1] * np.asarray(geometry.spacing_xyz)
    return (geometry.direction_matrix @ index_xyz.T).T + np.asarray(geometry.origin_xyz, dtype=np.float64)
