"""One synthetic chest CT: body, chest wall, lungs, airways, vessel trees, nodules, noise.

Everything is laid out in *grid millimetres* ``p = index * spacing`` (z, y, x), so the
image content does not depend on the scan's origin or direction; the phantom writer
turns nodule centres into world coordinates with ``voxel_to_world``. Sizes of the
anatomy scale with the body, and the body with the field of view.

Partial volume: every structure is painted with an occupancy
``o = clip(0.5 + (r - dist) / edge, 0, 1)`` (``edge`` about one voxel), then blended,
``image = (1 - o) image + o value``, which gives the soft edges and the faint thin
vessels of a real reconstruction.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

KINDS = ("solid", "part-solid", "ground-glass")
KIND_WEIGHTS = (0.7, 0.12, 0.18)
LOCATIONS = ("isolated", "juxta-vascular", "juxta-pleural")
LOCATION_WEIGHTS = (0.55, 0.25, 0.2)

LUNG_HU = -850.0
SOFT_TISSUE_HU = 40.0
FAT_HU = -100.0
BONE_HU = 500.0
AIR_HU = -1000.0


@dataclass(frozen=True)
class Finding:
    """A painted lesion: centre (z, y, x) in grid mm, diameter in mm, kind and location."""

    centre_mm: tuple[float, float, float]
    diameter_mm: float
    kind: str
    location: str


@dataclass(frozen=True)
class ChestRecipe:
    """What one phantom scan contains (all distances in mm)."""

    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    nodule_diameters_mm: tuple[float, ...]
    small_finding_diameters_mm: tuple[float, ...] = ()
    calcified_diameters_mm: tuple[float, ...] = ()
    noise_hu: float = 25.0
    correlated_noise_hu: float = 15.0


@dataclass
class _Chest:
    """The random anatomy of one scan, in grid mm."""

    body_yx: NDArray[np.float64]
    body_axes: NDArray[np.float64]   # (ay, ax)
    cavity_axes: NDArray[np.float64]  # thoracic cavity (ay, ax)
    z_base: float
    z_apex: float
    dome_mm: float
    lung_centres: NDArray[np.float64]  # (2, 2): (y, x) of right, left lung
    lung_axes: NDArray[np.float64]     # (ly, lx)
    heart_centre: NDArray[np.float64]  # (z, y, x)
    heart_axes: NDArray[np.float64]
    segments: list[tuple[NDArray[np.float64], NDArray[np.float64], float, float]] = field(default_factory=list)
    lung_grid: NDArray[np.bool_] | None = None
    spacing: NDArray[np.float64] | None = None

    def point_in_lung(self, p: NDArray) -> bool:
        """Whether the grid-mm point ``p`` (z, y, x) falls in a lung voxel of ``lung_grid``."""
        k = np.rint(p / self.spacing).astype(int)
        if np.any(k < 0) or np.any(k >= self.lung_grid.shape):
            return False
        return bool(self.lung_grid[k[0], k[1], k[2]])

    def lung_inside(self, z: NDArray, y: NDArray, x: NDArray) -> NDArray[np.bool_]:
        """True where the grid-mm point (z, y, x) lies in a lung (arrays broadcast)."""
        height = self.z_apex - self.z_base
        inside = np.zeros(np.broadcast_shapes(np.shape(z), np.shape(y), np.shape(x)), dtype=bool)
        t = (z - self.z_base) / height
        width = np.sqrt(np.clip(1.0 - np.clip(t, 0.0, None) ** 4, 0.0, None))  # narrows to the apex
        for cy, cx in self.lung_centres:
            q = ((y - cy) / self.lung_axes[0]) ** 2 + ((x - cx) / self.lung_axes[1]) ** 2
            dome_floor = self.z_base + self.dome_mm * (1.0 - np.clip(q, 0.0, 1.0))
            inside |= (q < width**2) & (z > dome_floor) & (t < 1.0)
        hz, hy, hx = self.heart_centre
        az, ay, ax = self.heart_axes
        heart = ((z - hz) / az) ** 2 + ((y - hy) / ay) ** 2 + ((x - hx) / ax) ** 2 < 1.0
        mediastinum = np.abs(x - self.body_yx[1]) < 0.14 * self.cavity_axes[1]
        return inside & ~heart & ~mediastinum


def _random_chest(rng: np.random.Generator, shape: NDArray, spacing: NDArray) -> _Chest:
    extent = shape * spacing
    ax = extent[2] * rng.uniform(0.40, 0.45)
    ay = ax * rng.uniform(0.62, 0.72)
    body_yx = np.array([extent[1] / 2 + rng.normal(0, 5), extent[2] / 2 + rng.normal(0, 5)])
    wall = rng.uniform(25.0, 40.0)
    cavity = np.array([ay - wall, ax - wall])
    z_base = extent[0] * rng.uniform(0.08, 0.14)
    z_apex = extent[0] * rng.uniform(0.90, 0.96)
    lung_axes = np.array([0.85 * cavity[0], 0.46 * cavity[1]])
    lung_centres = np.array([[body_yx[0] + 0.05 * cavity[0], body_yx[1] + s * 0.52 * cavity[1]] for s in (-1, 1)])
    height = z_apex - z_base
    heart_centre = np.array([z_base + 0.22 * height, body_yx[0] - 0.3 * cavity[0], body_yx[1] + 0.15 * cavity[1]])
    heart_axes = np.array([0.22 * height, 0.45 * cavity[0], 0.38 * cavity[1]]) * rng.uniform(0.85, 1.1)
    return _Chest(body_yx, np.array([ay, ax]), cavity, z_base, z_apex, 0.12 * height * rng.uniform(0.7, 1.2),
                  lung_centres, lung_axes, heart_centre, heart_axes)


def _grid(shape: NDArray, spacing: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    return tuple(  # type: ignore[return-value]
        (np.arange(n, dtype=np.float32) * s).reshape([-1 if a == k else 1 for a in range(3)])
        for k, (n, s) in enumerate(zip(shape, spacing))
    )


def _paint_body(chest: _Chest, rng: np.random.Generator, shape: NDArray, spacing: NDArray) -> NDArray[np.float32]:
    """Air, fat, muscle, soft tissue, ribs and spine, in HU (D, H, W)."""
    z, y, x = _grid(shape, spacing)
    by, bx = chest.body_yx
    ay, ax = chest.body_axes
    # Elliptic "radius" in mm-like units: r_e = 1 on the skin.
    r_e = np.sqrt(((y - by) / ay) ** 2 + ((x - bx) / ax) ** 2)[0]
    depth = (1.0 - r_e) * min(ay, ax)  # approximate depth below the skin, mm
    fat = rng.uniform(8.0, 20.0)
    muscle = fat + rng.uniform(8.0, 14.0)
    plane = np.full(r_e.shape, AIR_HU, dtype=np.float32)
    plane[depth > 0] = FAT_HU
    plane[depth > fat] = SOFT_TISSUE_HU + 10.0
    plane[depth > muscle] = SOFT_TISSUE_HU
    image = np.broadcast_to(plane, tuple(shape)).copy()
    # Ribs: arcs of a ring just outside the cavity, in tilted bands along z.
    ring = np.abs(np.sqrt(((y - by) / (chest.cavity_axes[0] + 6)) ** 2 + ((x - bx) / (chest.cavity_axes[1] + 6)) ** 2) - 1.0)
    angle = np.arctan2(y - by, x - bx)
    period = rng.uniform(24.0, 30.0)
    band = np.sin(2 * np.pi * (z + 12.0 * np.abs(np.sin(angle))) / period) > 0.55
    ribs = (ring * chest.cavity_axes[1] < 4.0) & band & (np.abs(x - bx) > 0.2 * ax) & (z > chest.z_base * 0.5)
    image[ribs] = BONE_HU + 150.0
    # Spine: a vertebral body behind the mediastinum, with a dense rim.
    spine_y = by + chest.cavity_axes[0] + 0.5 * (ay - chest.cavity_axes[0]) - 18.0
    dist = np.sqrt((y - spine_y) ** 2 + (x - bx) ** 2)[0]
    image[:, dist < 17.0] = BONE_HU + 250.0
    image[:, dist < 14.0] = BONE_HU - 250.0
    return image


def _grow_vessel_tree(chest: _Chest, rng: np.random.Generator, hilum: NDArray, outward: NDArray,
                      min_radius: float) -> None:
    """Append branching segments (a, b, r_a, r_b) that narrow towards the periphery."""
    roots = [np.array([1.0, 0.0, 0.4 * outward[2]]), np.array([-1.0, 0.0, 0.6 * outward[2]]),
             np.array([0.3, -0.8, 0.6 * outward[2]]), np.array([0.3, 0.8, 0.6 * outward[2]]),
             np.array([-0.4, -0.7, 0.7 * outward[2]]), np.array([-0.4, 0.7, 0.7 * outward[2]])]
    stack = [(hilum, d / np.linalg.norm(d), rng.uniform(3.0, 4.5)) for d in roots]
    while stack:
        start, direction, radius = stack.pop()
        length = radius * rng.uniform(5.0, 8.0)
        for _ in range(6):
            end = start + direction * length
            if chest.point_in_lung(end):
                break
            direction = _turn(direction, rng, rng.uniform(0.3, 0.9))
        else:
            continue
        end_radius = radius * 0.9
        chest.segments.append((start, end, radius, end_radius))
        child = end_radius * rng.uniform(0.75, 0.88)
        if child < min_radius:
            continue
        spread = rng.uniform(0.35, 0.7)
        away = end - hilum
        bias = 0.3 * away / (np.linalg.norm(away) + 1e-6)
        for sign in (1.0, -1.0):
            d = _turn(direction, rng, sign * spread) + bias
            stack.append((end, d / np.linalg.norm(d), child * rng.uniform(0.9, 1.1)))


def _turn(direction: NDArray, rng: np.random.Generator, angle: float) -> NDArray:
    """``direction`` rotated by ``angle`` radians about a random perpendicular axis."""
    r = rng.normal(size=3)
    perp = r - (r @ direction) * direction
    perp /= np.sqrt(perp @ perp) + 1e-12
    out = direction * np.cos(angle) + perp * np.sin(angle)
    return out / np.linalg.norm(out)


def _bbox(lo_mm: NDArray, hi_mm: NDArray, shape: NDArray, spacing: NDArray) -> tuple[slice, ...] | None:
    lo = np.maximum(np.floor(lo_mm / spacing).astype(int), 0)
    hi = np.minimum(np.ceil(hi_mm / spacing).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    return tuple(slice(a, b) for a, b in zip(lo, hi))


def _local_grid(box: tuple[slice, ...], spacing: NDArray) -> tuple[NDArray, NDArray, NDArray]:
    return tuple(  # type: ignore[return-value]
        (np.arange(s.start, s.stop, dtype=np.float32) * spacing[k]).reshape([-1 if a == k else 1 for a in range(3)])
        for k, s in enumerate(box)
    )


def _paint_tube(occupancy: NDArray[np.float32], a: NDArray, b: NDArray, ra: float, rb: float,
                spacing: NDArray, edge: float) -> None:
    """occupancy = max(occupancy, o) of a tapered tube from ``a`` (radius ra) to ``b`` (rb)."""
    reach = max(ra, rb) + edge
    box = _bbox(np.minimum(a, b) - reach, np.maximum(a, b) + reach, np.asarray(occupancy.shape), spacing)
    if box is None:
        return
    z, y, x = _local_grid(box, spacing)
    d = (b - a).astype(np.float32)
    length2 = float(d @ d) + 1e-9
    t = np.clip(((z - a[0]) * d[0] + (y - a[1]) * d[1] + (x - a[2]) * d[2]) / length2, 0.0, 1.0)
    dist = np.sqrt((z - a[0] - t * d[0]) ** 2 + (y - a[1] - t * d[1]) ** 2 + (x - a[2] - t * d[2]) ** 2)
    occ = np.clip(0.5 + (ra + t * (rb - ra) - dist) / edge, 0.0, 1.0)
    np.maximum(occupancy[box], occ, out=occupancy[box])


def _nodule_occupancy(box: tuple[slice, ...], centre: NDArray, radius: float, spacing: NDArray, edge: float,
                      rng: np.random.Generator) -> NDArray[np.float32]:
    """Occupancy of a lobulated sphere: radius modulated by a smooth function of direction."""
    z, y, x = _local_grid(box, spacing)
    v = (z - centre[0], y - centre[1], x - centre[2])
    dist = np.sqrt(v[0] ** 2 + v[1] ** 2 + v[2] ** 2) + 1e-6
    u1, u2 = rng.normal(size=(2, 3))
    u1 /= np.linalg.norm(u1)
    u2 /= np.linalg.norm(u2)
    cos1 = (v[0] * u1[0] + v[1] * u1[1] + v[2] * u1[2]) / dist
    cos2 = (v[0] * u2[0] + v[1] * u2[1] + v[2] * u2[2]) / dist
    lobes = 1.0 + rng.uniform(0.0, 0.12) * np.sin(3 * cos1 + rng.uniform(0, 6)) * np.cos(3 * cos2)
    return np.clip(0.5 + (radius * lobes - dist) / edge, 0.0, 1.0).astype(np.float32)


class _Placer:
    """Finds centres for lesions from a coarse (4 mm or more) distance-to-pleura map."""

    def __init__(self, chest: _Chest, lung: NDArray[np.bool_], spacing: NDArray, rng: np.random.Generator):
        self.stride = np.maximum(1, np.ceil(4.0 / spacing - 1e-6)).astype(int)
        coarse = lung[:: self.stride[0], :: self.stride[1], :: self.stride[2]]
        self.cell = self.stride * spacing
        self.depth = ndimage.distance_transform_edt(coarse, sampling=self.cell)
        self.chest, self.rng, self.placed = chest, rng, []  # type: list[tuple[NDArray, float]]

    def depth_at(self, p: NDArray) -> float:
        k = np.round(p / self.cell).astype(int)
        if np.any(k < 0) or np.any(k >= self.depth.shape):
            return 0.0
        return float(self.depth[tuple(k)])

    def _free(self, p: NDArray, radius: float) -> bool:
        return all(np.linalg.norm(p - q) > radius + r + 5.0 for q, r in self.placed)

    def _pick(self, lo: float, hi: float) -> NDArray | None:
        cells = np.argwhere((self.depth > lo) & (self.depth <= hi))
        if len(cells) == 0:
            return None
        jitter = self.rng.uniform(-0.5, 0.5, size=3) * self.cell
        return cells[self.rng.integers(len(cells))] * self.cell + jitter

    def place(self, radius: float, location: str) -> tuple[NDArray, str] | None:
        for _ in range(30):
            if location == "juxta-pleural":
                p = self._pick(0.6 * radius, 0.6 * radius + max(self.cell))
            elif location == "juxta-vascular":
                p = self._next_to_vessel(radius)
            else:
                p = self._pick(radius + 4.0, np.inf)
            if p is not None and self._free(p, radius) and self.chest.point_in_lung(p):
                self.placed.append((p, radius))
                return p, location
        return None if location == "isolated" else self.place(radius, "isolated")

    def _next_to_vessel(self, radius: float) -> NDArray | None:
        candidates = [s for s in self.chest.segments if 0.8 <= s[2] <= 4.0]
        if not candidates:
            return None
        a, b, ra, _ = candidates[self.rng.integers(len(candidates))]
        axis = (b - a) / (np.linalg.norm(b - a) + 1e-9)
        r = self.rng.normal(size=3)
        side = r - (r @ axis) * axis
        side /= np.sqrt(side @ side) + 1e-9
        p = a + self.rng.uniform(0.2, 0.8) * (b - a) + side * (radius + 0.5 * ra)
        return p if self.depth_at(p) > radius + 2.0 else None


def render_chest(recipe: ChestRecipe, rng: np.random.Generator) -> tuple[NDArray[np.int16], list[Finding]]:
    """Paint one scan. Returns the int16 HU volume (D, H, W) and its findings (grid mm)."""
    shape = np.asarray(recipe.shape_zyx)
    spacing = np.asarray(recipe.spacing_zyx, dtype=np.float64)
    edge = float(np.mean(spacing))
    chest = _random_chest(rng, shape, spacing)
    image = _paint_body(chest, rng, shape, spacing)

    z, y, x = _grid(shape, spacing)
    lung = chest.lung_inside(z, y, x)
    chest.lung_grid, chest.spacing = lung, spacing
    # Parenchyma: denser towards the back (gravity), with slow texture.
    gradient = 60.0 * (y - chest.body_yx[0]) / chest.body_axes[0]
    texture = _smooth_noise(rng, shape, spacing, cell_mm=12.0) * 25.0
    image = np.where(lung, LUNG_HU + gradient + texture, image).astype(np.float32)

    occupancy = np.zeros(tuple(shape), dtype=np.float32)
    min_radius = max(0.5, 0.35 * float(spacing[1:].mean()))
    for (cy, cx), sign in zip(chest.lung_centres, (-1.0, 1.0)):
        hilum = np.array([chest.z_base + 0.55 * (chest.z_apex - chest.z_base), cy, cx - sign * 0.6 * chest.lung_axes[1]])
        _grow_vessel_tree(chest, rng, hilum, np.array([0.0, 0.0, sign]), min_radius)
    for a, b, ra, rb in chest.segments:
        _paint_tube(occupancy, a, b, ra, rb, spacing, edge)
    image += occupancy * (SOFT_TISSUE_HU - image)

    _paint_airways(image, chest, rng, spacing, edge)

    placer = _Placer(chest, lung, spacing, rng)
    findings: list[Finding] = []
    for d in recipe.nodule_diameters_mm:
        kind = KINDS[rng.choice(len(KINDS), p=KIND_WEIGHTS)]
        location = LOCATIONS[rng.choice(len(LOCATIONS), p=LOCATION_WEIGHTS)]
        spot = placer.place(d / 2, location)
        if spot is not None:
            findings.append(_paint_nodule(image, spot[0], d, kind, spot[1], spacing, edge, rng))
    for d in recipe.small_finding_diameters_mm:
        spot = placer.place(d / 2, "isolated")
        if spot is not None:
            findings.append(_paint_nodule(image, spot[0], d, "solid", "small", spacing, edge, rng))
    for d in recipe.calcified_diameters_mm:
        spot = placer.place(d / 2, "isolated")
        if spot is not None:
            findings.append(_paint_nodule(image, spot[0], d, "calcified", "isolated", spacing, edge, rng))

    image += rng.normal(0.0, recipe.noise_hu, size=image.shape).astype(np.float32)
    correlated = ndimage.gaussian_filter(rng.normal(size=image.shape).astype(np.float32), sigma=(0.0, 1.2, 1.2))
    image += correlated * (recipe.correlated_noise_hu / (float(correlated.std()) + 1e-6))
    return np.clip(np.rint(image), -1024, 3071).astype(np.int16), findings


def _paint_airways(image: NDArray[np.float32], chest: _Chest, rng: np.random.Generator, spacing: NDArray,
                   edge: float) -> None:
    """Trachea from the top of the scan to the carina, then the two main bronchi (air in a soft wall)."""
    height = chest.z_apex - chest.z_base
    top = image.shape[0] * spacing[0]
    by, bx = chest.body_yx
    carina = np.array([chest.z_base + 0.62 * height, by - 0.1 * chest.cavity_axes[0], bx])
    pieces = [(np.array([top, carina[1], bx]), carina, rng.uniform(7.0, 9.0))]
    for (cy, cx), sign in zip(chest.lung_centres, (-1.0, 1.0)):
        hilum = np.array([chest.z_base + 0.55 * height, cy, cx - sign * 0.5 * chest.lung_axes[1]])
        pieces.append((carina, hilum, rng.uniform(4.5, 6.0)))
    wall = np.zeros(image.shape, dtype=np.float32)
    lumen = np.zeros(image.shape, dtype=np.float32)
    for a, b, r in pieces:
        _paint_tube(wall, a, b, r + 2.0, r + 2.0, spacing, edge)
        _paint_tube(lumen, a, b, r, r, spacing, edge)
    image += wall * (SOFT_TISSUE_HU - image)
    image += lumen * (AIR_HU - image)


def _paint_nodule(image: NDArray[np.float32], centre: NDArray, diameter: float, kind: str, location: str,
                  spacing: NDArray, edge: float, rng: np.random.Generator) -> Finding:
    radius = diameter / 2
    reach = 1.2 * radius + edge
    box = _bbox(centre - reach, centre + reach, np.asarray(image.shape), spacing)
    assert box is not None, "a placed nodule lies in its scan"
    occ = _nodule_occupancy(box, centre, radius, spacing, edge, rng)
    region = image[box]
    if kind == "ground-glass" or kind == "part-solid":
        region += occ * (rng.uniform(-600.0, -350.0) - region)
    if kind == "part-solid":
        core = _nodule_occupancy(box, centre, radius * rng.uniform(0.3, 0.6), spacing, edge, rng)
        region += core * (rng.uniform(0.0, 60.0) - region)
    if kind == "solid":
        region += occ * (rng.uniform(-20.0, 80.0) - region)
    if kind == "calcified":
        region += occ * (rng.uniform(300.0, 700.0) - region)
    return Finding(tuple(float(v) for v in centre), float(diameter), kind, location)  # type: ignore[arg-type]


def _smooth_noise(rng: np.random.Generator, shape: NDArray, spacing: NDArray, cell_mm: float) -> NDArray[np.float32]:
    """Unit-scale noise that varies over about ``cell_mm``: coarse white noise, interpolated linearly.

    The interpolation runs one axis at a time, so only the last pass touches the full grid.
    """
    coarse_shape = np.maximum(2, np.ceil(shape * spacing / cell_mm).astype(int) + 1)
    out = rng.normal(size=tuple(coarse_shape)).astype(np.float32)
    for axis in (2, 1, 0):
        position = np.arange(shape[axis]) * (coarse_shape[axis] - 1) / max(shape[axis] - 1, 1)
        lo = np.minimum(position.astype(int), coarse_shape[axis] - 2)
        weight = (position - lo).astype(np.float32).reshape([-1 if a == axis else 1 for a in range(3)])
        out = np.take(out, lo, axis=axis) * (1 - weight) + np.take(out, lo + 1, axis=axis) * weight
    return out
