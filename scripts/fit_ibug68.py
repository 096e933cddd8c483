#!/usr/bin/env python3
"""Fit the 68-point iBUG view of the face mesh to annotated photos and write ``models/ibug68.npz``.

Data: every ``NAME.pts`` + image pair in ``../shared/data/images`` (zero-based iBUG 68 annotations).
Each photo goes through the tracker's own single-image path: BlazeFace ("auto"), the mesh on the
detection's crop, then the mesh again on the crop its own landmarks give (the refine pass). On photos
with several faces, the detection whose box overlaps the annotation's box most (IoU) is used.

Model: iBUG point j is a fixed weighted sum of at most ``MAX_VERTICES`` (3) mesh vertices whose
weights sum to one, ``p_j = sum_k w_jk * mesh[v_jk]``. Weights that sum to one make the map commute
with any image translation, rotation and scale, so the fit needs no face frame; residuals are divided
by the annotation's size (square root of its bounding-box area) so every photo counts about equally.
Per point:

1. Candidates: the ``CANDIDATES`` (20) vertices with the smallest median normalised distance to the
   annotated point over the training photos.
2. Selection: greedy, adding the candidate that lowers the (weighted) squared error most, up to
   ``MAX_VERTICES``; the weights for a vertex set come from the normal equations (KKT system for the
   sum-to-one constraint).
3. Inner points (17-67: brows, eyes, nose, mouth): non-negative weights, so the point stays inside the
   patch of mesh it sits on (the best non-negative solution is the best affine solution on one face of
   the weight simplex, and with three vertices all seven faces are simply tried).
4. Jaw points (0-16): affine weights (they may be negative), with a light ridge pull towards equal
   weights (``RIDGE``). The mesh is a 3D-consistent surface, so an affine combination of its projected
   vertices is the projection of a fixed 3D point in the face's frame, possibly outside the mesh. That
   is what the 3D-style jaw of AFLW2000-3D needs (its points lie below and behind the mesh's oval, e.g.
   the chin is 1.4 x vertex 152 - 0.4 x vertex 175), and it follows head yaw with no pose term.
   The price: jaw points extrapolate, so they carry up to about twice the jitter of a mesh vertex.
5. Robustness: iteratively reweighted least squares with Huber weights (residuals beyond 1.5x the
   median are down-weighted), so a few broken meshes (profile faces) do not steer the fit.

Alternatives measured with ``--compare`` (leave-one-image-out, per source; attention mesh, 41 photos:
32 AFLW2000-3D with a 3D-style jaw, 9 300-W-style with the visible outline):

    method                        median NME68 all / AFLW / 300-W   median NME51   failures
    single vertex                 4.33 / 4.06 / 5.60 %              3.41 %         6/41
    non-negative blends, all      3.64 / 3.04 / 5.15 %              2.70 %         5/41
    silhouette jaw                4.07 / 3.37 / 5.32 %              2.70 %         5/41 (0/9 300-W)
    affine jaw (shipped)          3.15 / 2.97 / 5.27 %              2.70 %         5/41

The "silhouette" jaw takes, for each jaw point, the outermost vertex (along the jaw's outward normal,
turned with the eye line) among the vertices on a line running from the point into the face. It suits
the 300-W outline (no 300-W failure) but loses on the 3D-style AFLW2000-3D jaw, most of the data, so
the shipped map uses fixed affine jaw points. The remaining failures are profile faces where the mesh
itself breaks down (AFLW2000-3D yaw 68-96 degrees) and one 300-W face turned about 45 degrees.

Scores: NME = mean point error / distance of the annotated outer eye corners (36, 45), over all 68
points and over the 51 non-jaw points; a photo fails when NME68 > 10% or no face is found.

Output (deterministic: same inputs, same bytes): ``vertices`` (68, K) int32, ``weights`` (68, K)
float32 (unused slots have weight 0), ``mesh_kind``, ``method``, ``images`` (the photos fitted).

Usage: ``python scripts/fit_ibug68.py [--images DIR] [--mesh attention|mesh] [--out models/ibug68.npz]
[--compare] [--per-image] [--no-write]``
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import zipfile
from dataclasses import dataclass
from itertools import combinations
from pathlib import Path

import numpy as np

from facewire.tracker.analysis import load_image
from facewire.tracker.detection import FaceDetector, iou
from facewire.tracker.ibug68 import JAW, NON_JAW, Ibug68Mapping, nme, read_pts
from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks

log = logging.getLogger("fit_ibug68")

REPO = Path(__file__).resolve().parents[1]
DEFAULT_IMAGES = REPO.parent / "shared" / "data" / "images"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
MAX_VERTICES = 3
CANDIDATES = 20
RIDGE = 1e-4           # per photo, in squared normalised units
HUBER = 1.5            # residuals beyond HUBER x median residual are down-weighted
IRLS_ROUNDS = 5
FAILURE_NME = 0.10
# Silhouette variant (compare only): contour line length and half-width, in outer-eye-corner units.
CONTOUR_LENGTH, CONTOUR_BAND = 0.7, 0.08
# Outer eye corners of the mesh (image-left, image-right) used for the silhouette variant's frame.
MESH_EYE_CORNERS = (33, 263)


class FitError(RuntimeError):
    """The annotated photos cannot support a fit."""


@dataclass(frozen=True)
class Sample:
    name: str
    source: str                  # "aflw" (3D-style jaw) or "300w" (visible-outline jaw)
    truth: np.ndarray            # (68, 2)
    points: np.ndarray | None    # (N, 3) mesh points, None when no face was found

    @property
    def scale(self) -> float:
        """Size of the annotation: sqrt of its bounding-box area (does not collapse on profiles)."""
        return float(np.sqrt(np.prod(self.truth.max(axis=0) - self.truth.min(axis=0))))


@dataclass(frozen=True)
class Method:
    name: str
    jaw: str                     # "affine", "convex" or "silhouette"
    max_vertices: int = MAX_VERTICES


SHIPPED = Method("non-negative inner + affine jaw (shipped)", "affine")
ALTERNATIVES = (
    Method("single vertex", "convex", 1),
    Method("non-negative blends everywhere", "convex"),
    Method("non-negative inner + silhouette jaw", "silhouette"),
)


def source_of(name: str) -> str:
    return "aflw" if name.startswith("aflw2000") else "300w"


def collect(folder: Path, mesh_kind: str) -> list[Sample]:
    """Run detection + mesh + refine pass on every annotated photo in ``folder``."""
    pairs = []
    for pts in sorted(folder.glob("*.pts")):
        image = next((pts.with_suffix(s) for s in IMAGE_SUFFIXES if pts.with_suffix(s).exists()), None)
        if image is not None:
            pairs.append((image, pts))
    if len(pairs) < 5:
        raise FitError(f"{folder} holds {len(pairs)} annotated photos (NAME.pts beside NAME.jpg/png); "
                       f"at least 5 are needed")
    detector, landmarker = FaceDetector("auto"), Landmarker(mesh_kind)
    samples = []
    for image_path, pts_path in pairs:
        truth = read_pts(pts_path)
        image = load_image(image_path)
        detections = detector.detect(image)
        points = None
        if detections:
            box = np.concatenate([truth.min(axis=0), truth.max(axis=0)])
            overlaps = iou(box, np.stack([d.box for d in detections]))
            if overlaps.max() > 0:
                det = detections[int(np.argmax(overlaps))]
                mesh = landmarker(image, roi_from_detection(det))
                points = landmarker(image, roi_from_landmarks(mesh.points)).points
        if points is None:
            log.warning("%s: no face found over the annotation", image_path.name)
        samples.append(Sample(pts_path.stem, source_of(pts_path.stem), truth, points))
    return samples


# ----------------------------------------------------------------------------------------------
# Fitting one point

def _robust_weights(residuals: np.ndarray) -> np.ndarray:
    c = HUBER * float(np.median(residuals)) + 1e-12
    return np.minimum(1.0, c / np.maximum(residuals, 1e-12))


@dataclass(frozen=True)
class _Normal:
    """Weighted normal equations of one point's fit over its candidates: cost(w) = w'Hw - 2f'w + const.

    Methods take ``sets``, a (B, k) array of candidate positions, and solve all B subsets at once.
    """

    h: np.ndarray   # (m, m)
    f: np.ndarray   # (m,)
    ridge: float

    def cost(self, sets: np.ndarray, w: np.ndarray) -> np.ndarray:
        h = self.h[sets[:, :, None], sets[:, None, :]]
        return np.einsum("bk,bkl,bl->b", w, h, w) - 2 * np.einsum("bk,bk->b", self.f[sets], w)

    def affine(self, sets: np.ndarray, ridge: float) -> np.ndarray:
        """Best weights summing to 1, with a ridge pull towards equal weights (KKT systems)."""
        b, k = sets.shape
        kkt = np.zeros((b, k + 1, k + 1))
        kkt[:, :k, :k] = self.h[sets[:, :, None], sets[:, None, :]] + ridge * np.eye(k)
        kkt[:, :k, k] = kkt[:, k, :k] = 1.0
        rhs = np.concatenate([self.f[sets] + ridge / k, np.ones((b, 1))], axis=1)
        return np.linalg.solve(kkt, rhs[:, :, None])[:, :k, 0]

    def convex(self, sets: np.ndarray) -> np.ndarray:
        """Best non-negative weights summing to 1: the optimum lies on one face of the simplex, so take
        the affine optimum on every subset of the vertices and keep the best non-negative one."""
        b, k = sets.shape
        best, best_cost = np.zeros((b, k)), np.full(b, np.inf)
        for size in range(1, k + 1):
            for subset in combinations(range(k), size):
                w = np.zeros((b, k))
                w[:, subset] = self.affine(sets[:, subset], 1e-12)   # tiny ridge: never singular
                cost = np.where((w >= 0).all(axis=1), self.cost(sets, w), np.inf)
                better = cost < best_cost
                best[better], best_cost[better] = w[better], cost[better]
        return best

    def solve(self, sets: np.ndarray, affine: bool) -> np.ndarray:
        return self.affine(sets, self.ridge) if affine else self.convex(sets)


def fit_point(points: np.ndarray, target: np.ndarray, scale: np.ndarray, affine: bool,
              max_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Vertex indices and weights for one iBUG point from (n, V, 2) meshes and (n, 2) annotations."""
    dist = np.linalg.norm(points - target[:, None, :], axis=2) / scale[:, None]
    candidates = np.argsort(np.median(dist, axis=0), kind="stable")[:CANDIDATES]
    x = points[:, candidates, :] / scale[:, None, None]           # (n, m, 2)
    g = target / scale[:, None]                                     # (n, 2)
    a = np.ones(len(g))
    for _ in range(IRLS_ROUNDS):
        normal = _Normal(np.einsum("n,nkd,nld->kl", a, x, x), np.einsum("n,nkd,nd->k", a, x, g),
                         RIDGE * len(g))
        chosen: list[int] = []
        for _ in range(max_vertices):             # greedy: add the candidate that lowers the cost most
            others = np.array([c for c in range(len(candidates)) if c not in chosen])
            sets = np.column_stack([np.tile(chosen, (len(others), 1)).astype(int), others])
            costs = normal.cost(sets, normal.solve(sets, affine))
            chosen.append(int(others[np.argmin(costs)]))
        w = normal.solve(np.array([chosen]), affine)[0]
        residuals = np.linalg.norm(np.einsum("nkd,k->nd", x[:, chosen], w) - g, axis=1)
        a = _robust_weights(residuals)
    used = np.abs(w) > 1e-3
    return candidates[np.array(chosen)[used]], w[used] / w[used].sum()


# ----------------------------------------------------------------------------------------------
# Whole mappings

@dataclass(frozen=True)
class Silhouette:
    """Compare-only jaw: per jaw point, candidate vertices on a line into the face and its outward normal."""

    lines: tuple[np.ndarray, ...]   # 17 arrays of vertex indices
    normals: np.ndarray             # (17, 2) outward normal in the eye-line frame


def _eye_frames(points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per photo, unit eye-line axis u (image-left to image-right corner) and v (u turned 90 degrees)."""
    axis = points[:, MESH_EYE_CORNERS[1], :2] - points[:, MESH_EYE_CORNERS[0], :2]
    u = axis / np.linalg.norm(axis, axis=1, keepdims=True)
    return u, np.stack([-u[:, 1], u[:, 0]], axis=1)


def fit_silhouette(points: np.ndarray, jaw: Ibug68Mapping) -> Silhouette:
    """Contour lines from the mean mesh in the eye-line frame (units of the mesh's 3D eye-corner distance)."""
    u, v = _eye_frames(points)
    unit = np.linalg.norm(points[:, MESH_EYE_CORNERS[1]] - points[:, MESH_EYE_CORNERS[0]], axis=1)
    centred = points[:, :468, :2] - points[:, 1:2, :2]            # vertex 1: nose tip
    mean = np.stack([np.einsum("nvk,nk->nv", centred, u), np.einsum("nvk,nk->nv", centred, v)], 2)
    mean = (mean / unit[:, None, None]).mean(axis=0)                # (468, 2)
    anchors = np.einsum("jkd,jk->jd", mean[jaw.vertices[:17]], jaw.weights[:17])
    lines, normals = [], []
    for j in range(17):
        tangent = anchors[min(j + 1, 16)] - anchors[max(j - 1, 0)]
        normal = np.array([tangent[1], -tangent[0]]) / np.linalg.norm(tangent)
        if normal @ anchors[j] < 0:                                # point away from the nose tip
            normal = -normal
        rel = mean - anchors[j]
        inward = -(rel @ normal)
        across = np.abs(rel @ np.array([-normal[1], normal[0]]))
        lines.append(np.flatnonzero((inward > -0.02) & (inward < CONTOUR_LENGTH) & (across < CONTOUR_BAND)))
        normals.append(normal)
    return Silhouette(tuple(lines), np.array(normals))


def apply_silhouette(sil: Silhouette, points: np.ndarray) -> np.ndarray:
    """(n, N, 3) meshes -> (n, 17, 2) jaw points, the outermost vertex of each contour line."""
    u, v = _eye_frames(points)
    out = np.empty((len(points), 17, 2))
    for j, line in enumerate(sil.lines):
        outward = sil.normals[j, 0] * u + sil.normals[j, 1] * v
        score = np.einsum("nck,nk->nc", points[:, line, :2], outward)
        out[:, j] = points[np.arange(len(points)), line[np.argmax(score, axis=1)], :2]
    return out


@dataclass(frozen=True)
class Fitted:
    mapping: Ibug68Mapping
    silhouette: Silhouette | None

    def predict(self, points: np.ndarray) -> np.ndarray:
        """(n, N, 3) meshes -> (n, 68, 2)."""
        pred = np.stack([self.mapping.apply(p) for p in points]).astype(np.float64)
        if self.silhouette is not None:
            pred[:, :17] = apply_silhouette(self.silhouette, points)
        return pred


def fit(samples: list[Sample], method: Method, mesh_kind: str) -> Fitted:
    found = [s for s in samples if s.points is not None]
    if len(found) < 5:
        raise FitError(f"only {len(found)} photos have a face; at least 5 are needed")
    points = np.stack([s.points[:468, :2] for s in found]).astype(np.float64)
    truth = np.stack([s.truth for s in found])
    scale = np.array([s.scale for s in found])
    rows = [fit_point(points, truth[:, j], scale, method.jaw == "affine" and j in JAW, method.max_vertices)
            for j in range(68)]
    width = max(len(v) for v, _ in rows)
    vertices = np.zeros((68, width), np.int32)
    weights = np.zeros((68, width), np.float32)
    for j, (v, w) in enumerate(rows):
        vertices[j, :len(v)], weights[j, :len(w)] = v, w
    mapping = Ibug68Mapping(vertices.astype(np.int64), weights, mesh_kind)
    silhouette = None
    if method.jaw == "silhouette":
        silhouette = fit_silhouette(np.stack([s.points[:468] for s in found]).astype(np.float64), mapping)
    return Fitted(mapping, silhouette)


# ----------------------------------------------------------------------------------------------
# Scoring

@dataclass(frozen=True)
class Scores:
    nme68: np.ndarray    # per photo, NaN when no face
    nme51: np.ndarray


def score(samples: list[Sample], predictions: list[np.ndarray | None]) -> Scores:
    n68 = np.array([np.nan if p is None else nme(p, s.truth) for s, p in zip(samples, predictions)])
    n51 = np.array([np.nan if p is None else nme(p, s.truth, NON_JAW) for s, p in zip(samples, predictions)])
    return Scores(n68, n51)


def predict_all(fitted: Fitted, samples: list[Sample]) -> list[np.ndarray | None]:
    return [None if s.points is None else fitted.predict(s.points[None].astype(np.float64))[0] for s in samples]


def leave_one_out(samples: list[Sample], method: Method, mesh_kind: str) -> Scores:
    predictions = []
    for i, s in enumerate(samples):
        if s.points is None:
            predictions.append(None)
            continue
        fitted = fit(samples[:i] + samples[i + 1:], method, mesh_kind)
        predictions.append(fitted.predict(s.points[None].astype(np.float64))[0])
    return score(samples, predictions)


def summary(scores: Scores, mask: np.ndarray) -> str:
    n68, n51 = scores.nme68[mask], scores.nme51[mask]
    ok68, ok51 = n68[~np.isnan(n68)], n51[~np.isnan(n51)]
    fails = int(np.sum(np.isnan(n68) | (n68 > FAILURE_NME)))
    return (f"n={mask.sum():2d}  68: median {100 * np.median(ok68):5.2f}% mean {100 * ok68.mean():5.2f}%  "
            f"51: median {100 * np.median(ok51):5.2f}% mean {100 * ok51.mean():5.2f}%  "
            f"fail {fails}/{mask.sum()} ({100 * fails / mask.sum():.1f}%)")


def report(label: str, scores: Scores, samples: list[Sample]) -> None:
    sources = np.array([s.source for s in samples])
    log.info("%s", label)
    for name, mask in (("all ", np.ones(len(samples), bool)), ("aflw", sources == "aflw"),
                       ("300w", sources == "300w")):
        log.info("  %s %s", name, summary(scores, mask))


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like np.savez but byte-for-byte reproducible (fixed zip timestamps, sorted names)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name in sorted(arrays):
            data = io.BytesIO()
            np.lib.format.write_array(data, np.asarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, data.getvalue())
    path.write_bytes(buffer.getvalue())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of NAME.pts + images")
    parser.add_argument("--mesh", choices=("attention", "mesh"), default="attention")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "ibug68.npz")
    parser.add_argument("--compare", action="store_true", help="also score the alternative methods")
    parser.add_argument("--per-image", action="store_true", help="list every photo's NME")
    parser.add_argument("--no-write", action="store_true", help="score only, do not write the mapping")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    samples = collect(args.images, args.mesh)
    log.info("%d annotated photos, %d with a face (%s mesh)", len(samples),
             sum(s.points is not None for s in samples), args.mesh)
    methods = (SHIPPED,) + (ALTERNATIVES if args.compare else ())
    for method in methods:
        fitted = fit(samples, method, args.mesh)
        inside = score(samples, predict_all(fitted, samples))
        loo = leave_one_out(samples, method, args.mesh)
        report(f"{method.name}: in-sample", inside, samples)
        report(f"{method.name}: leave-one-image-out", loo, samples)
        if method is SHIPPED and args.per_image:
            log.info("%-28s %6s %6s %6s %6s", "photo", "in68", "in51", "loo68", "loo51")
            for k, s in enumerate(samples):
                log.info("%-28s %6.3f %6.3f %6.3f %6.3f", s.name, inside.nme68[k], inside.nme51[k],
                         loo.nme68[k], loo.nme51[k])
        if method is SHIPPED and not args.no_write:
            mapping = fitted.mapping
            write_npz(args.out, {
                "vertices": mapping.vertices.astype(np.int32),
                "weights": mapping.weights.astype(np.float32),
                "mesh_kind": np.array(args.mesh),
                "method": np.array(SHIPPED.name),
                "images": np.array([s.name for s in samples if s.points is not None]),
            })
            log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
