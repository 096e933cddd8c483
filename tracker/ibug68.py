"""The iBUG 68-point markup as a view of the dense face mesh, plus ``.pts`` files and NME scoring.

Many tools (dlib, OpenSeeFace clients, 300-W style benchmarks) speak the 68-point iBUG/Multi-PIE
markup rather than MediaPipe's 468/478-vertex mesh. Each of the 68 points is computed as a fixed
weighted sum of a few mesh vertices; the vertices and weights were fitted to human annotations by
``scripts/fit_ibug68.py`` (its docstring explains how) and ship in ``models/ibug68.npz``.

Point order (0-based, image-left = the subject's right): 0-16 jaw, 17-21 and 22-26 brows
(image-left, image-right), 27-35 nose, 36-41 and 42-47 eyes (image-left, image-right), 48-59 outer
and 60-67 inner mouth.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .runtime import ModelError, load_data_file

NUM_POINTS = 68
MAPPING_FILE = "ibug68.npz"

ALL = np.arange(0, 68)
JAW = np.arange(0, 17)
NON_JAW = np.arange(17, 68)
GROUPS: dict[str, np.ndarray] = {
    "jaw": JAW,
    "brow_left": np.arange(17, 22),     # image-left brow (the subject's right)
    "brow_right": np.arange(22, 27),
    "nose": np.arange(27, 36),
    "eye_left": np.arange(36, 42),      # image-left eye (the subject's right)
    "eye_right": np.arange(42, 48),
    "mouth": np.arange(48, 68),
}
# NME normaliser: the outer eye corners (the "inter-ocular" distance of 300-W).
OUTER_EYE_CORNERS = (36, 45)


class PtsFormatError(ValueError):
    """A ``.pts`` file is not a well-formed 68-point iBUG annotation."""


@dataclass(frozen=True)
class Ibug68Mapping:
    """Point j of the 68 = sum_k weights[j, k] * mesh[vertices[j, k]] (weights of a row sum to 1)."""

    vertices: np.ndarray   # (68, K) int64 mesh vertex indices (rows padded with weight 0)
    weights: np.ndarray    # (68, K) float32
    mesh_kind: str         # the Landmarker kind the mapping was fitted on ("attention" or "mesh")

    @classmethod
    def from_arrays(cls, data: dict[str, np.ndarray], source: str = MAPPING_FILE) -> "Ibug68Mapping":
        """Build and check a mapping from the arrays of an ``ibug68.npz``."""
        try:
            vertices = np.asarray(data["vertices"], np.int64)
            weights = np.asarray(data["weights"], np.float32)
            mesh_kind = str(data["mesh_kind"])
        except KeyError as exc:
            raise ModelError(f"{source} lacks the array {exc.args[0]!r}; regenerate it with "
                             f"scripts/fit_ibug68.py") from None
        if vertices.ndim != 2 or vertices.shape[0] != NUM_POINTS or weights.shape != vertices.shape:
            raise ModelError(f"{source}: vertices {vertices.shape} and weights {weights.shape} must both be "
                             f"(68, K); regenerate it with scripts/fit_ibug68.py")
        if vertices.min() < 0 or vertices.max() >= 468:
            raise ModelError(f"{source}: vertex indices must lie in 0..467 (found {vertices.min()}.."
                             f"{vertices.max()})")
        if not np.allclose(weights.sum(axis=1), 1.0, atol=1e-4):
            raise ModelError(f"{source}: the weights of every point must sum to 1")
        return cls(vertices, weights, mesh_kind)

    def rows(self, index: np.ndarray) -> "Ibug68Mapping":
        """The mapping of only the points ``index`` (in that order): ``apply`` then gives just those."""
        return Ibug68Mapping(self.vertices[index], self.weights[index], self.mesh_kind)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N >= 468, 2 or 3) mesh points in pixels -> (68, 2) float32 iBUG points (or the ``rows`` chosen)."""
        pts = np.asarray(points)
        if pts.ndim != 2 or pts.shape[0] < 468 or pts.shape[1] < 2:
            raise ValueError(f"expected mesh points of shape (468 or 478, 2 or 3), got {pts.shape}")
        picked = pts[self.vertices, :2].astype(np.float32, copy=False)    # (68, K, 2)
        return np.einsum("jkd,jk->jd", picked, self.weights)


@lru_cache(maxsize=None)
def default_mapping() -> Ibug68Mapping:
    """The mapping shipped in ``models/ibug68.npz`` (read once)."""
    return Ibug68Mapping.from_arrays(load_data_file(MAPPING_FILE))


def to_ibug68(points: np.ndarray, mapping: Ibug68Mapping | None = None) -> np.ndarray:
    """The 68 iBUG points (68, 2) float32 of one face's 478- or 468-point mesh (image pixels)."""
    return (mapping or default_mapping()).apply(points)


def nme(pred68: np.ndarray, gt68: np.ndarray, subset: np.ndarray | slice | None = None) -> float:
    """Mean point-to-point error over ``subset`` (default all 68) / distance of the outer eye corners.

    The normaliser always comes from the full ground truth (points 36 and 45), whatever the subset.
    """
    pred, gt = np.asarray(pred68, np.float64), np.asarray(gt68, np.float64)
    if pred.shape != (NUM_POINTS, 2) or gt.shape != (NUM_POINTS, 2):
        raise ValueError(f"nme needs two (68, 2) arrays, got {pred.shape} and {gt.shape}")
    norm = float(np.linalg.norm(gt[OUTER_EYE_CORNERS[0]] - gt[OUTER_EYE_CORNERS[1]]))
    if not norm > 0:
        raise ValueError("the ground truth's outer eye corners (36, 45) coincide; NME is undefined")
    idx = ALL if subset is None else subset
    return float(np.linalg.norm(pred[idx] - gt[idx], axis=1).mean() / norm)


def read_pts(path: str | Path) -> np.ndarray:
    """Read an iBUG ``.pts`` file (``version: 1`` / ``n_points: 68`` / ``{`` / 68 ``x y`` / ``}``).

    Coordinates are returned as written (this project's files are zero-based pixels), shape (68, 2).
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise PtsFormatError(f"{path} is not a text file") from None
    lines = [line.strip() for line in text.splitlines()]
    n_points = None
    i = 0
    while i < len(lines) and lines[i] != "{":
        key, sep, value = lines[i].partition(":")
        if lines[i] and (not sep or key.strip() not in ("version", "n_points")):
            raise PtsFormatError(f"{path}:{i + 1}: expected 'version: 1', 'n_points: 68' or '{{', "
                                 f"found {lines[i][:40]!r}")
        if key.strip() == "n_points":
            try:
                n_points = int(value)
            except ValueError:
                raise PtsFormatError(f"{path}:{i + 1}: n_points {value.strip()!r} is not an integer") from None
        i += 1
    if i == len(lines):
        raise PtsFormatError(f"{path}: no '{{' opening the point list")
    if n_points is None:
        raise PtsFormatError(f"{path}: the header lacks 'n_points: 68'")
    if n_points != NUM_POINTS:
        raise PtsFormatError(f"{path}: n_points is {n_points}; only the 68-point iBUG markup is supported")
    try:
        end = lines.index("}", i + 1)
    except ValueError:
        raise PtsFormatError(f"{path}: no '}}' closing the point list") from None
    if any(lines[end + 1:]):
        raise PtsFormatError(f"{path}:{end + 2}: unexpected text after the closing '}}'")
    rows = [(k + 1, line) for k, line in enumerate(lines[i + 1:end], start=i + 1) if line]
    if len(rows) != n_points:
        raise PtsFormatError(f"{path}: header says {n_points} points but the list holds {len(rows)}")
    points = np.empty((n_points, 2), np.float64)
    for row, (line_no, line) in enumerate(rows):
        fields = line.split()
        try:
            values = [float(f) for f in fields]
        except ValueError:
            values = []
        if len(values) != 2 or not all(math.isfinite(v) for v in values):
            raise PtsFormatError(f"{path}:{line_no}: expected two numbers 'x y', found {line[:40]!r}")
        points[row] = values
    return points


def write_pts(path: str | Path, points: np.ndarray) -> None:
    """Write (68, 2) points as an iBUG ``.pts`` file (coordinates written as given, 3 decimals)."""
    pts = np.asarray(points, np.float64)
    if pts.shape != (NUM_POINTS, 2) or not np.isfinite(pts).all():
        raise ValueError(f"write_pts needs finite (68, 2) points, got shape {pts.shape}")
    body = "\n".join(f"{x:.3f} {y:.3f}" for x, y in pts)
    Path(path).write_text(f"version: 1\nn_points: {NUM_POINTS}\n{{\n{body}\n}}\n")
