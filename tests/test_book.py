"""The offline book: chapters rendered to pages with a table of contents, nothing loaded from a network."""

from __future__ import annotations

import json
import re

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

pytest.importorskip("nbconvert")

from focalmix_lib.cli import main  # noqa: E402
from focalmix_lib.errors import KitInputError  # noqa: E402
from focalmix_lib.reproduction.book import PLOTLY_JS, find_chapters, write_book  # noqa: E402

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
FIGURE = {"data": [{"type": "scatter", "x": [1, 2, 3], "y": [0.125, 0.25, 0.5]}], "layout": {"height": 420}}


def executed_chapter(title: str, executed: bool = True) -> nbformat.NotebookNode:
    """A chapter as papermill leaves it: a PNG, a plotly figure, a slider widget and a solution cell."""
    figures = new_code_cell("plot()", execution_count=1 if executed else None, outputs=[
        new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
        new_output("display_data", data={"application/vnd.plotly.v1+json": FIGURE}),
        new_output("execute_result", execution_count=1, data={
            "application/vnd.jupyter.widget-view+json": {"model_id": "abc", "version_major": 2, "version_minor": 0},
            "text/plain": "VBox(...)"}),
    ] if executed else [])
    solution = new_code_cell("secret_answer = 42", execution_count=2 if executed else None,
                             metadata={"tags": ["solution"]})
    notebook = new_notebook(cells=[new_markdown_cell(f"# {title}\n\nWhy it matters."),
                                   new_markdown_cell("## Section A\n\nWhat to look for."), figures, solution])
    notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": {"state": {}}}
    return notebook


@pytest.fixture
def executed_dir(tmp_path):
    folder = tmp_path / "notebooks"
    (folder / "01_first").mkdir(parents=True)
    nbformat.write(executed_chapter("Chapter 1: first"), folder / "01_first" / "01_first.ipynb")  # reproduce layout
    nbformat.write(executed_chapter("Chapter 2: second"), folder / "02_second.ipynb")  # flat layout
    (folder / "outcomes.json").write_text("{}")
    return folder


def test_book_has_contents_pages_and_one_local_plotly(executed_dir, tmp_path):
    from plotly.offline import get_plotlyjs

    index = write_book(executed_dir, tmp_path / "book", progress=False)
    book = tmp_path / "book"
    assert index == book / "index.html"
    contents = index.read_text(encoding="utf-8")
    assert re.findall(r'href="([^"#]+)"', contents) == ["01_first.html", "02_second.html"]
    assert 'href="01_first.html#Section-A">Section A</a>' in contents
    assert "Chapter 2: second" in contents
    assert (book / PLOTLY_JS).read_text(encoding="utf-8") == get_plotlyjs()
    for page in ("01_first.html", "02_second.html"):
        text = (book / page).read_text(encoding="utf-8")
        scripts = re.findall(r'<script[^>]*src="([^"]*)"', text)
        assert PLOTLY_JS in scripts and all(not src.startswith(("http:", "https:", "//")) for src in scripts)
        assert len(text) < len(get_plotlyjs()) / 2  # plotly.js is beside the page, not inside it
        call = re.search(r'Plotly\.newPlot\("book-plotly-1", f\[0\], f\[1\].*?\}\)\((.*?)\);</script>', text, re.S)
        assert json.loads(call.group(1)) == [FIGURE["data"], FIGURE["layout"]]
        assert "data:image/png;base64," + PNG in text
        assert "secret_answer" not in text and "Sliders: live when this chapter runs in Jupyter" in text
    first = (book / "01_first.html").read_text(encoding="utf-8")
    assert 'href="index.html"' in first and 'href="02_second.html"' in first


def test_the_same_chapters_render_the_same_book(executed_dir, tmp_path):
    write_book(executed_dir, tmp_path / "a", progress=False)
    write_book(executed_dir, tmp_path / "b", progress=False)
    for name in ("index.html", "01_first.html", "02_second.html"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_missing_or_unexecuted_chapters_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(KitInputError, match="no such folder"):
        find_chapters(tmp_path / "absent")
    (tmp_path / "empty").mkdir()
    with pytest.raises(KitInputError, match="holds no executed chapters"):
        write_book(tmp_path / "empty", tmp_path / "book", progress=False)
    nbformat.write(executed_chapter("Chapter 3: never run", executed=False), tmp_path / "empty" / "03_raw.ipynb")
    with pytest.raises(KitInputError, match="never executed") as error:
        write_book(tmp_path / "empty", tmp_path / "book", progress=False)
    assert "03_raw.ipynb" in str(error.value)
    (tmp_path / "empty" / "03_raw.ipynb").write_text("{not json")
    with pytest.raises(KitInputError, match="not a readable notebook"):
        write_book(tmp_path / "empty", tmp_path / "book", progress=False)
    assert not (tmp_path / "book").exists()


def test_book_command(executed_dir, tmp_path, capsys):
    assert main(["book", "--notebooks", str(tmp_path / "absent"), "--out", str(tmp_path / "out")]) == 2
    assert "absent" in capsys.readouterr().err and not (tmp_path / "out").exists()
    assert main(["book", "--notebooks", str(executed_dir), "--out", str(tmp_path / "out")]) == 0
    assert (tmp_path / "out" / "index.html").is_file() and (tmp_path / "out" / "02_second.html").is_file()
