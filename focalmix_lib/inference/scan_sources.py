"""Which scans to detect in: a user's own scans, or chosen subsets of a LUNA16-layout folder.

A path given by a user may be a scan file (``.mhd``, ``.mha``, ``.nii``, ``.nii.gz``),
a DICOM series folder, a folder of scan files (or of DICOM series folders), or a
LUNA16-layout folder (``subset*/*.mhd``). Every problem is a KitInputError naming the
path, raised before any scan is read in full; ``.mhd`` headers are checked against
their data here too.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from pathlib import Path

from focalmix_lib.data.scans import check_mhd, scan_uid
from focalmix_lib.data.splits import subset_index
from focalmix_lib.errors import KitInputError

SCAN_SUFFIXES = (".mhd", ".mha", ".nii", ".nii.gz")


def subset_scans(root: str | Path, subsets: Collection[int] | None = None) -> list[Path]:
    """The ``subsetN/*.mhd`` scans of a LUNA16-layout folder, of the subsets ``subsets`` (None: all)."""
    root = Path(root)
    if not root.is_dir():
        raise KitInputError(root, "data folder not found")
    found = [p for p in sorted(root.glob("subset*/*.mhd")) if subsets is None or subset_index(p) in subsets]
    if not found:
        which = "any subset" if subsets is None else f"the subsets {sorted(subsets)}"
        raise KitInputError(root, f"no scans subset*/*.mhd in {which}")
    return _checked(found)


def find_scans(paths: Sequence[str | Path]) -> list[Path]:
    """The scans that ``paths`` name, in the order given (each folder's scans sorted by name).

    Two scans with the same uid (file name without extension; a DICOM series is named
    by its folder) are refused: the submission CSV tells scans apart by uid alone.
    """
    scans: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise KitInputError(given, "not found")
        if given.is_file():
            if not _is_scan_file(given):
                raise KitInputError(given, f"not a scan: expected {', '.join(SCAN_SUFFIXES)} or a DICOM series folder")
            scans.append(given)
        elif any(given.glob("subset*/*.mhd")):
            scans += subset_scans(given)
        else:
            scans += _folder_scans(given)
    seen: dict[str, Path] = {}
    for path in scans:
        other = seen.setdefault(scan_uid(path), path)
        if other != path:
            raise KitInputError(path, f"has the same series uid as {other}; rename one of them")
    return _checked(scans)


def _folder_scans(folder: Path) -> list[Path]:
    """Scan files of a folder; else the folder itself if it holds files (a DICOM series); else its subfolders."""
    entries = [e for e in sorted(folder.iterdir()) if not e.name.startswith(".")]
    files = [e for e in entries if e.is_file()]
    scan_files = [f for f in files if _is_scan_file(f)]
    if scan_files:
        return scan_files
    if files:
        return [folder]  # read_scan reads it as a DICOM series, and names the folder if it is not one
    series = [e for e in entries if e.is_dir() and any(c.is_file() for c in e.iterdir())]
    if not series:
        raise KitInputError(folder, f"no scans here: no {', '.join(SCAN_SUFFIXES)} files and no DICOM series folders")
    return series


def _is_scan_file(path: Path) -> bool:
    return path.name.lower().endswith(SCAN_SUFFIXES)


def _checked(scans: list[Path]) -> list[Path]:
    """``scans``, after checking each .mhd header against its data file (cheap: no voxels are read)."""
    for path in scans:
        if path.suffix.lower() == ".mhd":
            check_mhd(path)
    return scans
