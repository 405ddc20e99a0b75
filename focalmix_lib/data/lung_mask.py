"""A simple lung mask from HU thresholds: where patches of the lungs can be drawn from.

It needs to be good enough to keep random patches inside the chest, not to be a
segmentation benchmark: air below -400 HU that does not touch the in-plane border of
the scan (the air around the body does), in large connected pieces, with the holes of
each axial slice (vessels, nodules) filled.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

AIR_THRESHOLD_HU = -400
MIN_COMPONENT_MM3 = 5000.0  # 5 cm^3: drops bowel gas and noise, keeps any lung


def segment_lungs(hu: NDArray, spacing_mm: float) -> NDArray[np.bool_]:
    """Lung mask (D, H, W) bool of an isotropic HU volume (D, H, W) of voxel side ``spacing_mm``."""
    air = np.asarray(hu) < AIR_THRESHOLD_HU
    labels, count = ndimage.label(air)
    if count == 0:
        return np.zeros(air.shape, dtype=bool)
    outside = np.unique(np.concatenate([
        labels[:, 0, :].ravel(), labels[:, -1, :].ravel(), labels[:, :, 0].ravel(), labels[:, :, -1].ravel(),
    ]))
    sizes = np.bincount(labels.ravel(), minlength=count + 1)
    keep = sizes * spacing_mm**3 >= MIN_COMPONENT_MM3
    keep[outside] = False
    keep[0] = False
    mask = keep[labels]
    in_plane = np.zeros((1, 3, 3), dtype=bool)
    in_plane[0] = ndimage.generate_binary_structure(2, 1)
    return ndimage.binary_fill_holes(mask, structure=in_plane)
