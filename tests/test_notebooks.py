"""Chapters 00-06 run top to bottom under papermill in quick mode, headless.

One tiny phantom set (4 labeled scans of 80 x 80 pixels, 2 unlabeled) keeps the whole
file within a few minutes on 2 CPU cores. Chapter 05 trains a 4-step FocalMix run;
chapter 06 reuses it, as a reader who runs the chapters in order does. Chapter 03 uses
the session's teaching model (conftest.py: 200 steps, trained once). Needs
the Jupyter kernel of this environment (``python -m ipykernel install --sys-prefix
--name python3``) and, for the napari PNG of chapter 06, Xvfb with Mesa GL
(.ci/install-system-packages.sh).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nbformat
import numpy as np
import pytest

pytest.importorskip("papermill")

from focalmix_lib.reproduction.notebooks import NOTEBOOK_DIR, run_notebook  # noqa: E402
from focalmix_lib.viz import ssl_plots  # noqa: E402

CHAPTERS = ("00_quickstart", "01_data_and_anchors", "02_focal_vs_soft_focal_loss",
            "03_anchor_level_target_prediction", "04_mixup_for_detection", "05_train", "06_evaluate")
TINY_TRAINING = {"steps": 4, "log_every": 1, "unlabeled": 2, "batch_labeled": 2, "batch_unlabeled": 2,
                 "window_overlap": 0.0, "checkpoint_every": 4}


@pytest.fixture(scope="module")
def trained_run(tiny_phantoms: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, nbformat.NotebookNode]:
    """Chapter 05 executed: a 4-step FocalMix run with detection and evaluation."""
    out = tmp_path_factory.mktemp("chapter05")
    executed = run_notebook("05_train", out, {
        "output_dir": str(out / "work"), "data_dir": str(tiny_phantoms), "method": "focalmix",
        "overrides": TINY_TRAINING, "bootstrap": 5,
    }, cwd=out)
    return out / "work" / "run", nbformat.read(executed, as_version=4)


def outputs(notebook: nbformat.NotebookNode, mime: str) -> list:
    return [output for cell in notebook.cells for output in cell.get("outputs", []) if mime in output.get("data", {})]


def printed(notebook: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for cell in notebook.cells for output in cell.get("outputs", []))


@pytest.mark.parametrize("name", CHAPTERS)
def test_committed_without_outputs_with_a_parameters_cell(name):
    notebook = nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert "parameters" in code[0].metadata.get("tags", [])
    for variable in ("quick = True", "output_dir = ", "seed = "):
        assert variable in code[0].source
    assert all(not cell.outputs and cell.execution_count is None for cell in code), "strip outputs before committing"


@pytest.mark.parametrize("name, images", [
    ("00_quickstart", 2), ("01_data_and_anchors", 3), ("02_focal_vs_soft_focal_loss", 3),
])
def test_chapter_without_training_runs(name, images, tiny_phantoms, teaching_steps, tmp_path):
    parameters = {"output_dir": str(tmp_path / "work"), "data_dir": str(tiny_phantoms)}
    if name == "00_quickstart":  # its teaser shows the session's teaching model
        parameters["teaching_steps"] = teaching_steps
    executed = run_notebook(name, tmp_path, parameters, cwd=tmp_path)
    assert len(outputs(nbformat.read(executed, as_version=4), "image/png")) >= images
    assert list((tmp_path / "work").glob("*.png"))


def test_train_chapter_trains_detects_and_prints_its_summary(trained_run):
    run_dir, notebook = trained_run
    summary = json.loads(printed(notebook).strip().splitlines()[-1])
    assert summary["status"] == "completed" and summary["method"] == "focalmix"
    assert 0.0 <= summary["cpm"] <= 1.0
    assert (run_dir / "predictions.csv").is_file() and (run_dir / "froc.json").is_file()
    assert len([json.loads(line) for line in (run_dir / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]) == 4
    assert len(outputs(notebook, "image/png")) >= 2  # live loss curves, FROC


def test_train_chapter_reports_a_diverged_run_without_failing(tiny_phantoms, tmp_path):
    # A learning rate of 1e38 blows the weights up to inf after the first step: a non-finite loss, the paper's "Fail".
    executed = run_notebook("05_train", tmp_path, {
        "output_dir": str(tmp_path / "work"), "data_dir": str(tiny_phantoms), "live_plot": False,
        "overrides": {"steps": 3, "batch_labeled": 2, "lr": 1e38},
    }, cwd=tmp_path)
    summary = json.loads(printed(nbformat.read(executed, as_version=4)).strip().splitlines()[-1])
    assert summary == {"run_dir": str(tmp_path / "work" / "run"), "method": "supervised", "status": "diverged",
                       "cpm": None}
    assert not (tmp_path / "work" / "run" / "predictions.csv").exists()


def test_chapter_03_averaged_map_peaks_at_the_nodule(tiny_phantoms, teaching_steps, tmp_path):
    chapter3 = run_notebook("03_anchor_level_target_prediction", tmp_path, {
        "output_dir": str(tmp_path / "03"), "data_dir": str(tiny_phantoms), "teaching_steps": teaching_steps,
    }, cwd=tmp_path)
    notebook = nbformat.read(chapter3, as_version=4)
    assert "averaged_view_probabilities: True" in printed(notebook)
    assert "from the cache" in printed(notebook)  # the session's teaching model, not a second training
    assert len(outputs(notebook, "image/png")) >= 3
    figure = np.load(tmp_path / "03" / "target_prediction.npz")
    peak, nodule = ssl_plots.peak_cell(figure["average"]), ssl_plots.box_centre_cell(figure["box"], int(figure["stride"]))
    assert max(abs(a - b) for a, b in zip(peak, nodule)) <= 1, (peak, nodule)


def test_chapter_04_mixes_visibly_by_default(tiny_phantoms, tmp_path):
    executed = run_notebook("04_mixup_for_detection", tmp_path, {"output_dir": str(tmp_path / "work"),
                                                                 "data_dir": str(tiny_phantoms)}, cwd=tmp_path)
    assert len(outputs(nbformat.read(executed, as_version=4), "image/png")) >= 3
    figure = np.load(tmp_path / "work" / "image_mixup.npz")
    assert 0.6 <= float(figure["lam"]) <= 0.7
    # Visible: the mixed slice moves by 50 HU on average (l = 0.99 moves it by about 3 HU).
    assert ssl_plots.mean_change_hu(figure["image"], figure["mixed"]) >= 50.0


def test_chapters_on_a_trained_run(trained_run, tmp_path):
    run_dir, _ = trained_run
    chapter6 = run_notebook("06_evaluate", tmp_path, {"output_dir": str(tmp_path / "06"), "run_dir": str(run_dir)},
                            cwd=tmp_path)
    notebook = nbformat.read(chapter6, as_version=4)
    assert len(outputs(notebook, "image/png")) >= 3  # FROC, hits, napari
    assert (tmp_path / "06" / "napari_view.png").stat().st_size > 1000
    table = (tmp_path / "06" / "nodule_outcomes.csv").read_text(encoding="utf-8").splitlines()
    assert table[0].endswith("kind,location") and len(table) >= 2
