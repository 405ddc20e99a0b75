"""The AnoGAN and BDCL chapters run headless under papermill in quick mode.

Needs a Jupyter kernel named ``python3`` that runs this environment's Python (the
venv has one: ``python -m ipykernel install --sys-prefix``). Both notebooks share
one preprocessed-scan cache so that the phantoms are resampled once.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

papermill = pytest.importorskip("papermill")

NOTEBOOKS = Path(__file__).resolve().parents[1] / "notebooks"


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("related_cache")


@pytest.mark.parametrize("name, tables, figures", [
    ("07_anogan", ("anogan_scoring.csv", "anogan_froc.csv"), 6),
    ("08_bdcl", ("bdcl_candidate_counts.csv", "bdcl_ablation.csv", "bdcl_temperatures.csv"), 3),
])
def test_chapter_runs_in_quick_mode(name, tables, figures, quick_phantoms, shared_cache, tmp_path):
    source = nbformat.read(NOTEBOOKS / f"{name}.ipynb", as_version=4)
    assert "parameters" in source.cells[1].metadata.get("tags", [])
    assert all(not cell.get("outputs") for cell in source.cells if cell.cell_type == "code"), "commit without outputs"
    out_dir = tmp_path / "run"
    executed = papermill.execute_notebook(
        str(NOTEBOOKS / f"{name}.ipynb"), str(tmp_path / f"{name}.ipynb"),
        parameters={"quick": True, "output_dir": str(out_dir), "data_dir": str(quick_phantoms), "seed": 0,
                    "cache_dir": str(shared_cache)},
        kernel_name="python3", cwd=str(tmp_path), progress_bar=False,
    )
    images = sum(1 for cell in executed.cells for output in cell.get("outputs", [])
                 if "image/png" in output.get("data", {}))
    assert images == figures
    for table in tables:
        text = (out_dir / table).read_text(encoding="utf-8")
        assert len(text.splitlines()) >= 2 and "nan" not in text.split("\n", 1)[1].lower()
