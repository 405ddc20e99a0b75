"""The offline book: executed chapters rendered to static HTML pages with a table of contents.

``write_book(executed_dir, out_dir)`` reads the executed chapters (``NN_name.ipynb``,
flat or one folder per chapter as ``focalmix reproduce`` writes them) and writes::

    out_dir/index.html          table of contents: every chapter and its sections
    out_dir/NN_name.html        one page per chapter (nbconvert's lab template)
    out_dir/plotly.min.js       plotly.js, once, loaded by every page
    out_dir/mathjax/            MathJax 2, once, when jupyter-server-mathjax is installed

Nothing is fetched from a network: interactive plotly figures (the
``application/vnd.plotly.v1+json`` outputs a kernel records) become a ``div`` drawn by
the local plotly.js; slider widgets, which need a live kernel, become a note; solution
cells (tagged ``solution``) lose their code, which the chapter's collapsible *Solution*
block already shows. Without a local MathJax the equations stay as TeX source.
"""

from __future__ import annotations

import html
import importlib.util
import json
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from focalmix_lib import atomic
from focalmix_lib.errors import KitInputError

if TYPE_CHECKING:
    import nbformat

PLOTLY_MIME = "application/vnd.plotly.v1+json"
WIDGET_MIME = "application/vnd.jupyter.widget-view+json"
PLOTLY_JS = "plotly.min.js"
MATHJAX_DIR = "mathjax"
# MathJax 2 as jupyter-server-mathjax ships it (the configuration that package includes).
MATHJAX_URL = f"{MATHJAX_DIR}/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe"
CHAPTER_PATTERN = "[0-9][0-9]_*.ipynb"
SOLUTION_TAG = "solution"
WIDGET_NOTE = ("<p class=\"book-note\">Sliders: live when this chapter runs in Jupyter; "
               "the figure above shows their default state.</p>")
_SECTION = re.compile(r"<h2 id=\"([^\"]+)\">(.*?)(?:<a class=\"anchor-link\"|</h2>)", re.S)
_BODY = re.compile(r"<body[^>]*>")
_STYLE = """<style>
.book-nav { position: sticky; top: 0; z-index: 10; background: #f5f5f5; border-bottom: 1px solid #ccc;
            padding: 6px 16px; font: 14px sans-serif; display: flex; gap: 24px; }
.book-note { font-style: italic; color: #555; }
</style>"""


@dataclass(frozen=True)
class Chapter:
    """One executed chapter: its notebook, page name, title and ``(anchor id, heading)`` sections."""

    source: Path
    page: str
    title: str
    sections: tuple[tuple[str, str], ...] = ()


def find_chapters(executed_dir: str | Path) -> dict[Path, "nbformat.NotebookNode"]:
    """The executed chapters under ``executed_dir`` in name order, read: ``NN_x.ipynb`` or ``NN_x/NN_x.ipynb``.

    Raises :class:`KitInputError` when the folder holds none, or when a chapter was never
    executed (no code cell ran), before anything is written.
    """
    folder = Path(executed_dir)
    if not folder.is_dir():
        raise KitInputError(folder, "no such folder of executed chapters (run: focalmix reproduce)")
    found: dict[str, Path] = {}
    for path in sorted(folder.glob(CHAPTER_PATTERN)) + sorted(folder.glob(f"*/{CHAPTER_PATTERN}")):
        found.setdefault(path.stem, path)
    if not found:
        raise KitInputError(folder, "holds no executed chapters (NN_name.ipynb); run: focalmix reproduce")
    chapters = {found[stem]: _read(found[stem]) for stem in sorted(found)}
    for path, notebook in chapters.items():
        if not any(cell.get("execution_count") for cell in notebook.cells if cell.cell_type == "code"):
            raise KitInputError(path, "was never executed (no code cell ran); run it with papermill first")
    return chapters


def write_book(executed_dir: str | Path, out_dir: str | Path, title: str = "FocalMix kit: the chapters",
               progress: bool = True) -> Path:
    """Render the executed chapters of ``executed_dir`` into a static book in ``out_dir``; returns index.html.

    Every file is written atomically; plotly.js (and MathJax, when installed) once,
    beside the pages. Rendering the same chapters again rewrites the same files.
    """
    from tqdm.auto import tqdm

    notebooks = find_chapters(executed_dir)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _write_plotly_js(out / PLOTLY_JS)
    mathjax = _copy_mathjax(out / MATHJAX_DIR)
    pages = {path.stem: _render(notebook, mathjax)
             for path, notebook in tqdm(notebooks.items(), desc="book", disable=not progress)}
    chapters = [Chapter(path, f"{path.stem}.html", _chapter_title(notebook, path.stem),
                        tuple(_SECTION.findall(pages[path.stem]))) for path, notebook in notebooks.items()]
    for index, chapter in enumerate(chapters):
        previous = chapters[index - 1] if index else None
        following = chapters[index + 1] if index + 1 < len(chapters) else None
        atomic.write_text(out / chapter.page, _with_navigation(pages[chapter.source.stem], previous, following))
    atomic.write_text(out / "index.html", contents_page(title, chapters))
    return out / "index.html"


def contents_page(title: str, chapters: Sequence[Chapter]) -> str:
    """index.html: the title and, per chapter, a link to its page and to each of its sections."""
    items = []
    for chapter in chapters:
        sections = "".join(f'<li><a href="{chapter.page}#{anchor}">{_plain(heading)}</a></li>'
                           for anchor, heading in chapter.sections)
        items.append(f'<li><a href="{chapter.page}">{html.escape(chapter.title)}</a><ul>{sections}</ul></li>')
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>body {{ font: 16px/1.5 sans-serif; max-width: 52em; margin: 2em auto; }}</style></head>\n"
            f"<body><h1>{html.escape(title)}</h1><p>Each chapter as executed, with its figures; it opens without "
            f"a network. To move the sliders and run the exercises, open the notebooks in Jupyter.</p>\n"
            f"<ol>{''.join(items)}</ol></body></html>\n")


def _read(path: Path):
    import nbformat

    try:
        return nbformat.read(path, as_version=4)
    except Exception as error:  # nbformat raises several types for a damaged file
        raise KitInputError(path, f"is not a readable notebook ({type(error).__name__}: {error})") from None


def _chapter_title(notebook, fallback: str) -> str:
    """The first level-1 heading of the chapter's markdown."""
    for cell in notebook.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


def _plain(fragment: str) -> str:
    """Text of an HTML heading fragment (tags dropped), escaped again for the contents page."""
    return html.escape(html.unescape(re.sub(r"<[^>]+>", "", fragment)).strip())


def offline_outputs(notebook):
    """A copy of ``notebook`` whose outputs need no network: plotly figures as divs, widgets as a note.

    A plotly output ``{"data": [...], "layout": {...}}`` becomes a ``div`` and a script that
    calls ``Plotly.newPlot`` (plotly.js is loaded by the page). Solution cells keep
    their outputs but not their code.
    """
    import copy

    notebook = copy.deepcopy(notebook)
    notebook.metadata.pop("widgets", None)  # else the page loads a widget manager from a CDN
    figures = 0
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if SOLUTION_TAG in cell.metadata.get("tags", []):
            cell.source = ""
            cell.metadata["transient"] = {"remove_source": True}  # nbconvert then drops the input area
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            if PLOTLY_MIME in data:
                figures += 1
                output["data"] = {"text/html": _plotly_div(data[PLOTLY_MIME], f"book-plotly-{figures}")}
            elif WIDGET_MIME in data:
                output["data"] = {"text/html": WIDGET_NOTE}
    return notebook


def _plotly_div(figure: dict, element_id: str) -> str:
    """A div drawn by the page's plotly.js; ``</`` is escaped so the JSON cannot close the script."""
    layout = figure.get("layout", {})
    height = int(layout.get("height", 500))
    payload = json.dumps([figure.get("data", []), layout]).replace("</", "<\\/")
    return (f'<div id="{element_id}" style="height:{height}px; width:100%;"></div>\n'
            f'<script>(function (f) {{ Plotly.newPlot("{element_id}", f[0], f[1], {{responsive: true}}); }})'
            f"({payload});</script>")


def _render(notebook, mathjax: bool) -> str:
    """One chapter page: nbconvert's lab template, with plotly.js (and MathJax) from beside the page."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.mathjax_url = MATHJAX_URL if mathjax else ""
    body, _ = exporter.from_notebook_node(offline_outputs(notebook))
    # require.js (from a CDN) would also capture plotly.js as an AMD module; the pages need neither.
    body = body.replace(f'<script src="{exporter.require_js_url}"></script>', "")
    if not mathjax:
        body = body.replace('<script src=""> </script>', "")
    return body.replace("</head>", f'<script src="{PLOTLY_JS}"></script>\n{_STYLE}\n</head>', 1)


def _with_navigation(page: str, previous: Chapter | None, following: Chapter | None) -> str:
    """The page with a bar linking to the contents and the neighbouring chapters."""
    links = ['<a href="index.html">Contents</a>']
    if previous:
        links.append(f'<a href="{previous.page}">&larr; {html.escape(previous.title)}</a>')
    if following:
        links.append(f'<a href="{following.page}">{html.escape(following.title)} &rarr;</a>')
    bar = f'<nav class="book-nav">{"".join(links)}</nav>'
    match = _BODY.search(page)
    return page[:match.end()] + bar + page[match.end():] if match else bar + page


def _write_plotly_js(path: Path) -> None:
    from plotly.offline import get_plotlyjs

    atomic.write_text(path, get_plotlyjs())


def _copy_mathjax(target: Path) -> bool:
    """Copy MathJax 2 from jupyter-server-mathjax beside the pages (once); False when it is not installed."""
    spec = importlib.util.find_spec("jupyter_server_mathjax")
    if spec is None or not spec.submodule_search_locations:
        return False
    source = Path(next(iter(spec.submodule_search_locations))) / "static"
    if not (source / "MathJax.js").is_file():
        return False
    if not (target / "MathJax.js").is_file():
        partial = target.with_name(f".{target.name}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(source, partial)
        partial.replace(target)  # a folder appears whole or not at all
    return True
