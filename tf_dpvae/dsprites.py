"""A deterministic, numpy-only re-rendering of the dSprites factor grid.

dSprites (Matthey, Higgins, Hassabis & Lerchner 2017, github.com/google-deepmind/
dsprites-dataset; the same grid disentanglement_lib uses) is the Cartesian product of five
generative factors, each image a 64×64 binary sprite.  This module re-draws that grid
procedurally, for machines that cannot download the original ``.npz``.  **It is a
re-rendering, not the original pixels**: the shapes, their sizes and the position range are
close to dSprites' but not identical, so any number measured on it (ELBO, disentanglement
scores, ...) is *not* comparable with published dSprites numbers — only with other numbers
measured on this renderer.

Factors (dSprites order and dSprites' ``latents_values``)
----------------------------------------------------------
=============  ====  ==================================================
name           size  values
=============  ====  ==================================================
shape             3  0 = square, 1 = ellipse, 2 = heart
scale             6  ``np.linspace(0.5, 1.0, 6)``
orientation      40  ``np.linspace(0, 2π, 40)`` radians
position_x       32  ``np.linspace(0, 1, 32)``
position_y       32  ``np.linspace(0, 1, 32)``
=============  ====  ==================================================

dSprites also has a constant ``color`` factor (a single value, white); it carries no
information and is omitted here, so factor index rows have 5 columns, not 6.  As in
dSprites, orientation 0 and 2π are both in the grid (the first and last orientation give the
same image, up to float rounding at exact pixel-centre ties), and the square (4-fold) and ellipse (2-fold) symmetries make several orientations
render identically; the grid is kept exactly as dSprites defines it regardless.

Geometry (all lengths in image units: the image is the unit square [0, 1]²)
-----------------------------------------------------------------------------
* Coordinates: column coordinate ``c`` grows to the right; row coordinate ``r`` grows
  **downward** (image rows).  ``position_x`` moves the shape right (towards higher column
  indices), ``position_y`` moves it **down** (towards higher row indices).
* Size: a shape's canonical frame is measured in units of ``BASE_SIZE · scale`` with
  ``BASE_SIZE = 0.3``: at scale 1 the square's side is 0.3 of the image side (19.2 px of 64,
  like dSprites' ~19–20 px shapes).
* Position: the centre is ``MARGIN + pos · (1 − 2·MARGIN)`` with ``MARGIN = 0.25``, i.e. the
  centre travels over [0.25, 0.75] (32 px at 64 px, so one position step ≈ one pixel, as in
  dSprites).  The largest circumradius of any shape at scale 1 is the square's half-diagonal,
  0.3·√2/2 ≈ 0.212, so at any orientation and extreme position a shape stays ≥ 0.038 image
  units (2.4 px at 64, 1.2 px at 32) away from the border: nothing is ever clipped.
* Orientation: the shape is rotated by ``orientation`` radians about its centre,
  **counter-clockwise as displayed** (rows downward).
* Shapes, in the canonical frame (u right, v **up**, unit = ``BASE_SIZE · scale``), written
  once in :func:`_inside`:

  - square:  ``max(|u|, |v|) ≤ 1/2`` — an axis-aligned square of side 1 (area 1).
  - ellipse: ``(u/a)² + (v/b)² ≤ 1`` with ``a = 1/√2``, ``b = a/2`` — axis ratio 0.5, long
    axis horizontal at orientation 0; its long axis equals the square's diagonal, so both
    share the circumradius 1/√2 (area π/4 ≈ 0.785).
  - heart:   ``(x² + y² − 1)³ − x² y³ ≤ 0`` with ``x = k·u``, ``y = k·v + y₀``, where
    ``k = 2·1.139028`` (the curve's width, so the heart is 1 wide like the square; it is
    2.23666/k ≈ 0.98 tall) and ``y₀ = (1.23666 − 1)/2 ≈ 0.1183`` centres the curve's bounding
    box on the shape centre.  The tip points **down** at orientation 0; circumradius ≈ 0.587,
    area ≈ 0.706.

  At scale 1 the shapes cover ≈ 9.0 % (square), 7.1 % (ellipse) and 6.4 % (heart) of the image
  (rasterised at 64 px, centred, orientation 0: 9.8 %, 7.2 %, 6.3 %).
* Rasterisation: a pixel is 1 if its centre point ``((col + ½)/R, (row + ½)/R)`` lies inside
  the shape (closed set), else 0 — one sample per pixel, no supersampling, so images are
  exactly binary and a lower resolution draws the same geometry on a coarser lattice.
  Per-image cos/sin come from Python's ``math`` module and all array arithmetic is
  element-wise IEEE float32/float64, so rendering is bit-for-bit deterministic and
  :func:`render` and :func:`render_batch` agree exactly.
"""

from __future__ import annotations

import math

import numpy as np

FACTOR_NAMES = ("shape", "scale", "orientation", "position_x", "position_y")
FACTOR_SIZES = (3, 6, 40, 32, 32)
SHAPE_NAMES = ("square", "ellipse", "heart")

BASE_SIZE = 0.3   # canonical unit (square side) at scale 1, in image units
MARGIN = 0.25     # centre = MARGIN + pos · (1 − 2·MARGIN)

_ELLIPSE_A = 1.0 / math.sqrt(2.0)          # semi-major axis (canonical units)
_ELLIPSE_B = _ELLIPSE_A / 2.0              # semi-minor axis: axis ratio 0.5
_HEART_HALF_WIDTH = 1.139028               # max |x| on (x²+y²−1)³ = x²y³
_HEART_TOP = 1.236659                      # max y on the curve (min y is −1)
_HEART_K = 2.0 * _HEART_HALF_WIDTH         # curve units per canonical unit (width 1)
_HEART_Y0 = (_HEART_TOP - 1.0) / 2.0       # bounding-box centre of the curve

_CHUNK_PIXELS = 1 << 21                    # pixels per chunk in render_batch (~8 MB float32)

_VALUES = {
    "shape": np.arange(3, dtype=np.float64),
    "scale": np.linspace(0.5, 1.0, 6),
    "orientation": np.linspace(0.0, 2.0 * np.pi, 40),
    "position_x": np.linspace(0.0, 1.0, 32),
    "position_y": np.linspace(0.0, 1.0, 32),
}


def factor_values(name):
    """The values of factor ``name`` (one of ``FACTOR_NAMES``) as in dSprites' latents_values.

    ``shape`` values are the shape ids 0, 1, 2 (square, ellipse, heart; dSprites stores them
    as 1, 2, 3).  Returns a fresh float64 array.
    """
    if name not in _VALUES:
        raise KeyError(f"unknown factor {name!r}; expected one of {FACTOR_NAMES}")
    return _VALUES[name].copy()


def _inside(shape_id, u, v):
    """Boolean mask of canonical-frame points (u right, v up; unit BASE_SIZE·scale) in a shape.

    This is the single definition of the three shapes (see the module docstring).
    """
    if shape_id == 0:     # square of side 1
        return np.maximum(np.abs(u), np.abs(v)) <= 0.5
    if shape_id == 1:     # ellipse, semi-axes a (horizontal) and b = a/2
        return (u * (1.0 / _ELLIPSE_A)) ** 2 + (v * (1.0 / _ELLIPSE_B)) ** 2 <= 1.0
    if shape_id == 2:     # heart (x²+y²−1)³ − x²y³ ≤ 0, tip down
        x = u * _HEART_K
        y = v * _HEART_K + _HEART_Y0
        x2 = x * x
        return (x2 + y * y - 1.0) ** 3 - x2 * (y * y * y) <= 0.0
    raise ValueError(f"shape id must be 0, 1 or 2, got {shape_id!r}")


def _rasterise(shape_ids, scales, cos_t, sin_t, x, y, resolution):
    """Render N images given per-image parameters (1-D arrays of length N).

    ``shape_ids`` int; ``scales`` scale values; ``cos_t``/``sin_t`` the orientation's cosine
    and sine; ``x``/``y`` positions in [0, 1].  Returns float32 [N, resolution, resolution].
    """
    n = len(shape_ids)
    out = np.zeros((n, resolution, resolution), np.float32)
    if n == 0:
        return out
    t = (np.arange(resolution, dtype=np.float64) + 0.5) / resolution   # pixel centres
    inv = 1.0 / (BASE_SIZE * np.asarray(scales, np.float64))
    cx = MARGIN + np.asarray(x, np.float64) * (1.0 - 2.0 * MARGIN)
    cy = MARGIN + np.asarray(y, np.float64) * (1.0 - 2.0 * MARGIN)
    # Offsets from the centre in canonical units; dv is "up" (rows grow downward).
    du = ((t[None, :] - cx[:, None]) * inv[:, None]).astype(np.float32)        # [N, cols]
    dv = ((cy[:, None] - t[None, :]) * inv[:, None]).astype(np.float32)        # [N, rows]
    c = np.asarray(cos_t, np.float32)[:, None, None]
    s = np.asarray(sin_t, np.float32)[:, None, None]
    # Inverse rotation (by −θ) of the displayed point into the canonical frame, separably:
    # u = cos·du + sin·dv, v = −sin·du + cos·dv, as [N, rows, cols] broadcasts.
    u = c * du[:, None, :] + s * dv[:, :, None]
    v = c * dv[:, :, None] - s * du[:, None, :]
    shape_ids = np.asarray(shape_ids)
    for shape_id in np.unique(shape_ids):
        rows = np.flatnonzero(shape_ids == shape_id)
        if len(rows) == n:
            out[...] = _inside(int(shape_id), u, v)
        else:
            out[rows] = _inside(int(shape_id), u[rows], v[rows])
    return out


def _shape_id(shape):
    """Shape id (0, 1, 2) from an id or a name in SHAPE_NAMES."""
    if isinstance(shape, str):
        return SHAPE_NAMES.index(shape)
    shape_id = int(shape)
    if shape_id not in (0, 1, 2):
        raise ValueError(f"shape must be 0, 1, 2 or one of {SHAPE_NAMES}, got {shape!r}")
    return shape_id


def render(shape, scale, orientation, x, y, resolution=64):
    """Render one sprite from factor *values* → float32 [resolution, resolution] of 0/1.

    ``shape``: 0/1/2 or "square"/"ellipse"/"heart"; ``scale``: size multiplier (dSprites uses
    0.5…1); ``orientation``: radians, counter-clockwise as displayed; ``x``, ``y``: positions
    in [0, 1] (x to the right, y downward).  Geometry as in the module docstring.
    """
    image = _rasterise(np.array([_shape_id(shape)]), np.array([float(scale)]),
                       np.array([math.cos(orientation)]), np.array([math.sin(orientation)]),
                       np.array([float(x)]), np.array([float(y)]), int(resolution))
    return image[0]


_COS = np.array([math.cos(a) for a in _VALUES["orientation"]])
_SIN = np.array([math.sin(a) for a in _VALUES["orientation"]])


def render_batch(factor_indices, resolution=64):
    """Render a batch from factor *indices* → float32 [N, resolution, resolution, 1] of 0/1.

    ``factor_indices``: int array [N, 5] of indices into each factor's values (columns in
    ``FACTOR_NAMES`` order).  Vectorised over the batch and processed in chunks of about
    2M pixels to bound memory; identical, pixel for pixel, to calling :func:`render` on the
    corresponding values.  (The whole grid would be 737,280 × 64 × 64 float32 ≈ 12 GB, so
    render it in slices.)
    """
    idx = np.asarray(factor_indices)
    if idx.ndim != 2 or idx.shape[1] != len(FACTOR_NAMES):
        raise ValueError(f"factor_indices must be [N, {len(FACTOR_NAMES)}], got {idx.shape}")
    idx = idx.astype(np.int64)
    if np.any(idx < 0) or np.any(idx >= np.array(FACTOR_SIZES)):
        raise ValueError("factor index out of range")
    resolution = int(resolution)
    n = len(idx)
    out = np.empty((n, resolution, resolution, 1), np.float32)
    chunk = max(1, _CHUNK_PIXELS // (resolution * resolution))
    for start in range(0, n, chunk):
        part = idx[start:start + chunk]
        out[start:start + chunk, :, :, 0] = _rasterise(
            part[:, 0], _VALUES["scale"][part[:, 1]], _COS[part[:, 2]], _SIN[part[:, 2]],
            _VALUES["position_x"][part[:, 3]], _VALUES["position_y"][part[:, 4]], resolution)
    return out


def _kept_indices(sizes, subsample):
    """Per-factor kept index arrays: every ``subsample[name]``-th index of each factor."""
    sizes = tuple(int(s) for s in (FACTOR_SIZES if sizes is None else sizes))
    if len(sizes) != len(FACTOR_NAMES):
        raise ValueError(f"sizes must have {len(FACTOR_NAMES)} entries, got {sizes}")
    subsample = dict(subsample or {})
    unknown = set(subsample) - set(FACTOR_NAMES)
    if unknown:
        raise KeyError(f"unknown factor(s) in subsample: {sorted(unknown)}")
    kept = []
    for name, size in zip(FACTOR_NAMES, sizes):
        step = int(subsample.get(name, 1))
        if step < 1:
            raise ValueError(f"subsample step for {name!r} must be >= 1, got {step}")
        kept.append(np.arange(0, size, step, dtype=np.int64))
    return kept


def grid_indices(sizes=None, subsample=None):
    """All factor index combinations in row-major dSprites order → int64 [M, 5].

    Shape varies slowest and position_y fastest, so row i of the full grid is dSprites image i
    (ignoring the constant colour factor).  ``sizes`` defaults to ``FACTOR_SIZES``.
    ``subsample``: optional {factor name: step} keeping every step-th value of that factor
    (indices 0, step, 2·step, …), e.g. ``{"orientation": 4, "position_x": 2,
    "position_y": 2}``; the returned indices still index the full value lists, so a subsampled
    grid is a sub-grid of the real one.
    """
    kept = _kept_indices(sizes, subsample)
    mesh = np.meshgrid(*kept, indexing="ij")
    return np.stack([m.reshape(-1) for m in mesh], axis=1)


def index_of(factor_indices):
    """Flat row-major index in the full grid of factor index rows ([N, 5] or one row [5]).

    Inverse of :func:`grid_indices`: ``index_of(grid_indices()) == arange(737280)``.
    """
    idx = np.asarray(factor_indices, np.int64)
    return np.ravel_multi_index(tuple(np.moveaxis(idx, -1, 0)), FACTOR_SIZES)


def sample_factors(n, rng, subsample=None):
    """``n`` factor index rows drawn uniformly (with replacement) from the (sub)grid → [n, 5].

    ``rng``: a ``np.random.Generator`` (or anything ``np.random.default_rng`` accepts, e.g. an
    int seed).  Each factor is drawn independently and uniformly from its kept indices, which
    is the uniform distribution over the product (sub)grid.
    """
    rng = np.random.default_rng(rng)
    kept = _kept_indices(None, subsample)
    return np.stack([k[rng.integers(0, len(k), size=int(n))] for k in kept], axis=1)
