"""Gaze direction per eye from the 478-point mesh: eyeball centre to iris centre, in camera axes.

The mesh gives each iris centre (468: subject's right, 473: subject's left) and the eye corners, with
depth in the same pixel scale as x and y. The eyeball's centre is taken ``EYEBALL_DEPTH_MM`` behind
the midpoint of the eye's two corners, along the head's backward axis (the head pose's z column), with
millimetres turned into pixels by the face's own scale (the 3D distance between the iris centres is
taken as ``IPD_MM``). The gaze is the unit vector from that centre through the iris centre.

Axes are the camera's (as the image): x right, y down, z away from the camera; an eye looking into
the camera has a gaze near (0, 0, -1). It is a geometric estimate from the landmarks (no gaze model,
not validated against gaze ground truth); its worth is consistency: it turns with the eyes and the
head and mirrors exactly with the image.
"""
from __future__ import annotations

import numpy as np

# Mesh vertices: (outer, inner) eye corners and iris centre, subject's right then subject's left.
RIGHT_EYE = (33, 133, 468)
LEFT_EYE = (263, 362, 473)
EYEBALL_DEPTH_MM = 10.0    # eyeball centre behind the line between the eye corners (adult eye radius ~12 mm)
IPD_MM = 63.0


def gaze_vectors(points: np.ndarray, head_rotation: np.ndarray) -> np.ndarray:
    """(3, 3) float32 unit gaze vectors: subject's right eye, subject's left eye, combined (their mean).

    ``points`` is a (478, 3) mesh in pixels; ``head_rotation`` maps head to camera axes (``HeadPose``).
    """
    if points.shape != (478, 3):
        raise ValueError(f"gaze needs the 478-point mesh with irises, got points of shape {points.shape}")
    p = points.astype(np.float64)
    px_per_mm = float(np.linalg.norm(p[RIGHT_EYE[2]] - p[LEFT_EYE[2]])) / IPD_MM
    backward = np.asarray(head_rotation, np.float64)[:, 2]
    out = np.empty((3, 3), np.float64)
    for row, (outer, inner, iris) in enumerate((RIGHT_EYE, LEFT_EYE)):
        centre = (p[outer] + p[inner]) / 2 + backward * EYEBALL_DEPTH_MM * px_per_mm
        v = p[iris] - centre
        out[row] = v / np.linalg.norm(v)
    both = out[0] + out[1]
    out[2] = both / np.linalg.norm(both)
    return out.astype(np.float32)
