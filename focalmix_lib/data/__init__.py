"""LUNA16 and unlabeled-scan IO, coordinates, resampling, phantoms and patch sampling."""
