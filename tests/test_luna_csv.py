"""LUNA16 CSV parsing: good files round trip, bad ones name the file and row."""

import numpy as np
import pytest

from focalmix_lib.data import luna_csv
from focalmix_lib.errors import KitInputError

HEADER = "seriesuid,coordX,coordY,coordZ,diameter_mm\n"


def test_round_trip(tmp_path):
    path = tmp_path / "annotations.csv"
    world = np.array([[-10.5, 20.25, -300.125], [1.0, 2.0, 3.0]])
    luna_csv.write_findings(path, ["1.2.3", "4.5.6"], world, np.array([5.5, 12.0]), "diameter_mm")
    table = luna_csv.read_annotations(path)
    assert table.seriesuid.tolist() == ["1.2.3", "4.5.6"]
    np.testing.assert_allclose(table.world_xyz, world)
    np.testing.assert_allclose(table.value, [5.5, 12.0])
    assert table.rows.tolist() == [2, 3]
    assert len(table.for_series("4.5.6")) == 1


@pytest.mark.parametrize("body, row, words", [
    ("seriesuid,coordX,coordY,diameter_mm\n1.2,1,2,5\n", 1, "missing column"),
    (HEADER + "1.2,1,2,3,5\n1.2,1,abc,3,5\n", 3, "not a number"),
    (HEADER + "1.2,1,2,nan,5\n", 2, "not finite"),
    (HEADER + "1.2,1,2,3,5\n1.2,1,2,3,0\n", 3, "positive"),
    (HEADER + "1.2,1,2,3,-4\n", 2, "positive"),
    (HEADER + "1.2,1,2\n", 2, "fields"),
])
def test_bad_annotations(tmp_path, body, row, words):
    path = tmp_path / "annotations.csv"
    path.write_text(body)
    with pytest.raises(KitInputError) as info:
        luna_csv.read_annotations(path)
    assert info.value.path == path and info.value.row == row
    assert words in str(info.value) and "annotations.csv" in str(info.value)


def test_excluded_allows_negative_diameter(tmp_path):
    path = tmp_path / "annotations_excluded.csv"
    path.write_text(HEADER + "1.2,1,2,3,-1\n")
    assert luna_csv.read_annotations(path, excluded=True).value.tolist() == [-1.0]


def test_seriesuids(tmp_path):
    path = tmp_path / "seriesuids.csv"
    path.write_text("1.2.3\n\n4.5.6\n")
    assert luna_csv.read_seriesuids(path) == ["1.2.3", "4.5.6"]
    path.write_text("1.2.3\n4.5,6.7\n")
    with pytest.raises(KitInputError, match="row 2"):
        luna_csv.read_seriesuids(path)
