"""The files of an evaluation: froc.json, froc.csv (the curve), froc_nodules.csv, froc.png, froc.html."""

from __future__ import annotations

from pathlib import Path

from focalmix_lib import atomic
from focalmix_lib.evaluation.plots import write_froc_html, write_froc_png
from focalmix_lib.evaluation.results import FrocResult, NoduleHits


def write_outputs(result: FrocResult, out_dir: str | Path) -> list[Path]:
    """Write froc.json, froc.csv (the curve), froc_nodules.csv, froc.png and froc.html, each atomically."""
    out_dir = Path(out_dir)
    paths = [out_dir / name for name in ("froc.json", "froc.csv", "froc_nodules.csv", "froc.png", "froc.html")]
    atomic.write_json(paths[0], result.to_json())
    curve = "".join(f"{x!r},{y!r},{t!r}\n" for x, y, t in
                    zip(result.fps_per_scan.tolist(), result.sensitivity.tolist(), result.thresholds.tolist()))
    atomic.write_text(paths[1], "fps_per_scan,sensitivity,threshold\n" + curve)
    atomic.write_text(paths[2], _nodule_hits_csv(result.nodules))
    write_froc_png(result, paths[3])
    write_froc_html(result, paths[4])
    return paths


def _nodule_hits_csv(nodules: NoduleHits) -> str:
    lines = ["seriesuid,coordX,coordY,coordZ,diameter_mm,annotation_row,detected,score,prediction_row\n"]
    for uid, (x, y, z), d, row, hit, score, mark in zip(
        nodules.seriesuid, nodules.world_xyz.tolist(), nodules.diameter_mm.tolist(), nodules.annotation_row.tolist(),
        nodules.detected.tolist(), nodules.score.tolist(), nodules.prediction_row.tolist(),
    ):
        lines.append(f"{uid},{x!r},{y!r},{z!r},{d!r},{row},{int(hit)},{'' if not hit else repr(score)},{mark}\n")
    return "".join(lines)
