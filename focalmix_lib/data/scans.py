"""Reading and writing CT scans; isotropic resampling; HU normalisation.

A :class:`Scan` holds an int16 volume in Hounsfield units, ordered (z, y, x) as
``SimpleITK.GetArrayFromImage`` returns it, and the :class:`ScanGeometry` that places
its voxels in the world. Every format goes through SimpleITK: MetaImage (.mhd + .raw,
the LUNA16 format), NIfTI (.nii, .nii.gz) and DICOM series folders.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath, PureWindowsPath

import numpy as np
from numpy.typing import NDArray

from focalmix_lib import atomic
from focalmix_lib.data.coordinates import ScanGeometry
from focalmix_lib.errors import KitInputError

HU_MIN = -1200.0
HU_MAX = 600.0

# MetaImage element types and their numpy dtypes (the ones CT scans use).
_MET_DTYPES = {
    "MET_CHAR": np.int8, "MET_UCHAR": np.uint8, "MET_SHORT": np.int16, "MET_USHORT": np.uint16,
    "MET_INT": np.int32, "MET_UINT": np.uint32, "MET_FLOAT": np.float32, "MET_DOUBLE": np.float64,
}


@dataclass(frozen=True)
class Scan:
    """A CT volume: ``volume`` int16 (D, H, W) in HU, its ``geometry`` and source ``path``."""

    volume: NDArray[np.int16]
    geometry: ScanGeometry
    path: Path


def scan_uid(path: str | Path) -> str:
    """The series uid a scan file stands for: its name without .mhd / .nii / .nii.gz."""
    name = Path(path).name
    for suffix in (".nii.gz", ".mhd", ".nii", ".mha"):
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def read_scan(path: str | Path) -> Scan:
    """Read a .mhd/.raw pair, a NIfTI file or a DICOM series folder into a :class:`Scan`.

    A .mhd header is checked against its data file first (present, size equal to
    ``prod(DimSize) * sizeof(ElementType)``), so a truncated download fails with a
    message naming the file instead of a SimpleITK trace. Values outside the int16
    range (after DICOM rescale slope/intercept) are clipped.
    """
    import SimpleITK as sitk

    path = Path(path)
    if path.is_dir():
        image = _read_dicom_series(path)
    else:
        if not path.is_file():
            raise KitInputError(path, "scan file not found")
        if path.suffix.lower() == ".mhd":
            check_mhd(path)
        try:
            image = sitk.ReadImage(str(path))
        except RuntimeError as error:
            raise KitInputError(path, f"SimpleITK cannot read this scan: {_first_line(error)}") from None
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise KitInputError(path, f"expected a 3D single-channel scan, got {image.GetDimension()}D with "
                                  f"{image.GetNumberOfComponentsPerPixel()} component(s)")
    array = sitk.GetArrayFromImage(image)
    if array.dtype != np.int16:
        array = np.clip(np.rint(array), -32768, 32767).astype(np.int16)
    geometry = ScanGeometry(
        shape_zyx=tuple(int(n) for n in array.shape),  # type: ignore[arg-type]
        origin_xyz=tuple(float(v) for v in image.GetOrigin()),  # type: ignore[arg-type]
        spacing_xyz=tuple(float(v) for v in image.GetSpacing()),  # type: ignore[arg-type]
        direction=tuple(float(v) for v in image.GetDirection()),
    )
    return Scan(np.ascontiguousarray(array), geometry, path)


@dataclass(frozen=True)
class MhdHeader:
    """A MetaImage header: its ``key = value`` ``fields`` (strings) and its length ``size`` in bytes.

    MetaIO ends a header with ``ElementDataFile``; with ``ElementDataFile = LOCAL`` the
    voxels follow in the same file from byte ``size``, with ``LIST`` the data file names
    follow one a line (``listed``).
    """

    fields: dict[str, str]
    size: int
    listed: tuple[str, ...] = ()


def read_mhd_header(path: str | Path) -> MhdHeader:
    """Read a MetaImage header up to its ``ElementDataFile`` line (never the voxels of a LOCAL file)."""
    path = Path(path)
    fields: dict[str, str] = {}
    size = 0
    listed: list[str] = []
    try:
        with open(path, "rb") as stream:
            for raw in stream:
                size += len(raw)
                key, sep, value = raw.decode("latin-1").partition("=")
                if sep:
                    fields[key.strip()] = value.strip()
                if key.strip() == "ElementDataFile":
                    if value.strip().startswith("LIST"):
                        listed = [line.decode("latin-1").strip() for line in stream]
                    break
    except OSError as error:
        raise KitInputError(path, f"cannot read the header: {error.strerror}") from None
    return MhdHeader(fields, size, tuple(name for name in listed if name))


def check_mhd(path: Path) -> None:
    """Raise :class:`KitInputError` unless a .mhd header and its voxel data agree.

    The data must lie in the header's folder (``ElementDataFile`` names a file there or
    below it, or is LOCAL or a LIST of such files) and hold exactly
    ``prod(DimSize) * sizeof(ElementType)`` bytes (unless compressed).
    """
    header = read_mhd_header(path)
    fields = header.fields
    for key in ("DimSize", "ElementType", "ElementDataFile"):
        if key not in fields:
            raise KitInputError(path, f"the MetaImage header has no {key} field")
    try:
        dims = [int(v) for v in fields["DimSize"].split()]
    except ValueError:
        raise KitInputError(path, f"DimSize is not a list of integers: {fields['DimSize']!r}") from None
    if len(dims) != 3 or min(dims) <= 0:
        raise KitInputError(path, f"DimSize must be three positive integers, got {fields['DimSize']!r}")
    dtype = _MET_DTYPES.get(fields["ElementType"])
    if dtype is None:
        raise KitInputError(path, f"unsupported ElementType {fields['ElementType']!r}")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    expected = int(np.prod(dims)) * np.dtype(dtype).itemsize
    need = f"DimSize {dims} of {fields['ElementType']} in {path.name} needs {expected}"
    data_name = fields["ElementDataFile"]
    if data_name == "LOCAL":
        actual = path.stat().st_size - header.size
        if not compressed and actual != expected:
            raise KitInputError(path, f"ElementDataFile = LOCAL, but {actual} bytes follow the header; {need}")
        return
    names = header.listed if data_name.startswith("LIST") else (data_name,)
    if not names:
        raise KitInputError(path, "ElementDataFile = LIST names no data files")
    data_paths = [_data_path(path, name) for name in names]
    for data_path in data_paths:
        if not data_path.is_file():
            raise KitInputError(data_path, f"data file named by {path.name} is missing")
    if compressed:
        return
    actual = sum(data_path.stat().st_size for data_path in data_paths)
    where = data_paths[0] if len(data_paths) == 1 else path
    if actual < expected:
        raise KitInputError(where, f"truncated: {actual} bytes, but {need}")
    if actual > expected:
        raise KitInputError(where, f"{actual} bytes, more than the {expected} that DimSize {dims} "
                                   f"of {fields['ElementType']} in {path.name} describes")


def _data_path(header_path: Path, name: str) -> Path:
    """The data file ``name`` of a header, refused where it leaves the header's folder."""
    if "%" in name:
        raise KitInputError(header_path, f"ElementDataFile {name!r} is a file-name pattern, which the kit "
                                         "does not read; name the files with ElementDataFile = LIST")
    # Windows path rules split on both separators and see drive letters: the strictest reading.
    windows = PureWindowsPath(name)
    if PurePosixPath(name).is_absolute() or windows.anchor or ".." in windows.parts:
        raise KitInputError(header_path, f"ElementDataFile {name!r} points outside the folder of {header_path.name}; "
                                         "the data file must lie beside its header")
    return header_path.parent / name


def _read_dicom_series(folder: Path):  # -> SimpleITK.Image
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    series = reader.GetGDCMSeriesIDs(str(folder))
    if not series:
        raise KitInputError(folder, "no DICOM series in this folder")
    if len(series) > 1:
        raise KitInputError(folder, f"{len(series)} DICOM series in one folder; put each series in its own folder")
    files = reader.GetGDCMSeriesFileNames(str(folder), series[0])
    reader.SetFileNames(files)
    try:
        return reader.Execute()
    except RuntimeError as error:
        raise KitInputError(folder, f"SimpleITK cannot read this DICOM series: {_first_line(error)}") from None


def _first_line(error: Exception) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[-1] if lines else type(error).__name__


def write_mhd(path: str | Path, volume_int16: NDArray[np.int16], geometry: ScanGeometry) -> None:
    """Write ``volume_int16`` (D, H, W) as ``path`` (.mhd) plus its .raw, both atomically.

    The .raw goes first (through a temporary name), then the header that names it, so
    that a reader never finds a header whose data is incomplete. The header is
    written by hand (not SimpleITK) so the bytes depend only on the inputs.
    """
    path = Path(path)
    if path.suffix != ".mhd":
        raise ValueError(f"write_mhd writes .mhd files, got {path}")
    volume = np.ascontiguousarray(volume_int16)
    if volume.dtype != np.int16 or volume.ndim != 3:
        raise ValueError(f"expected an int16 (D, H, W) volume, got {volume.dtype} {volume.shape}")
    if tuple(volume.shape) != tuple(geometry.shape_zyx):
        raise ValueError(f"volume shape {volume.shape} differs from geometry {geometry.shape_zyx}")
    raw_path = path.with_suffix(".raw")
    with atomic.atomic_path(raw_path) as tmp:
        volume.astype("<i2", copy=False).tofile(tmp)
    d, h, w = volume.shape
    # MetaIO's TransformMatrix lists the direction cosines column by column.
    matrix = geometry.direction_matrix.T.reshape(-1)
    header = "\n".join([
        "ObjectType = Image",
        "NDims = 3",
        "BinaryData = True",
        "BinaryDataByteOrderMSB = False",
        "CompressedData = False",
        "TransformMatrix = " + " ".join(_fmt(v) for v in matrix),
        "Offset = " + " ".join(_fmt(v) for v in geometry.origin_xyz),
        "CenterOfRotation = 0 0 0",
        "AnatomicalOrientation = RAI",
        "ElementSpacing = " + " ".join(_fmt(v) for v in geometry.spacing_xyz),
        f"DimSize = {w} {h} {d}",
        "ElementType = MET_SHORT",
        f"ElementDataFile = {raw_path.name}",
        "",
    ])
    atomic.write_text(path, header)


def _fmt(value: float) -> str:
    return repr(float(value)).removesuffix(".0") if float(value).is_integer() else repr(float(value))


def resample_isotropic(
    volume: NDArray, geometry: ScanGeometry, spacing_mm: float, order: int = 1,
) -> tuple[NDArray[np.float32], ScanGeometry]:
    """Resample ``volume`` (D, H, W) onto the isotropic grid ``geometry.resampled(spacing_mm)``.

    Output voxel ``k`` along an axis of input spacing ``s`` samples the input at the
    continuous index ``k * spacing_mm / s``: the first voxel centre (the origin) stays
    fixed. Points past the last input voxel take the nearest edge value. ``order`` is
    the spline order (1: trilinear, 0: nearest). Returns float32 and the new geometry.
    """
    target = geometry.resampled(spacing_mm)
    from scipy import ndimage

    scale = np.asarray([spacing_mm / s for s in geometry.spacing_zyx], dtype=np.float64)
    out = np.empty(target.shape_zyx, dtype=np.float32)
    # A 1-D matrix is a pure per-axis scaling, which scipy runs on its fast zoom path.
    ndimage.affine_transform(
        np.asarray(volume, dtype=np.float32), scale, offset=0.0, output_shape=target.shape_zyx,
        output=out, order=order, mode="nearest", prefilter=False,
    )
    return out, target


def normalize_hu(volume: NDArray) -> NDArray[np.float32]:
    """Clip HU to [-1200, 600] and scale linearly to [0, 1]: (clip(v) + 1200) / 1800."""
    clipped = np.clip(np.asarray(volume, dtype=np.float32), HU_MIN, HU_MAX)
    return ((clipped - HU_MIN) / (HU_MAX - HU_MIN)).astype(np.float32, copy=False)
