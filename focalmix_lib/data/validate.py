"""Check a LUNA16-layout folder before anything trains on it (``focalmix check-data DIR``).

Real LUNA16 downloads are often incomplete (a missing subset, a truncated .raw), so
every problem is collected, not just the first: each names its file (and CSV row).
Scans are checked through their headers (SimpleITK reads only the header) and the
size of their data files, so checking the full LUNA16 set takes seconds, not the time
to read 120 GB.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from focalmix_lib.data import luna_csv
from focalmix_lib.data.coordinates import ScanGeometry, world_to_voxel
from focalmix_lib.data.dataset import Luna16Folder
from focalmix_lib.data.scans import check_mhd
from focalmix_lib.errors import KitInputError


@dataclass
class FolderReport:
    """What ``check_luna16_folder`` found: a summary and a list of problems (empty = valid)."""

    root: Path
    summary: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def format(self) -> str:
        s = self.summary
        lines = [f"LUNA16 folder {self.root}"]
        for key, label in (("scans", "labeled scans"), ("subsets", "subsets"), ("nodules", "nodules"),
                           ("scans_with_nodules", "scans with nodules"), ("excluded", "excluded findings"),
                           ("diameter_mm", "nodule diameter (mm)"), ("unlabeled", "unlabeled scans"),
                           ("disk_mb", "disk size (MB)")):
            if key in s:
                lines.append(f"  {label:<22}{s[key]}")
        if self.problems:
            lines.append(f"{len(self.problems)} problem(s):")
            lines.extend(f"  {p}" for p in self.problems)
        else:
            lines.append("OK")
        return "\n".join(lines)


def read_geometry(path: Path) -> ScanGeometry:
    """Geometry of a .mhd scan from its header alone, after checking the header against its data."""
    import SimpleITK as sitk

    check_mhd(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise KitInputError(path, f"SimpleITK cannot read the header: {str(error).strip().splitlines()[-1]}") from None
    nx, ny, nz = reader.GetSize()
    return ScanGeometry((nz, ny, nx), tuple(reader.GetOrigin()), tuple(reader.GetSpacing()),  # type: ignore[arg-type]
                        tuple(reader.GetDirection()))


def check_luna16_folder(root: str | Path) -> FolderReport:
    """Validate a LUNA16-layout folder; never raises for bad content, reports it instead."""
    report = FolderReport(Path(root))
    try:
        folder = Luna16Folder(root)
    except KitInputError as error:
        report.problems.append(str(error))
        return report
    uids = _collect(report, lambda: folder.seriesuids, None)
    if not (folder.root / "seriesuids.csv").is_file():
        report.problems.append(f"{folder.root / 'seriesuids.csv'}: file not found (one series uid per line)")
    geometries: dict[str, ScanGeometry] = {}
    for uid in uids or []:
        try:
            geometries[uid] = read_geometry(folder.scan_path(uid))
        except KitInputError as error:
            report.problems.append(str(error))
    annotations = _collect(report, lambda: folder.annotations, None)
    excluded = _collect(report, lambda: folder.excluded, None)
    listed = set(uids) if uids is not None else None  # an unreadable list is reported once, not on every row
    for table in (annotations, excluded):
        if table is not None:
            report.problems.extend(str(problem) for problem in finding_problems(table, listed, geometries))
    unlabeled = folder.unlabeled_paths()
    for path in unlabeled:
        if path.suffix == ".mhd":
            try:
                read_geometry(path)
            except KitInputError as error:
                report.problems.append(str(error))
    diameters = annotations.value if annotations is not None else np.zeros(0)
    report.summary = {
        "scans": len(uids or []),
        "subsets": len({p.parent.name for p in folder.root.glob("subset*/*.mhd")}),
        "nodules": int(len(diameters)),
        "scans_with_nodules": int(len(set(annotations.seriesuid))) if annotations is not None else 0,
        "excluded": int(len(excluded)) if excluded is not None else 0,
        "diameter_mm": f"{diameters.min():.1f} - {diameters.max():.1f}" if len(diameters) else "none",
        "unlabeled": len(unlabeled),
        "disk_mb": round(sum(p.stat().st_size for p in folder.root.rglob("*") if p.is_file()) / 2**20, 1),
    }
    return report


def _collect(report: FolderReport, read, default):
    try:
        return read()
    except KitInputError as error:
        report.problems.append(str(error))
        return default


def finding_problems(table: luna_csv.FindingTable, listed: set[str] | None,
                     geometries: dict[str, ScanGeometry]) -> Iterator[KitInputError]:
    """Each row's uid must be a listed scan (unless ``listed`` is None), and its centre must lie inside that scan.

    Inside means a voxel index (z, y, x) = world_to_voxel(world) within
    [-0.5, shape - 0.5] on every axis; rows of scans without a geometry are not placed.
    """
    for uid, world, row in zip(table.seriesuid, table.world_xyz, table.rows):
        if listed is not None and uid not in listed:
            yield KitInputError(table.path, f"series {uid} has no scan in seriesuids.csv", row=int(row))
            continue
        geometry = geometries.get(uid)
        if geometry is None:
            continue  # the scan's own problem is reported already
        voxel = world_to_voxel(world, geometry)
        shape = np.asarray(geometry.shape_zyx)
        if np.any(voxel < -0.5) or np.any(voxel > shape - 0.5):
            yield KitInputError(
                table.path, f"finding at world (x, y, z) = ({world[0]:.1f}, {world[1]:.1f}, {world[2]:.1f}) mm "
                            f"lies outside its scan (voxel z, y, x = {np.round(voxel, 1).tolist()}, "
                            f"shape {list(geometry.shape_zyx)})", row=int(row))


def check_training_scans(folder: Luna16Folder, uids: Sequence[str]) -> None:
    """Raise the first problem that check-data would report for training on the scans ``uids``.

    annotations.csv must have rows, each naming a series of seriesuids.csv; every scan
    of ``uids`` must exist with a consistent header, and its annotations must lie inside
    it. Reads headers only, so it is cheap enough to run before every training run.
    """
    annotations = folder.annotations
    if not len(annotations):
        raise KitInputError(annotations.path, "no annotated nodules (the file has no rows below its header); "
                                              "training needs at least one")
    geometries = {uid: read_geometry(folder.scan_path(uid)) for uid in uids}
    problem = next(finding_problems(annotations, set(folder.seriesuids), geometries), None)
    if problem is not None:
        raise problem
