"""The one-stage 3D anchor-based FPN detector: anchors, boxes, matching, model, inference.

- ``anchors``: cubic anchors at cell centres of every FPN level; flat <-> per-level maps.
- ``boxes``: 3D IoU, the anchor box coder, 3D NMS.
- ``matching``: anchor <-> annotation matching and per-anchor training targets.
- ``model``: :class:`~focalmix_lib.detection.model.DetectorConfig` and
  :class:`~focalmix_lib.detection.model.FPNDetector`.
- ``inference``: sliding-window detection over a whole resampled scan.
"""
