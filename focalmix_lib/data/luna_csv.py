"""The LUNA16 CSV files: annotations, excluded findings, series lists, submissions.

Each table is read into column arrays (fast enough for the 88,800-row submissions
that the evaluation bootstraps over). Every problem raises
:class:`~focalmix_lib.errors.KitInputError` naming the file and the row, where the
row number is the line number in the file (the header is row 1).
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from focalmix_lib import atomic
from focalmix_lib.errors import KitInputError

COORD_COLUMNS = ("coordX", "coordY", "coordZ")
ANNOTATION_COLUMNS = ("seriesuid", *COORD_COLUMNS, "diameter_mm")
PREDICTION_COLUMNS = ("seriesuid", *COORD_COLUMNS, "probability")


@dataclass(frozen=True)
class FindingTable:
    """Rows of a LUNA16 CSV as columns.

    ``seriesuid``: (N,) str; ``world_xyz``: (N, 3) float64 mm; ``value``: (N,) float64,
    the diameter in mm (annotations) or the probability (predictions);
    ``rows``: (N,) int, the line of each row in its file.
    """

    path: Path
    seriesuid: NDArray[np.str_]
    world_xyz: NDArray[np.float64]
    value: NDArray[np.float64]
    rows: NDArray[np.int64]

    def __len__(self) -> int:
        return len(self.seriesuid)

    def for_series(self, uid: str) -> "FindingTable":
        """The rows that belong to one scan."""
        keep = self.seriesuid == uid
        return FindingTable(self.path, self.seriesuid[keep], self.world_xyz[keep], self.value[keep], self.rows[keep])


def read_annotations(path: str | Path, *, excluded: bool = False) -> FindingTable:
    """Read ``annotations.csv`` (or, with ``excluded=True``, ``annotations_excluded.csv``).

    Diameters must be positive in annotations.csv. The excluded file of the real
    LUNA16 marks some findings with diameter -1; those are kept (the evaluation treats
    a negative diameter as 10 mm).
    """
    table = _read_table(Path(path), ANNOTATION_COLUMNS, allow_empty=excluded)
    if not excluded:
        bad = np.flatnonzero(table.value <= 0)
        if bad.size:
            i = int(bad[0])
            raise KitInputError(path, f"diameter_mm must be positive, got {table.value[i]:g}", row=int(table.rows[i]))
    return table


def read_predictions(path: str | Path) -> FindingTable:
    """Read a LUNA16 submission ``seriesuid,coordX,coordY,coordZ,probability``.

    A file with only the header (or no bytes at all) is a valid submission with no
    marks. Duplicate rows are kept, as the official evaluation keeps them.
    """
    return _read_table(Path(path), PREDICTION_COLUMNS, allow_empty=True)


def read_seriesuids(path: str | Path) -> list[str]:
    """Read ``seriesuids.csv``: one uid a line, no header. Blank lines are skipped."""
    path = Path(path)
    if not path.is_file():
        raise KitInputError(path, "file not found")
    uids: list[str] = []
    for row, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        uid = line.strip().strip(",")
        if not uid:
            continue
        if "," in uid:
            raise KitInputError(path, f"expected one series uid per line, got {line!r}", row=row)
        uids.append(uid)
    return uids


def write_findings(
    path: str | Path, seriesuid: list[str] | NDArray[np.str_], world_xyz: NDArray[np.float64],
    value: NDArray[np.float64], value_column: str,
) -> None:
    """Atomically write a LUNA16 CSV with columns seriesuid, coordX, coordY, coordZ, ``value_column``."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["seriesuid", *COORD_COLUMNS, value_column])
    for uid, (x, y, z), v in zip(seriesuid, np.asarray(world_xyz).reshape(-1, 3), value):
        writer.writerow([uid, f"{x:.4f}", f"{y:.4f}", f"{z:.4f}", f"{v:.6g}"])
    atomic.write_text(path, buffer.getvalue())


def write_seriesuids(path: str | Path, uids: list[str]) -> None:
    """Atomically write ``seriesuids.csv`` (one uid a line, no header)."""
    atomic.write_text(path, "".join(f"{uid}\n" for uid in uids))


def _read_table(path: Path, columns: tuple[str, ...], *, allow_empty: bool) -> FindingTable:
    if not path.is_file():
        raise KitInputError(path, "file not found")
    text = path.read_text(encoding="utf-8-sig")
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if header is None:
        if allow_empty:
            return _empty(path)
        raise KitInputError(path, f"empty file; expected the header {','.join(columns)}")
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise KitInputError(path, f"missing column(s) {missing}; the header is {header}", row=1)
    index = [header.index(c) for c in columns]
    uids: list[str] = []
    numbers: list[tuple[float, float, float, float]] = []
    rows: list[int] = []
    for row, record in enumerate(reader, start=2):
        if not record or all(not field.strip() for field in record):
            continue
        if len(record) < len(header):
            raise KitInputError(path, f"expected {len(header)} fields, got {len(record)}", row=row)
        uid = record[index[0]].strip()
        if not uid:
            raise KitInputError(path, "empty seriesuid", row=row)
        values = []
        for column, i in zip(columns[1:], index[1:]):
            field = record[i].strip()
            try:
                number = float(field)
            except ValueError:
                raise KitInputError(path, f"{column} is not a number: {field!r}", row=row) from None
            if not math.isfinite(number):
                raise KitInputError(path, f"{column} is not finite: {field!r}", row=row)
            values.append(number)
        uids.append(uid)
        numbers.append(tuple(values))  # type: ignore[arg-type]
        rows.append(row)
    if not uids:
        return _empty(path)
    array = np.asarray(numbers, dtype=np.float64)
    return FindingTable(path, np.asarray(uids), array[:, :3].copy(), array[:, 3].copy(), np.asarray(rows, dtype=np.int64))


def _empty(path: Path) -> FindingTable:
    return FindingTable(path, np.asarray([], dtype=str), np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64))
