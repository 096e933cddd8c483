"""Apple's 52 ARKit blendshapes from a face's mesh points, with MediaPipe's blendshape model.

MediaPipe's Face Landmarker feeds its blendshape model (an MLP-Mixer, ``models/face_blendshapes.onnx``)
146 of the 478 mesh points as (x, y) pixels of the whole image, z dropped; the model removes position
and scale itself, so any pixel origin works. It answers 52 sigmoid scores: ``_neutral`` first, then
Apple's other names in ``facewire.client.arkit.MEDIAPIPE_ORDER``. We return them in
``facewire.client.arkit.ARKIT_NAMES`` order, MediaPipe's 51 then ``tongueOut``, which MediaPipe's
model does not give: it is 0 unless a tongue score is passed in (FaceMesh V2's third output).

Left and Right are the subject's own sides, as in ARKit, because the mesh labels the subject's
anatomy: vertex 33 is the subject's right eye wherever it appears. That holds for an image of the
subject as a camera sees it. A mirrored image (``--mirror-input``) shows a mirrored face, whose
"left" is the subject's right, so for points from a mirrored image pass ``mirrored=True`` and every
Left/Right pair is swapped back (the sided directions jawLeft/jawRight and mouthLeft/mouthRight too:
a mouth moving to the mirrored face's left moves to the subject's right).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..client.arkit import ARKIT_NAMES, MEDIAPIPE_ORDER
from .runtime import BoundRunner, ModelRunner

MODEL_NAME = "face_blendshapes"

#: The mesh vertices MediaPipe's blendshape model reads, in its input order (irises 468-477 last).
INPUT_POINTS: tuple[int, ...] = (
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67,
    70, 78, 80, 81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146,
    148, 149, 150, 152, 153, 154, 155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181,
    185, 191, 195, 197, 234, 246, 249, 251, 263, 267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293,
    295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321, 323, 324, 332, 334, 336, 338, 356, 361,
    362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387, 388, 389, 390, 397, 398,
    400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477,
)
MESH_POINTS = 478
_INPUT_ROWS = np.array(INPUT_POINTS, np.int64)
TONGUE_OUT = ARKIT_NAMES.index("tongueOut")

# Model output k (1..51) goes to ARKIT_NAMES position _TO_ARKIT[k - 1].
_TO_ARKIT = np.array([ARKIT_NAMES.index(name) for name in MEDIAPIPE_ORDER[1:]], np.int64)


def _mirror_permutation() -> np.ndarray:
    """ARKIT_NAMES positions with every ...Left and ...Right name exchanged (the rest in place)."""
    order = []
    for name in ARKIT_NAMES:
        if name.endswith("Left"):
            name = name[:-4] + "Right"
        elif name.endswith("Right"):
            name = name[:-5] + "Left"
        order.append(ARKIT_NAMES.index(name))
    return np.array(order, np.int64)


_MIRROR = _mirror_permutation()


@dataclass(frozen=True)
class Blendshapes:
    """One face's 52 ARKit scores in ``ARKIT_NAMES`` order (0..1), and MediaPipe's ``_neutral`` score."""

    scores: np.ndarray     # (52,) float32, read-only
    neutral: float

    def __getitem__(self, name: str) -> float:
        try:
            return float(self.scores[ARKIT_NAMES.index(name)])
        except ValueError:
            raise KeyError(f"{name!r} is not one of Apple's 52 ARKit blendshape names") from None

    def as_dict(self) -> dict[str, float]:
        """Apple's name -> score, in ``ARKIT_NAMES`` order (for JSON and CSV)."""
        return dict(zip(ARKIT_NAMES, self.scores.tolist()))


def model_input(points: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """The model's (1, 146, 2) float32 input from a face's (478, 2 or 3) image points, z dropped."""
    points = np.asarray(points)
    if points.ndim != 2 or points.shape[0] != MESH_POINTS or points.shape[1] not in (2, 3):
        raise ValueError(f"blendshapes need the 478 mesh points as a (478, 2) or (478, 3) array, "
                         f"not shape {points.shape}")
    if out is None:
        out = np.empty((1, len(INPUT_POINTS), 2), np.float32)
    out[0] = points[_INPUT_ROWS, :2]
    # One pass checks both: NaN and infinities make the spread non-finite, and the model divides the
    # points by their spread.
    spread = out[0].max(axis=0) - out[0].min(axis=0)
    if not np.isfinite(spread).all():
        raise ValueError("blendshapes need finite mesh points; got NaN or infinite values")
    if spread.max() <= 0:
        raise ValueError("blendshapes need a face's mesh points; all 146 input points coincide")
    return out


class BlendshapeModel:
    """Runs MediaPipe's blendshape model on one face at a time.

    Not for use from several threads at once: the model is bound to one reused input buffer.
    """

    def __init__(self, threads: int = 1) -> None:
        self._runner = ModelRunner.load(MODEL_NAME, threads)
        self._input = np.empty((1, len(INPUT_POINTS), 2), np.float32)
        self._bound = BoundRunner(self._runner, self._input)

    def raw(self, points: np.ndarray) -> np.ndarray:
        """The model's own 52 scores in MediaPipe's order (``_neutral`` first), a new array."""
        model_input(points, self._input)
        return self._bound()[0].reshape(-1).copy()

    def __call__(self, points: np.ndarray, tongue_out: float | None = None, mirrored: bool = False) -> Blendshapes:
        """The 52 ARKit scores of the face whose (478, 2 or 3) image points are given.

        ``tongue_out``: FaceMesh V2's tongue score (0..1), else tongueOut is 0. ``mirrored``: the
        points come from a mirrored image; Left and Right are swapped back to the subject's sides.
        """
        raw = self.raw(points)
        scores = np.zeros(len(ARKIT_NAMES), np.float32)
        scores[_TO_ARKIT] = raw[1:]
        if tongue_out is not None:
            tongue = float(tongue_out)
            if not np.isfinite(tongue):
                raise ValueError(f"tongue_out must be a finite score, not {tongue_out!r}")
            scores[TONGUE_OUT] = min(max(tongue, 0.0), 1.0)
        if mirrored:
            scores = scores[_MIRROR]
        scores.flags.writeable = False
        return Blendshapes(scores, float(raw[0]))
