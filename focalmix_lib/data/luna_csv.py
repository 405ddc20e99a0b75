"""The LUNA16 CSV files: annotations, excluded findings, series lists, submissions.

Each table is read into column arrays (fast enough for the 88,800-row submissions
that the evaluation bootstraps over). Every problem raises
:class:`~focalmix_lib.errors.KitInputError` naming the file and the row, where the
row number is the line number in the file (the header is row 1).
"""

from __future__ import annotations

import codecs
import csv
import io
import math
import re
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
    table = read_table(path, ANNOTATION_COLUMNS, allow_empty=excluded)
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
    return read_table(path, PREDICTION_COLUMNS, allow_empty=True)


def read_seriesuids(path: str | Path) -> list[str]:
    """Read ``seriesuids.csv``: one uid a line, no header. Blank lines are skipped."""
    path = Path(path)
    uids: list[str] = []
    for row, line in enumerate(read_utf8_text(path).splitlines(), start=1):
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


def read_table(path: str | Path, columns: tuple[str, ...], *, allow_empty: bool,
               row_by_row: bool = False) -> FindingTable:
    """Read the ``columns`` of a LUNA16 CSV (seriesuid, three coordinates, one value) into a FindingTable.

    The fast path splits plain files (ASCII, every line with the header's field count,
    quotes only around whole fields) on commas and converts each column with
    ``float`` at once; anything else, and any bad value, goes to the row-by-row
    ``csv`` reader, which names the first bad row. Both give the same table
    (``row_by_row=True`` forces the row reader).
    """
    path = Path(path)
    text = read_utf8_text(path)
    table = None if row_by_row else _fast_table(path, text, columns)
    return table if table is not None else _row_table(path, text, columns, allow_empty=allow_empty)


def read_utf8_text(path: Path) -> str:
    """The text of a CSV file: UTF-8 with or without a byte-order mark, else a KitInputError naming the row."""
    if not path.is_file():
        raise KitInputError(path, "file not found")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise KitInputError(path, f"cannot read the file: {error.strerror}") from None
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        raise KitInputError(path, "not UTF-8 text (it is UTF-16); save it as UTF-8", row=1)
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise KitInputError(path, f"not UTF-8 text (byte 0x{data[error.start]:02x}); save it as UTF-8",
                            row=data.count(b"\n", 0, error.start) + 1) from None
    nul = text.find("\0")
    if nul >= 0:  # UTF-16 without a byte-order mark decodes as UTF-8 with a NUL in every other byte
        raise KitInputError(path, "not UTF-8 text (NUL bytes, as in UTF-16); save it as UTF-8",
                            row=text.count("\n", 0, nul) + 1)
    return text


# A quoted field without quotes, commas or line breaks inside: csv reads it as its content.
_PLAIN_QUOTED = re.compile(r'(^|,)"([^",\n]*)"(?=,|\n|$)', re.MULTILINE)
# What ``str.strip()`` removes from an ASCII field, plus the delimiter: a line of only these is blank.
_BLANK_LINE_CHARS = ", \t\x0b\x0c\x1c\x1d\x1e\x1f"


def _fast_table(path: Path, text: str, columns: tuple[str, ...]) -> FindingTable | None:
    """The table of a plain file, or None where the file needs the row reader (which names the bad row)."""
    if not text.isascii():
        return None
    if "\r" in text:
        text = text.replace("\r\n", "\n")
        if "\r" in text:
            return None
    if '"' in text:
        text = _PLAIN_QUOTED.sub(r"\1\2", text)
        if '"' in text:
            return None
    head, _, body = text.partition("\n")
    if not head:
        return None  # an empty file, or a blank first line
    header = head.split(",")
    index = _column_index(path, header, columns)
    body = body.removesuffix("\n")
    lines = body.split("\n")
    rows = np.arange(2, len(lines) + 2, dtype=np.int64)
    commas = len(header) - 1
    odd = [i for i, line in enumerate(lines) if line.count(",") != commas]
    if any(lines[i].strip(_BLANK_LINE_CHARS) for i in odd):
        return None  # a row with too few or too many fields
    if odd:  # blank lines: skipped, as the row reader skips them
        rows = np.delete(rows, odd)
        body = "\n".join(lines[i] for i in rows - 2)
    if not len(rows):
        return _empty(path)
    # Every line has the header's field count, so the flat field list is a (rows, fields) table.
    fields = body.replace("\n", ",").split(",")
    width = len(header)
    uids = [uid.strip() for uid in fields[index[0]::width]]
    if not all(uids):
        return None  # an empty seriesuid, or a line of blank fields
    try:
        # numpy converts each str with Python's float(), as the row reader does, in one C loop.
        numbers = np.stack([np.array(fields[i::width], dtype=np.float64) for i in index[1:]], axis=1)
    except ValueError:
        return None
    if not np.isfinite(numbers).all():
        return None
    return FindingTable(path, np.asarray(uids), numbers[:, :3].copy(), numbers[:, 3].copy(), rows)


def _column_index(path: Path, header: list[str], columns: tuple[str, ...]) -> list[int]:
    """Position of each of ``columns`` in the header row, or a KitInputError naming the missing ones."""
    header = [h.strip() for h in header]
    missing = [c for c in columns if c not in header]
    if missing:
        raise KitInputError(path, f"missing column(s) {missing}; the header is {header}", row=1)
    return [header.index(c) for c in columns]


def _row_table(path: Path, text: str, columns: tuple[str, ...], *, allow_empty: bool) -> FindingTable:
    """The row-by-row reader: any CSV the ``csv`` module reads; the first bad row raises, named."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader, None)
        if header is None:
            if allow_empty:
                return _empty(path)
            raise KitInputError(path, f"empty file; expected the header {','.join(columns)}")
        index = _column_index(path, header, columns)
        uids: list[str] = []
        numbers: list[tuple[float, float, float, float]] = []
        rows: list[int] = []
        for record in reader:
            row = reader.line_num
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
    except csv.Error as error:
        raise KitInputError(path, f"not a well-formed CSV line: {error}", row=reader.line_num) from None
    if not uids:
        return _empty(path)
    array = np.asarray(numbers, dtype=np.float64)
    return FindingTable(path, np.asarray(uids), array[:, :3].copy(), array[:, 3].copy(), np.asarray(rows, dtype=np.int64))


def _empty(path: Path) -> FindingTable:
    return FindingTable(path, np.asarray([], dtype=str), np.zeros((0, 3)), np.zeros(0), np.zeros(0, dtype=np.int64))
