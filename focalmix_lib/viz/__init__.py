"""Views of scans and detections: napari 3D scenes and their headless PNG renders."""
