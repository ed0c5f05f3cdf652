"""Drawing the built-in dataset's images with numpy alone (so worker processes start fast).

See ``jaxconv.data.shapes`` for what the images are and why they are drawn this way.
"""


from __future__ import annotations

import functools

import numpy as np

CLASS_NAMES = ("disk", "ring", "triangle", "square", "star", "cross", "crescent", "bowtie", "ell", "tee")


def _polygon(u: np.ndarray, v: np.ndarray, vertices: np.ndarray) -> np.ndarray:
    """Points inside a polygon (vertices in order), by the even-odd rule."""
    inside = np.zeros(u.shape, bool)
    x0, y0 = vertices[-1]
    for x1, y1 in vertices:
        crosses = (y0 > v) != (y1 > v)
        with np.errstate(divide="ignore", invalid="ignore"):
            at = (x1 - x0) * (v - y0) / (y1 - y0) + x0
        inside ^= crosses & (u < at)
        x0, y0 = x1, y1
    return inside


def _regular(n: int, radius: float = 1.0, phase: float = np.pi / 2) -> np.ndarray:
    angles = phase + 2 * np.pi * np.arange(n) / n
    return np.stack([radius * np.cos(angles), radius * np.sin(angles)], axis=1)


def _star(points: int = 5, inner: float = 0.45) -> np.ndarray:
    outer = _regular(points)
    inner_vertices = _regular(points, inner, np.pi / 2 + np.pi / points)
    return np.stack([outer, inner_vertices], axis=1).reshape(-1, 2)


def _box(u, v, x0, x1, y0, y1):
    return (u >= x0) & (u <= x1) & (v >= y0) & (v <= y1)


def shape_mask(label: int, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """The class's shape at unit scale (it fits the unit disk), as a boolean mask over (u, v)."""
    r = np.hypot(u, v)
    name = CLASS_NAMES[label]
    if name == "disk":
        return r <= 1.0
    if name == "ring":
        return (r <= 1.0) & (r >= 0.6)
    if name == "triangle":
        return _polygon(u, v, _regular(3))
    if name == "square":
        return _polygon(u, v, _regular(4, phase=np.pi / 4))
    if name == "star":
        return _polygon(u, v, _star())
    if name == "cross":
        return _box(u, v, -0.28, 0.28, -0.95, 0.95) | _box(u, v, -0.95, 0.95, -0.28, 0.28)
    if name == "crescent":
        return (r <= 1.0) & (np.hypot(u - 0.45, v) > 0.8)
    if name == "bowtie":
        left = _polygon(u, v, np.array([[-0.95, -0.8], [-0.95, 0.8], [0.0, 0.0]]))
        right = _polygon(u, v, np.array([[0.95, -0.8], [0.95, 0.8], [0.0, 0.0]]))
        return left | right
    if name == "ell":
        return _box(u, v, -0.7, -0.25, -0.9, 0.9) | _box(u, v, -0.7, 0.7, -0.9, -0.45)
    if name == "tee":
        return _box(u, v, -0.85, 0.85, 0.45, 0.9) | _box(u, v, -0.23, 0.23, -0.9, 0.9)
    raise ValueError(f"label must be in 0..{len(CLASS_NAMES) - 1}, got {label}")


@functools.cache
def unit_area(label: int) -> float:
    """Area of the class's shape at unit scale, measured on a fine grid (for area matching)."""
    grid = np.linspace(-1.2, 1.2, 961)
    u, v = np.meshgrid(grid, grid)
    return float(shape_mask(label, u, v).mean() * 2.4**2)


def _smooth_field(rng: np.random.Generator, u: np.ndarray, v: np.ndarray, waves: int = 3) -> np.ndarray:
    """Low-frequency texture in [-1, 1]: a sum of random plane waves."""
    field = np.zeros_like(u)
    for _ in range(waves):
        angle, phase = rng.uniform(0, 2 * np.pi, 2)
        frequency = rng.uniform(1.0, 4.0)
        field += np.sin(frequency * np.pi * (u * np.cos(angle) + v * np.sin(angle)) + phase)
    return field / waves


def _grid(n: int) -> tuple[np.ndarray, np.ndarray]:
    centres = (np.arange(n, dtype=np.float32) + 0.5) / n * 2 - 1  # pixel centres in [-1, 1]
    return np.meshgrid(centres, -centres)


def _fine_window(size: int, supersample: int, box: tuple[float, float, float, float]):
    """The output pixels a box (x0, x1, y0, y1) in [-1, 1] touches, and a supersampled grid over them."""
    x0, x1, y0, y1 = box
    j0, j1 = max(0, int(np.floor((x0 + 1) / 2 * size))), min(size, int(np.ceil((x1 + 1) / 2 * size)))
    i0, i1 = max(0, int(np.floor((1 - y1) / 2 * size))), min(size, int(np.ceil((1 - y0) / 2 * size)))
    if j1 <= j0 or i1 <= i0:
        return None
    n = size * supersample
    xs = (np.arange(j0 * supersample, j1 * supersample, dtype=np.float32) + 0.5) / n * 2 - 1
    ys = -((np.arange(i0 * supersample, i1 * supersample, dtype=np.float32) + 0.5) / n * 2 - 1)
    u, v = np.meshgrid(xs, ys)
    return (slice(i0, i1), slice(j0, j1)), u, v


def _coverage(mask: np.ndarray, supersample: int) -> np.ndarray:
    """Fraction of each output pixel a supersampled mask covers (anti-aliasing)."""
    rows, cols = mask.shape[0] // supersample, mask.shape[1] // supersample
    return mask.reshape(rows, supersample, cols, supersample).mean(axis=(1, 3), dtype=np.float32)


def _paint(image: np.ndarray, region, coverage: np.ndarray, colour) -> None:
    alpha = coverage[..., None]
    image[region] = image[region] * (1 - alpha) + np.asarray(colour, np.float32) * alpha


def render(label: int, rng: np.random.Generator, size: int) -> np.ndarray:
    """One (size, size, 3) uint8 image of the class ``label``.

    Colours and textures are computed at the output resolution; the outlines of the shape and
    the clutter are drawn on a finer grid (only around each of them) and averaged down, so
    edges are anti-aliased.
    """
    supersample = 4 if size <= 48 else (2 if size <= 128 else 1)
    u, v = _grid(size)

    # Background: a colour gradient with texture.
    colour_a, colour_b = rng.uniform(0, 1, (2, 3)).astype(np.float32)
    angle = rng.uniform(0, 2 * np.pi)
    ramp = (((u * np.cos(angle) + v * np.sin(angle)) + 1.5) / 3)[..., None]
    image = colour_a * (1 - ramp) + colour_b * ramp
    image += 0.12 * _smooth_field(rng, u, v)[..., None] * rng.uniform(-1, 1, 3).astype(np.float32)

    # Clutter: thin strokes and small blobs in random colours, independent of the class.
    for _ in range(rng.integers(1, 4)):
        x0, y0, x1, y1 = rng.uniform(-1, 1, 4)
        width, colour = rng.uniform(0.01, 0.03), rng.uniform(0, 1, 3)
        window = _fine_window(size, supersample, (min(x0, x1) - width, max(x0, x1) + width,
                                                  min(y0, y1) - width, max(y0, y1) + width))
        if window is None:
            continue
        region, fu, fv = window
        length = max(np.hypot(x1 - x0, y1 - y0), 1e-6)
        t = np.clip(((fu - x0) * (x1 - x0) + (fv - y0) * (y1 - y0)) / length**2, 0, 1)
        stroke = np.hypot(fu - (x0 + t * (x1 - x0)), fv - (y0 + t * (y1 - y0))) < width
        _paint(image, region, _coverage(stroke, supersample), colour)
    for _ in range(rng.integers(0, 3)):
        cx, cy = rng.uniform(-1, 1, 2)
        radius, colour = rng.uniform(0.03, 0.08), rng.uniform(0, 1, 3)
        window = _fine_window(size, supersample, (cx - radius, cx + radius, cy - radius, cy + radius))
        if window is None:
            continue
        region, fu, fv = window
        _paint(image, region, _coverage(np.hypot(fu - cx, fv - cy) < radius, supersample), colour)

    # The shape: area fraction from one distribution for every class, then placed and rotated.
    area_fraction = rng.uniform(0.12, 0.3)
    scale = np.sqrt(area_fraction * 4.0 / unit_area(label))
    centre = rng.uniform(-1 + 0.8 * scale, 1 - 0.8 * scale, 2) if scale < 1.2 else np.zeros(2)
    theta = rng.uniform(0, 2 * np.pi)
    reach = 1.3 * scale  # every unit shape lies within radius 1.3
    region, fu, fv = _fine_window(size, supersample, (centre[0] - reach, centre[0] + reach,
                                                      centre[1] - reach, centre[1] + reach))
    du, dv = (fu - centre[0]) / scale, (fv - centre[1]) / scale
    cos, sin = np.cos(theta), np.sin(theta)
    coverage = _coverage(shape_mask(label, cos * du + sin * dv, -sin * du + cos * dv), supersample)
    weights = coverage.sum()
    behind = (image[region] * coverage[..., None]).sum(axis=(0, 1)) / max(weights, 1e-6)
    foreground = rng.uniform(0, 1, 3)
    for _ in range(10):  # keep the shape visible against what is behind it
        if np.abs(foreground - behind).max() > 0.3:
            break
        foreground = rng.uniform(0, 1, 3)
    fill = foreground.astype(np.float32) + 0.06 * _smooth_field(rng, u, v, waves=2)[region][..., None]
    alpha = coverage[..., None]
    image[region] = image[region] * (1 - alpha) + fill * alpha

    image += rng.normal(0, 0.02, image.shape).astype(np.float32)
    return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


def example_rng(seed: int, split: str, index: int) -> np.random.Generator:
    return np.random.default_rng([seed, {"train": 0, "test": 1}[split], index])
