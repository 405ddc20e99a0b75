"""``focalmix view``: a scan with its annotations and detections in napari 3D, or as a PNG."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "view", help="look at a scan, its annotations and detections in napari (3D)",
        description="Open a scan of a LUNA16-layout folder in napari, in the patient's frame (head up, the "
                    "patient's right on the left, seen from the front) whatever the scan's direction: the "
                    "lungs' vessels and nodules as surfaces, annotations as green rings round each nodule, "
                    "detections as dots coloured by probability (red to yellow, with a colour bar), a caption "
                    "with the scan, the threshold and the legend, and a probability-threshold slider. With "
                    "--png, render the same view headless to a file and exit (Xvfb is started where DISPLAY "
                    "is unset; 300 x 300 takes seconds, 800 x 800 about a minute on software GL).",
    )
    parser.add_argument("--data", type=Path, required=True, help="LUNA16-layout folder (subset*/, annotations.csv)")
    parser.add_argument("--uid", required=True, help="seriesuid of the scan")
    parser.add_argument("--predictions", type=Path, help="submission CSV of detections (world mm; "
                        "an optional diameter_mm column sizes them)")
    parser.add_argument("--threshold", type=_probability, default=0.5,
                        help="hide detections below this probability (default 0.5)")
    parser.add_argument("--png", type=Path, help="render headless to this PNG and exit")
    parser.add_argument("--size", type=int, nargs=2, default=(800, 800), metavar=("HEIGHT", "WIDTH"),
                        help="PNG size in pixels (default 800 800)")
    parser.set_defaults(handler=run_view)


def _probability(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"must be in [0, 1], got {value:g}")
    return value


def run_view(args: argparse.Namespace) -> int:
    from focalmix_lib.viz import napari_view

    scene = napari_view.scene_from_files(args.data, args.uid, args.predictions)
    if args.png is not None:
        path = napari_view.render_png(args.png, scene, threshold=args.threshold,
                                      size=tuple(args.size))
        print(f"wrote {path}")
        return 0
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        print("focalmix view: error: no display to open napari on; use --png to render to a file", file=sys.stderr)
        return 1
    import napari

    napari_view.build_viewer(scene, threshold=args.threshold, show=True,
                             title=f"FocalMix kit: {args.uid}")
    napari.run()
    return 0
