"""2D patches and labelled candidate points cut from preprocessed scans (phantoms or LUNA16).

Shared by the AnoGAN and BDCL chapters:

- *normal* axial patches for AnoGAN (no nodule box reaches the patch);
- *bright-blob candidates*: local maxima of the Gaussian-smoothed volume inside the
  lungs above a threshold, the simple candidate generator of a classic CAD system
  (nodules, vessel crossings and bends all produce them);
- *labelled candidates* for BDCL's false-positive reduction: the annotated nodules
  with their kind (``nodule_kinds.csv`` of the phantoms: solid, part-solid,
  ground-glass), vessels (bright blob candidates away from nodules whose Hessian is
  tubular: two strongly negative eigenvalues, one near zero) and other tissue
  (random lung voxels and lung-wall voxels away from nodules).

Centres are integer voxel indices (z, y, x) of the preprocessed volume. A patch of
side S centred on voxel c holds voxels c - S//2 .. c + S//2 - 1 (zero = air outside).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from focalmix_lib.data.coordinates import world_to_voxel
from focalmix_lib.data.dataset import PreprocessedScan
from focalmix_lib.data.patches import extract_patch
from focalmix_lib.errors import KitInputError

NODULE_KINDS = ("solid", "part-solid", "ground-glass")
CANDIDATE_CLASSES = (*NODULE_KINDS, "vessel", "other")


@dataclass(frozen=True)
class NoduleKinds:
    """Rows of ``nodule_kinds.csv``: uid (N,), world (N, 3) mm, diameter (N,) mm, kind, location."""

    seriesuid: NDArray[np.str_]
    world_xyz: NDArray[np.float64]
    diameter_mm: NDArray[np.float64]
    kind: NDArray[np.str_]
    location: NDArray[np.str_]


def read_nodule_kinds(path: str | Path) -> NoduleKinds:
    """Read the phantoms' ``nodule_kinds.csv`` (seriesuid,coordX,coordY,coordZ,diameter_mm,kind,location)."""
    path = Path(path)
    if not path.is_file():
        raise KitInputError(path, "file not found (phantom sets written by focalmix make-data have it)")
    columns = ("seriesuid", "coordX", "coordY", "coordZ", "diameter_mm", "kind", "location")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise KitInputError(path, f"missing column(s) {missing}", row=1)
        uids, world, diameters, kinds, locations = [], [], [], [], []
        for row_number, row in enumerate(reader, start=2):
            try:
                world.append([float(row["coordX"]), float(row["coordY"]), float(row["coordZ"])])
                diameters.append(float(row["diameter_mm"]))
            except (TypeError, ValueError):
                raise KitInputError(path, "coordinates and diameter_mm must be numbers", row=row_number) from None
            if row["kind"] not in NODULE_KINDS:
                raise KitInputError(path, f"unknown kind {row['kind']!r}; expected one of {NODULE_KINDS}",
                                    row=row_number)
            uids.append(row["seriesuid"])
            kinds.append(row["kind"])
            locations.append(row["location"])
    return NoduleKinds(np.asarray(uids, dtype=str), np.asarray(world, dtype=np.float64).reshape(-1, 3),
                       np.asarray(diameters), np.asarray(kinds, dtype=str), np.asarray(locations, dtype=str))


def orthogonal_patches(volume: NDArray[np.floating], centre_zyx: NDArray[np.integer], size: int) -> NDArray[np.float32]:
    """(3, size, size): the axial, coronal and sagittal planes through ``centre_zyx``.

    Three planes tell a tube (round in one plane, elongated in another) from a blob
    (round in all three) at the cost of 2D convolutions.
    """
    half = size // 2
    cube = extract_patch(volume, np.asarray(centre_zyx, dtype=np.int64) - half, size)
    return np.stack([cube[half], cube[:, half], cube[:, :, half]])


def axial_patch(volume: NDArray[np.floating], centre_zyx: NDArray[np.integer], size: int) -> NDArray[np.float32]:
    """(size, size): the axial slice through ``centre_zyx``, centred on it."""
    centre = np.asarray(centre_zyx, dtype=np.int64)
    half = size // 2
    slab = extract_patch(volume[int(centre[0]): int(centre[0]) + 1], np.r_[-half, centre[1:] - half], size)
    return slab[half]


def distance_to_nodules(points_zyx: NDArray[np.floating], boxes: NDArray[np.floating]) -> NDArray[np.float64]:
    """(N,) distance in voxels from each point to the nearest nodule *surface*
    (centre distance minus half the box side); +inf without nodules."""
    points = np.asarray(points_zyx, dtype=np.float64).reshape(-1, 3)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if len(boxes) == 0:
        return np.full(len(points), np.inf)
    centres, radii = (boxes[:, :3] + boxes[:, 3:]) / 2.0, (boxes[:, 3] - boxes[:, 0]) / 2.0
    gaps = np.linalg.norm(points[:, None, :] - centres[None], axis=2) - radii[None]
    return gaps.min(axis=1)


def axial_patch_is_nodule_free(centres_zyx: NDArray[np.integer], boxes: NDArray[np.floating], size: int,
                               margin: float = 1.0) -> NDArray[np.bool_]:
    """(N,) whether no nodule box (grown by ``margin`` voxels) meets the axial patch of
    side ``size`` centred on each point."""
    centres = np.asarray(centres_zyx, dtype=np.float64).reshape(-1, 3)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 6)
    if len(boxes) == 0:
        return np.ones(len(centres), dtype=bool)
    half = size // 2
    lo = np.stack([centres[:, 0] - 0.5, centres[:, 1] - half - 0.5, centres[:, 2] - half - 0.5], axis=1)
    hi = np.stack([centres[:, 0] + 0.5, centres[:, 1] + half - 0.5, centres[:, 2] + half - 0.5], axis=1)
    meets = np.all((boxes[None, :, :3] - margin < hi[:, None]) & (boxes[None, :, 3:] + margin > lo[:, None]), axis=2)
    return ~meets.any(axis=1)


def smoothed_volume(scan: PreprocessedScan, sigma_voxels: float = 1.0) -> NDArray[np.float32]:
    """The scan's volume after a Gaussian filter of ``sigma_voxels``."""
    return ndimage.gaussian_filter(scan.volume.astype(np.float32), sigma_voxels)


def bright_blob_candidates(smoothed: NDArray[np.floating], lung_mask: NDArray[np.bool_], threshold: float,
                           min_distance: int = 3, max_candidates: int = 200,
                           mask_dilation: int = 0) -> tuple[NDArray[np.int64], NDArray[np.float64]]:
    """Candidate points: local maxima (in a cube of side 2 * min_distance + 1) of the
    smoothed volume that lie inside the lungs and exceed ``threshold``. ``mask_dilation``
    grows the lung mask by that many voxels first, so that nodules on the pleura, which
    the lung mask may leave out, are still found.

    Returns centres (N, 3) int voxel (z, y, x) and their smoothed intensities (N,),
    brightest first, at most ``max_candidates``.
    """
    peaks = smoothed == ndimage.maximum_filter(smoothed, size=2 * min_distance + 1)
    if mask_dilation > 0:
        lung_mask = ndimage.binary_dilation(lung_mask, iterations=mask_dilation)
    points = np.argwhere(peaks & lung_mask & (smoothed > threshold))
    values = smoothed[tuple(points.T)].astype(np.float64)
    order = np.argsort(-values, kind="stable")[:max_candidates]
    return points[order].astype(np.int64), values[order]


def hessian_eigenvalues(smoothed: NDArray[np.floating], points_zyx: NDArray[np.integer]) -> NDArray[np.float64]:
    """(N, 3) eigenvalues of the Hessian (central differences) of ``smoothed`` at each
    interior point, sorted by magnitude |l1| <= |l2| <= |l3|."""
    v = np.asarray(smoothed, dtype=np.float64)
    p = np.clip(np.asarray(points_zyx, dtype=np.int64).reshape(-1, 3), 1, np.asarray(v.shape) - 2)
    unit = np.eye(3, dtype=np.int64)

    def at(offset: NDArray[np.int64]) -> NDArray[np.float64]:
        return v[tuple((p + offset).T)]

    hessian = np.empty((len(p), 3, 3))
    for a in range(3):
        hessian[:, a, a] = at(unit[a]) - 2 * at(0 * unit[a]) + at(-unit[a])
        for b in range(a + 1, 3):
            mixed = (at(unit[a] + unit[b]) - at(unit[a] - unit[b]) - at(unit[b] - unit[a]) + at(-unit[a] - unit[b])) / 4
            hessian[:, a, b] = hessian[:, b, a] = mixed
    eig = np.linalg.eigvalsh(hessian)
    return np.take_along_axis(eig, np.argsort(np.abs(eig), axis=1), axis=1)


def is_tubular(eigenvalues: NDArray[np.float64], ratio: float = 0.5) -> NDArray[np.bool_]:
    """A bright tube: l2, l3 < 0 and |l1| < ratio * |l2| (Frangi-style vesselness test)."""
    l1, l2, l3 = eigenvalues.T
    return (l2 < 0) & (l3 < 0) & (np.abs(l1) < ratio * np.abs(l2))


def lung_wall_voxels(lung_mask: NDArray[np.bool_]) -> NDArray[np.int64]:
    """(N, 3) lung voxels on the mask's boundary (the mask minus its erosion)."""
    return np.argwhere(lung_mask & ~ndimage.binary_erosion(lung_mask))


def normal_patch_centres(scan: PreprocessedScan, count: int, size: int, rng: np.random.Generator,
                         smoothed: NDArray[np.floating] | None = None, threshold: float = 0.45,
                         blob_share: float = 0.5) -> NDArray[np.int64]:
    """Up to ``count`` centres (N, 3) whose axial patch holds no nodule: a ``blob_share``
    of bright-blob candidates (vessels, as the detector will meet them), the rest
    random lung voxels."""
    smoothed = smoothed_volume(scan) if smoothed is None else smoothed
    blobs, _ = bright_blob_candidates(smoothed, scan.lung_mask, threshold, max_candidates=10 * count)
    blobs = blobs[axial_patch_is_nodule_free(blobs, scan.boxes, size)]
    n_blobs = min(len(blobs), int(round(blob_share * count)))
    lung = np.argwhere(scan.lung_mask)
    lung = lung[rng.choice(len(lung), size=min(len(lung), 4 * count), replace=False)] if len(lung) else lung
    lung = lung[axial_patch_is_nodule_free(lung, scan.boxes, size)]
    chosen = [blobs[rng.choice(len(blobs), n_blobs, replace=False)], lung[: count - n_blobs]]
    return np.concatenate(chosen).astype(np.int64)


def nodule_centres(scan: PreprocessedScan) -> NDArray[np.int64]:
    """(M, 3) voxel centres of the scan's nodule boxes, rounded."""
    boxes = np.asarray(scan.boxes, dtype=np.float64).reshape(-1, 6)
    return np.rint((boxes[:, :3] + boxes[:, 3:]) / 2.0).astype(np.int64)


def stack_axial_patches(scan: PreprocessedScan, centres_zyx: NDArray[np.integer], size: int) -> NDArray[np.float32]:
    """(N, 1, size, size) axial patches of one scan."""
    patches = [axial_patch(scan.volume, c, size) for c in np.asarray(centres_zyx).reshape(-1, 3)]
    return np.stack(patches)[:, None] if patches else np.zeros((0, 1, size, size), np.float32)


@dataclass(frozen=True)
class CandidateSet:
    """Labelled candidates: ``patches`` (N, 3, S, S) float32 (``orthogonal_patches``),
    ``labels`` (N,) int64 indices into ``class_names``, ``seriesuid`` (N,) and
    ``centres_zyx`` (N, 3) int voxel."""

    patches: NDArray[np.float32]
    labels: NDArray[np.int64]
    seriesuid: NDArray[np.str_]
    centres_zyx: NDArray[np.int64]
    class_names: tuple[str, ...] = CANDIDATE_CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        """Number of candidates per class, in class order."""
        return dict(zip(self.class_names, np.bincount(self.labels, minlength=len(self.class_names)).tolist()))

    def subset(self, keep: NDArray[np.bool_]) -> "CandidateSet":
        return CandidateSet(self.patches[keep], self.labels[keep], self.seriesuid[keep], self.centres_zyx[keep],
                            self.class_names)


def scan_candidates(scan: PreprocessedScan, kinds: NoduleKinds, patch_size: int, rng: np.random.Generator,
                    vessels: int = 10, others: int = 10, threshold: float = 0.45,
                    min_gap_voxels: float = 3.0) -> CandidateSet:
    """Labelled candidates of one scan: its nodules (labelled with their kind), up to
    ``vessels`` tubular bright blobs and ``others`` random lung / lung-wall voxels (half
    each), all non-nodule candidates at least ``min_gap_voxels`` from any nodule surface."""
    rows = kinds.seriesuid == scan.uid
    nodules = np.rint(world_to_voxel(kinds.world_xyz[rows], scan.geometry).reshape(-1, 3)).astype(np.int64)
    nodule_labels = np.asarray([CANDIDATE_CLASSES.index(k) for k in kinds.kind[rows]], dtype=np.int64)

    smoothed = smoothed_volume(scan)
    blobs, _ = bright_blob_candidates(smoothed, scan.lung_mask, threshold, max_candidates=20 * max(vessels, 1))
    blobs = blobs[(distance_to_nodules(blobs, scan.boxes) > min_gap_voxels)]
    tubes = blobs[is_tubular(hessian_eigenvalues(smoothed, blobs))] if len(blobs) else blobs
    tubes = tubes[rng.permutation(len(tubes))[:vessels]]

    pools = [np.argwhere(scan.lung_mask), lung_wall_voxels(scan.lung_mask)]
    other = []
    for pool, share in zip(pools, (others - others // 2, others // 2)):
        pool = pool[rng.choice(len(pool), size=min(len(pool), 4 * share + 1), replace=False)] if len(pool) else pool
        other.append(pool[distance_to_nodules(pool, scan.boxes) > min_gap_voxels][:share])
    others_arr = np.concatenate(other).reshape(-1, 3)

    centres = np.concatenate([nodules, tubes.reshape(-1, 3), others_arr]).astype(np.int64)
    labels = np.concatenate([nodule_labels, np.full(len(tubes), CANDIDATE_CLASSES.index("vessel")),
                             np.full(len(others_arr), CANDIDATE_CLASSES.index("other"))]).astype(np.int64)
    patches = (np.stack([orthogonal_patches(scan.volume, c, patch_size) for c in centres]) if len(centres)
               else np.zeros((0, 3, patch_size, patch_size), np.float32))
    return CandidateSet(patches, labels, np.full(len(centres), scan.uid), centres)


def concatenate_candidates(sets: list[CandidateSet]) -> CandidateSet:
    """One CandidateSet of several (same classes)."""
    return CandidateSet(np.concatenate([s.patches for s in sets]), np.concatenate([s.labels for s in sets]),
                        np.concatenate([s.seriesuid for s in sets]), np.concatenate([s.centres_zyx for s in sets]),
                        sets[0].class_names)
