"""Run the kit's notebooks headless with papermill (tests, the reproduction grid, CI).

``run_notebook("05_train.ipynb", out_dir, {"method": "focalmix"})`` executes
``notebooks/05_train.ipynb`` with those values injected after its ``parameters`` cell
and writes the executed copy to ``out_dir/05_train.ipynb``. The notebooks are those of
the checkout this package sits in, or, in an installed kit, the copies the wheel
carries in ``focalmix_lib/notebooks_data`` (pyproject.toml maps them there). The kernel is the one
installed in the running Python's environment (``python -m ipykernel install
--sys-prefix --name python3``), so the notebook sees the same focalmix_lib.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any



def _locate_notebooks() -> tuple[Path, Path | None]:
    """(the notebooks folder, the folder a notebook's relative paths start from by default).

    In a checkout: ``<repo>/notebooks``, run from the repository root (where the
    notebooks' default ``data/...`` and ``runs/...`` point). In an installed kit:
    ``focalmix_lib/notebooks_data``, run from the current folder (``None``).
    """
    package = Path(__file__).resolve().parents[1]
    checkout = package.parent
    if (checkout / "notebooks").is_dir() and (checkout / "pyproject.toml").is_file():
        return checkout / "notebooks", checkout
    return package / "notebooks_data", None


NOTEBOOK_DIR, DEFAULT_CWD = _locate_notebooks()
# Set while papermill runs a notebook: slider explorers then draw statically (an ipywidgets
# `interact` can deadlock a headless kernel).
STATIC_WIDGETS_ENV = "FOCALMIX_STATIC_WIDGETS"


def current_kernel_name() -> str:
    """Name of a Jupyter kernel installed in this interpreter's prefix (``python3`` preferred).

    jupyter_client starts a kernel whose command is plain ``python`` with
    ``sys.executable``, so such a kernel runs this very environment.
    """
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = Path(sys.prefix).resolve()
    specs = KernelSpecManager().find_kernel_specs()
    own = sorted(name for name, folder in specs.items() if Path(folder).resolve().is_relative_to(prefix))
    if not own:
        raise RuntimeError(f"no Jupyter kernel installed in {prefix}; run: "
                           f"{sys.executable} -m ipykernel install --sys-prefix --name python3")
    return "python3" if "python3" in own else own[0]


def run_notebook(name: str, out_dir: str | Path, parameters: Mapping[str, Any] | None = None,
                 cwd: str | Path | None = None, timeout_s: int | None = None, progress: bool = False) -> Path:
    """Execute ``notebooks/<name>`` with papermill into ``out_dir``; returns the executed notebook's path.

    ``name`` may omit ``.ipynb``. ``parameters`` override the notebook's ``parameters``
    cell by name. The kernel works in ``cwd`` (by default the repository root of a
    checkout, where the notebooks' relative paths such as ``runs/...`` point, or the
    current folder for an installed kit). ``timeout_s``
    bounds each cell. A failing cell raises ``papermill.PapermillExecutionError``; the
    executed copy, with the traceback, is still written.
    """
    import papermill

    filename = name if name.endswith(".ipynb") else f"{name}.ipynb"
    source = NOTEBOOK_DIR / filename
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such notebook")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / filename
    cwd = cwd if cwd is not None else DEFAULT_CWD
    # The kernel inherits this environment: its slider explorers draw statically.
    previous = os.environ.get(STATIC_WIDGETS_ENV)
    os.environ[STATIC_WIDGETS_ENV] = "1"
    try:
        papermill.execute_notebook(
            str(source), str(target), parameters=dict(parameters or {}), kernel_name=current_kernel_name(),
            cwd=None if cwd is None else str(cwd), progress_bar=progress, execution_timeout=timeout_s,
        )
    finally:
        if previous is None:
            del os.environ[STATIC_WIDGETS_ENV]
        else:
            os.environ[STATIC_WIDGETS_ENV] = previous
    return target
