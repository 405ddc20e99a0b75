"""docs/method.md names real functions and real tests, and the user docs stand on their own."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def method_table_rows() -> list[tuple[str, str]]:
    """(function cell, test cell) of every row of the 'Equation -> function -> test' table."""
    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    table = text.split("## Equation -> function -> test", 1)[1]
    rows = [line.split("|")[1:-1] for line in table.splitlines() if line.startswith("| ") and "---" not in line]
    return [(cells[1], cells[2]) for cells in rows[1:]]


def test_every_function_of_the_method_table_exists() -> None:
    for functions, _ in method_table_rows():
        for name in re.findall(r"`([a-z_.]+\.[A-Za-z_]+)(?:\([^`]*\))?`", functions):
            module, _, attribute = f"focalmix_lib.{name}".rpartition(".")
            assert hasattr(importlib.import_module(module), attribute), f"docs/method.md names {name}, which is gone"


def test_every_test_of_the_method_table_exists() -> None:
    for _, tests in method_table_rows():
        current = None
        for path, name in re.findall(r"`(tests/[a-z_]+\.py)?::(\w+)`", tests):
            current = path or current
            source = (ROOT / current).read_text(encoding="utf-8")
            assert f"def {name}(" in source, f"docs/method.md names {current}::{name}, which is gone"


def test_user_docs_do_not_point_outside_the_repository() -> None:
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        assert "../shared" not in path.read_text(encoding="utf-8"), f"{path.name} points outside the repository"


def test_every_departure_the_reports_name_is_in_the_departures_table() -> None:
    from dataclasses import fields

    from focalmix_lib.training.config import TrainConfig

    text = (ROOT / "docs" / "method.md").read_text(encoding="utf-8")
    table = text.split("## Where the kit departs from the paper", 1)[1].split("\n## ", 1)[0]
    names = {f.name for f in fields(TrainConfig)}
    for field_name in TrainConfig.PAPER_VALUES:
        assert field_name in names, f"TrainConfig.PAPER_VALUES names {field_name}, which is not a field"
        assert re.search(rf"`{field_name}[`=]", table), f"docs/method.md's departures table does not name {field_name}"
