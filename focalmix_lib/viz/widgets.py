"""Slider explorers that are live in Jupyter and static under batch execution.

``ipywidgets.interactive`` redraws through an Output widget; without a frontend
(papermill / nbclient) that capture can deadlock the kernel's message loop
(jupyter/nbclient#312: it hangs "sometimes"). Batch runs started by
:func:`focalmix_lib.reproduction.notebooks.run_notebook` set :data:`STATIC_WIDGETS_ENV`, and an
explorer then builds the same sliders and draws their default state once, directly.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from focalmix_lib.reproduction.notebooks import STATIC_WIDGETS_ENV


def explorer(draw: Callable[..., None], **sliders: Any):
    """Sliders (ipywidgets value widgets, by ``draw``'s argument names) that redraw ``draw``.

    Live: ``ipywidgets.interactive(draw, **sliders)``. Static (``FOCALMIX_STATIC_WIDGETS``
    set): ``draw`` runs once with the sliders' values; a ``VBox`` of the sliders is returned.
    """
    import ipywidgets as widgets

    if os.environ.get(STATIC_WIDGETS_ENV):
        draw(**{name: slider.value for name, slider in sliders.items()})
        return widgets.VBox(list(sliders.values()))
    return widgets.interactive(draw, **sliders)
