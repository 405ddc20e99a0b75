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


class ConfigError(ValueError):
    """A bad configuration value: an unknown field, a wrong type, or a value out of range.

    ``source`` is where the value came from: a config.yaml (then the message names the
    file and the field) or ``None`` for a value given by name on the command line, in
    a papermill parameter or in code (then the message shows ``field=value``).
    """

    def __init__(self, field: str, value: object, problem: str, source: str | Path | None = None):
        self.field = field
        self.value = value
        self.problem = problem
        self.source = source
        where = f"{source}, field {field}" if source is not None else f"{field}={_shown(value)}"
        super().__init__(f"{where}: {problem}")

    def at(self, source: str | Path) -> "ConfigError":
        """The same error, naming the file the value was read from."""
        return ConfigError(self.field, self.value, self.problem, source)


def _shown(value: object) -> str:
    """A value as a user would type it after ``--set field=`` (strings unquoted)."""
    if isinstance(value, str):
        return value
    return repr(list(value)) if isinstance(value, tuple) else repr(value)
