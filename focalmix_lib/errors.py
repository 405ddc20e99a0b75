"""The one exception type the kit raises for bad input.

Every message names the file (and the CSV row, where there is one) so a user can go
straight to the problem. The ``focalmix`` command turns it into a one-line error and
a non-zero exit status.
"""

from __future__ import annotations

from pathlib import Path


class KitInputError(ValueError):
    """Bad input data: a missing, truncated or inconsistent file, or a bad CSV row."""

    def __init__(self, path: str | Path, problem: str, row: int | None = None):
        self.path = Path(path)
        self.row = row
        self.problem = problem
        where = f"{self.path}" if row is None else f"{self.path}, row {row}"
        super().__init__(f"{where}: {problem}")
