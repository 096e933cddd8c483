"""Annotated pictures of results: landmarks, the 68-point markup, irises, head-pose axes and labels."""
from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np

if TYPE_CHECKING:
    from .pose import HeadPose

_GREEN, _YELLOW, _CYAN, _RED, _BLUE, _WHITE = (0, 200, 0), (0, 220, 255), (255, 255, 0), (0, 0, 255), \
    (255, 0, 0), (255, 255, 255)


def draw_points(image: np.ndarray, points: np.ndarray, colour=_GREEN, radius: int = 1) -> None:
    for x, y in np.round(points[:, :2]).astype(int):
        cv2.circle(image, (int(x), int(y)), radius, colour, -1, cv2.LINE_AA)


def draw_pose_axes(image: np.ndarray, pose: HeadPose, origin: np.ndarray, length: float) -> None:
    """Head axes from ``origin``: x (subject's left) red, y (down) green, z (away from the camera) blue."""
    o = tuple(int(v) for v in np.round(origin))
    for axis, colour in zip(pose.rotation.T, (_RED, _GREEN, _BLUE)):
        tip = np.asarray(origin) + axis[:2] * length
        cv2.arrowedLine(image, o, tuple(int(v) for v in np.round(tip)), colour, 2, cv2.LINE_AA, tipLength=0.15)


def draw_label(image: np.ndarray, text: str, at: tuple[int, int], colour=_WHITE) -> None:
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
    cv2.putText(image, text, at, cv2.FONT_HERSHEY_SIMPLEX, 0.45, colour, 1, cv2.LINE_AA)


def draw_face(image: np.ndarray, landmarks: np.ndarray, ibug68: np.ndarray, pose: HeadPose,
              label: str | None = None, irises: list[tuple[np.ndarray, float]] | None = None) -> None:
    """Draw one face's results onto ``image`` in place."""
    scale = max(1, round(float(np.ptp(landmarks[:, 0])) / 250))
    draw_points(image, landmarks, _GREEN, scale)
    draw_points(image, ibug68, _YELLOW, scale + 1)
    for centre, radius in irises or []:
        cv2.circle(image, tuple(int(v) for v in np.round(centre)), max(1, int(round(radius))), _CYAN, 1, cv2.LINE_AA)
    nose_tip = landmarks[1, :2]
    draw_pose_axes(image, pose, nose_tip, float(np.ptp(landmarks[:, 0])) * 0.5)
    if label:
        x0, y0 = int(landmarks[:, 0].min()), int(landmarks[:, 1].min()) - 6
        draw_label(image, label, (x0, max(12, y0)))
