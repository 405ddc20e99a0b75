"""A LUNA16-layout folder, and scans preprocessed for training (resampled, masked, cached).

Layout (the real LUNA16 download, and what ``focalmix make-data`` writes)::

    DIR/subset0 .. subsetK/<seriesuid>.mhd + .raw
    DIR/annotations.csv            seriesuid,coordX,coordY,coordZ,diameter_mm
    DIR/annotations_excluded.csv   same columns; findings that count neither way
    DIR/seriesuids.csv             one uid a line, no header
    DIR/unlabeled/                 optional pool: .mhd, .nii(.gz) files, DICOM folders
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from focalmix_lib import atomic
from focalmix_lib.data import luna_csv
from focalmix_lib.data.coordinates import ScanGeometry, world_to_voxel
from focalmix_lib.data.lung_mask import segment_lungs
from focalmix_lib.data.scans import normalize_hu, read_scan, resample_isotropic, scan_uid
from focalmix_lib.errors import KitInputError

# Bump when the preprocessing changes, so that old cache entries are not reused.
_CACHE_VERSION = 1


class Luna16Folder:
    """A folder in the LUNA16 layout. Files are read (and checked) when first used."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        if not self.root.is_dir():
            raise KitInputError(self.root, "data folder not found")

    @cached_property
    def seriesuids(self) -> list[str]:
        """The uids of seriesuids.csv; without that file, those of the subset*/ scans."""
        listed = self.root / "seriesuids.csv"
        if listed.is_file():
            return luna_csv.read_seriesuids(listed)
        return sorted(self._scan_index)

    @cached_property
    def _scan_index(self) -> dict[str, Path]:
        return {scan_uid(p): p for p in sorted(self.root.glob("subset*/*.mhd"))}

    def scan_path(self, uid: str) -> Path:
        """``subset*/<uid>.mhd`` of a series."""
        try:
            return self._scan_index[uid]
        except KeyError:
            raise KitInputError(self.root, f"no scan subset*/{uid}.mhd for series {uid}") from None

    @cached_property
    def annotations(self) -> luna_csv.FindingTable:
        return luna_csv.read_annotations(self.root / "annotations.csv")

    @cached_property
    def excluded(self) -> luna_csv.FindingTable:
        """annotations_excluded.csv; an empty table where the file is absent."""
        path = self.root / "annotations_excluded.csv"
        if not path.exists():
            return luna_csv.FindingTable(path, np.asarray([], dtype=str), np.zeros((0, 3)), np.zeros(0),
                                         np.zeros(0, dtype=np.int64))
        return luna_csv.read_annotations(path, excluded=True)

    def unlabeled_paths(self) -> list[Path]:
        """Scans of DIR/unlabeled/: .mhd, .nii, .nii.gz files and DICOM series folders."""
        folder = self.root / "unlabeled"
        if not folder.is_dir():
            return []
        paths = []
        for entry in sorted(folder.iterdir()):
            if entry.name.startswith("."):
                continue
            if entry.is_dir() or entry.name.endswith((".mhd", ".nii", ".nii.gz")):
                paths.append(entry)
        return paths


def preprocessed_cache_dir(data_dir: str | Path, requested: str | Path | None = None) -> Path:
    """The folder that caches the preprocessed scans of ``data_dir``, created if need be.

    ``requested`` (a run's ``cache_dir``) where given: a KitInputError names it if it
    cannot be written. Else ``<data_dir>/.cache`` where it can be created and written;
    else (read-only data, a common way to keep LUNA16) the per-user
    ``$XDG_CACHE_HOME/focalmix-kit/<key>`` (``~/.cache`` without XDG_CACHE_HOME), key =
    the first 16 hex digits of sha1(resolved data path), with one warning line naming both.
    """
    if requested:
        folder = Path(requested)
        if not _writable_folder(folder, parents=True):
            raise KitInputError(folder, "cache_dir cannot be created or written; choose a writable folder")
        return folder
    data = Path(data_dir)
    default = data / ".cache"
    if _writable_folder(default, parents=False):
        return default
    xdg = os.environ.get("XDG_CACHE_HOME", "")
    base = Path(xdg) if os.path.isabs(xdg) else Path.home() / ".cache"  # the XDG spec ignores relative paths
    fallback = base / "focalmix-kit" / hashlib.sha1(str(data.resolve()).encode()).hexdigest()[:16]
    if not _writable_folder(fallback, parents=True):
        raise KitInputError(default, f"cannot be written, nor can {fallback}; set cache_dir to a writable folder")
    if fallback not in _FALLBACKS_ANNOUNCED:
        _FALLBACKS_ANNOUNCED.add(fallback)
        print(f"focalmix: warning: {default} cannot be written (read-only data?); preprocessed scans are cached "
              f"in {fallback} instead (cache_dir chooses another folder)", file=sys.stderr)
    return fallback


# Fallback cache folders already announced in this process: the warning is given once.
_FALLBACKS_ANNOUNCED: set[Path] = set()


def _writable_folder(folder: Path, *, parents: bool) -> bool:
    """Whether files can be made in ``folder``, created if absent (its parents too if ``parents``).

    The nearest existing folder is asked first, so that nothing is created where the
    answer is no.
    """
    existing = next(p for p in (folder, *folder.parents) if p.exists())
    if not os.access(existing, os.W_OK | os.X_OK):
        return False
    try:
        folder.mkdir(parents=parents, exist_ok=True)
    except OSError:
        return False
    return folder.is_dir() and os.access(folder, os.W_OK | os.X_OK)


@dataclass(frozen=True)
class PreprocessedScan:
    """A scan ready for patch sampling.

    ``volume`` float32 (D, H, W): normalised intensities (``normalize_hu``) on the
    isotropic grid ``geometry``; ``boxes`` float32 (M, 6): (z1, y1, x1, z2, y2, x2)
    voxel boxes, the cube of side diameter / spacing centred on each annotation;
    ``diameters_mm`` float32 (M,); ``lung_mask`` bool (D, H, W).
    """

    uid: str
    volume: NDArray[np.float32]
    geometry: ScanGeometry
    boxes: NDArray[np.float32]
    diameters_mm: NDArray[np.float32]
    lung_mask: NDArray[np.bool_]


def nodule_boxes(world_xyz: NDArray[np.float64], diameters_mm: NDArray[np.float64],
                 geometry: ScanGeometry) -> NDArray[np.float32]:
    """Boxes (M, 6) (z1, y1, x1, z2, y2, x2): centre = world_to_voxel(world), side = d / spacing.

    ``geometry`` must be isotropic (one spacing for all axes).
    """
    world = np.asarray(world_xyz, dtype=np.float64).reshape(-1, 3)
    centres = world_to_voxel(world, geometry).reshape(-1, 3)
    half = (np.asarray(diameters_mm, dtype=np.float64) / geometry.spacing_xyz[0] / 2.0)[:, None]
    return np.concatenate([centres - half, centres + half], axis=1).astype(np.float32)


def load_preprocessed(
    scan_path: str | Path, spacing_mm: float, annotations: luna_csv.FindingTable | None,
    cache_dir: str | Path | None,
) -> PreprocessedScan:
    """Read a scan, resample it to ``spacing_mm``, segment its lungs and place its boxes.

    The resampled HU (int16) and the lung mask are cached in ``cache_dir`` under a key
    made of the file's path, size and mtime and the parameters; a corrupt entry is
    rebuilt. Boxes come from ``annotations`` (rows of this scan's uid) on every call,
    so an edited annotations.csv needs no cache flush.
    """
    scan_path = Path(scan_path)
    uid = scan_uid(scan_path)
    cache_file = _cache_file(scan_path, spacing_mm, Path(cache_dir)) if cache_dir is not None else None
    cached = _read_cache(cache_file) if cache_file is not None else None
    if cached is None:
        hu, geometry, mask = _preprocess(scan_path, spacing_mm)
        if cache_file is not None:
            _write_cache(cache_file, hu, geometry, mask)
    else:
        hu, geometry, mask = cached
    if annotations is not None:
        rows = annotations.for_series(uid)
        boxes = nodule_boxes(rows.world_xyz, rows.value, geometry)
        diameters = rows.value.astype(np.float32)
    else:
        boxes, diameters = np.zeros((0, 6), np.float32), np.zeros(0, np.float32)
    return PreprocessedScan(uid, normalize_hu(hu), geometry, boxes, diameters, mask)


def _preprocess(scan_path: Path, spacing_mm: float) -> tuple[NDArray[np.int16], ScanGeometry, NDArray[np.bool_]]:
    scan = read_scan(scan_path)
    resampled, geometry = resample_isotropic(scan.volume, scan.geometry, spacing_mm)
    hu = np.clip(np.rint(resampled), -32768, 32767).astype(np.int16)
    return hu, geometry, segment_lungs(hu, spacing_mm)


def _cache_file(scan_path: Path, spacing_mm: float, cache_dir: Path) -> Path:
    target = scan_path.resolve()
    stat = (target / "").stat() if target.is_dir() else target.stat()
    if target.suffix == ".mhd":
        # The voxels live in the .raw; a replaced .raw must invalidate the entry too.
        raw = target.with_suffix(".raw")
        stat_raw = raw.stat() if raw.exists() else stat
        stamp = (stat.st_size, stat.st_mtime_ns, stat_raw.st_size, stat_raw.st_mtime_ns)
    else:
        stamp = (stat.st_size, stat.st_mtime_ns)
    key = json.dumps([_CACHE_VERSION, str(target), stamp, float(spacing_mm)])
    digest = hashlib.sha1(key.encode()).hexdigest()[:16]
    return cache_dir / f"{scan_uid(scan_path)}-{spacing_mm:g}mm-{digest}.npz"


def _write_cache(path: Path, hu: NDArray[np.int16], geometry: ScanGeometry, mask: NDArray[np.bool_]) -> None:
    with atomic.atomic_path(path) as tmp:
        np.savez(
            tmp, hu=hu, lung_mask_bits=np.packbits(mask, axis=None),
            shape=np.asarray(geometry.shape_zyx), origin=np.asarray(geometry.origin_xyz),
            spacing=np.asarray(geometry.spacing_xyz), direction=np.asarray(geometry.direction),
        )


def _read_cache(path: Path) -> tuple[NDArray[np.int16], ScanGeometry, NDArray[np.bool_]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path) as entry:
            shape = tuple(int(n) for n in entry["shape"])
            geometry = ScanGeometry(
                shape, tuple(float(v) for v in entry["origin"]), tuple(float(v) for v in entry["spacing"]),  # type: ignore[arg-type]
                tuple(float(v) for v in entry["direction"]),
            )
            hu = entry["hu"]
            count = int(np.prod(shape))
            mask = np.unpackbits(entry["lung_mask_bits"], count=count).astype(bool).reshape(shape)
        if hu.shape != shape or hu.dtype != np.int16:
            return None
        return hu, geometry, mask
    except Exception:  # noqa: BLE001 - any unreadable entry is simply rebuilt
        return None
