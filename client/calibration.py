"""Per-user expression calibration: record labelled frames, train an RBF SVM (libsvm), classify live frames.

A user shows each expression (neutral, smile, surprise, ...) for a few seconds; :class:`ExpressionCalibrator`
keeps a sample of the frames, trains a probabilistic RBF support vector machine on them and then names the
expression of new frames with a probability per expression.

Features must describe the *expression*, not where the head is or how far it is from the camera:

* OpenSeeFace's 3D points are expressed in the head's own frame (the head pose is taken out by its 3D fit,
  independent of the face's position and size in the image). They are aligned to the mean face shape of the
  training samples with a 3D similarity transform (rotation, uniform scale, translation) fitted on rigid
  points only (jaw ends, nose, eye corners), scaled so that the outer eye corners are 1 apart. This also
  takes out the residual rotation and scale of frames whose 3D points OpenSeeFace left unaligned (low
  confidence), and an open mouth does not move the frame of reference.
* OpenSeeFace's 14 expression features (already relative to the user's rest face) are appended.

The image landmarks themselves are not used: under head turns their 2D shape changes (a projection), and on
our validation videos (``scripts/validate_calibration.py``) adding them lowered the held-out accuracy.

Each of the two blocks is scaled by a single factor (the mean spread of its dimensions), not per
dimension: per-dimension scaling blows the jitter of near-rigid points up to the size of real expression
changes, which cost 10 to 30 points of held-out accuracy in our validation.

C and gamma are chosen by cross-validation over a small grid. The folds are *contiguous runs of frames* of
each expression rather than libsvm's shuffled ``-v`` folds: consecutive video frames are near duplicates, so
shuffled folds score almost every setting at 100%. Even contiguous folds come from one recording session,
where the face varies less than between sessions, so the smoothest setting (smallest gamma, then smallest C)
within one point of the best cross-validated balanced accuracy is taken.

Models are saved as one zip archive holding ``meta.json`` (format name, version, settings, statistics and
SHA-256 of the other members), ``model.txt`` (libsvm's own text format) and ``samples.npz`` (the recorded
samples, the mean shape and the scaler). Nothing is ever unpickled. Model files are exchanged between users, so
:meth:`ExpressionCalibrator.load` trusts none of it (:mod:`facewire.client.calibration_archive`): sizes are
bounded before anything is decompressed, checksums are checked before any member is parsed, npy headers
before their arrays are read, and libsvm's text completely before libsvm sees it. Every bad file gives
:class:`ModelFileError`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import io
import json
import logging
import os
import re
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import numpy as np

from .calibration_archive import (
    MAX_SAMPLES,
    ArchiveError,
    ArraySpec,
    check_directory,
    check_float,
    check_int,
    check_keys,
    check_libsvm_model,
    check_names,
    max_model_text_bytes,
    max_npz_bytes,
    parse_json,
    read_arrays,
    read_member,
)
from .protocol import FEATURE_NAMES, OpenSeeFaceRecord

__all__ = [
    "ANCHOR_POINTS",
    "CalibrationError",
    "CalibrationStats",
    "ExpressionCalibrator",
    "FEATURE_LENGTH",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FaceSample",
    "MAX_SAMPLES",
    "ModelFileError",
    "NotEnoughDataError",
    "NotTrainedError",
    "Prediction",
    "UnusableFrameError",
    "expression_features",
    "mean_face_shape",
]

_log = logging.getLogger(__name__)

#: Written into every saved model; :meth:`ExpressionCalibrator.load` refuses anything else.
FORMAT_NAME = "facewire-expression-model"
#: Bumped whenever the archive layout or the feature definition changes.
FORMAT_VERSION = 1

#: Landmarks (OpenSeeFace's 66-point order) that expressions barely move: jaw ends, nose, eye corners.
ANCHOR_POINTS: tuple[int, ...] = (0, 1, 15, 16, 27, 28, 29, 30, 31, 32, 33, 34, 35, 36, 39, 42, 45)
_EYE_CORNERS = (36, 45)
_NUM_LANDMARKS = 66
_GEOMETRY_LENGTH = _NUM_LANDMARKS * 3
#: Length of :func:`expression_features`: 66 aligned 3D points, then the 14 OpenSeeFace features.
FEATURE_LENGTH = _GEOMETRY_LENGTH + len(FEATURE_NAMES)

_MODEL_MEMBER, _SAMPLES_MEMBER, _META_MEMBER = "model.txt", "samples.npz", "meta.json"
_C_GRID = (0.1, 1.0, 10.0, 100.0)
_GAMMA_FACTORS = (0.03, 0.1, 0.3, 1.0)  # times 1 / FEATURE_LENGTH (the features have unit spread)
_SELECTION_TOLERANCE = 0.01

#: The arrays of samples.npz: the samples (always), the mean shape and scaler (trained models only).
_ARRAYS = {
    "labels": ArraySpec("iu", (None,)),
    "points3d": ArraySpec("f", (None, _NUM_LANDMARKS, 3)),
    "features": ArraySpec("f", (None, len(FEATURE_NAMES))),
    "reference": ArraySpec("f", (_NUM_LANDMARKS, 3), required=False),
    "scaler_mean": ArraySpec("f", (FEATURE_LENGTH,), required=False),
    "scaler_scale": ArraySpec("f", (FEATURE_LENGTH,), required=False),
}
#: Largest unpacked size of each member of a model file, from the most samples a file may hold.
_MEMBER_LIMITS = {
    _META_MEMBER: 1 << 20,
    _MODEL_MEMBER: max_model_text_bytes(FEATURE_LENGTH),
    _SAMPLES_MEMBER: max_npz_bytes(_ARRAYS),
}
#: Deflate never grows data by more than a few bytes per 16 KB block; 1 MB covers zip headers.
_MAX_FILE_BYTES = sum(_MEMBER_LIMITS.values()) + (1 << 20)
_MAX_FOLDS = 1000
#: Recorded 3D points and features are head-sized numbers; larger ones only come from a crafted file.
_MAX_COORDINATE = 1e6


class CalibrationError(Exception):
    """Base class of the calibration errors."""


class NotEnoughDataError(CalibrationError):
    """Training needs at least two expressions with enough samples each."""


class NotTrainedError(CalibrationError):
    """The calibrator has no trained model yet: call train() or load a trained file."""


class UnusableFrameError(CalibrationError, ValueError):
    """A frame carries no usable face geometry (failed 3D fit, collapsed points)."""


class ModelFileError(CalibrationError):
    """A file is not a Facewire expression model, is damaged, or comes from a newer version."""


def _read_only(array: np.ndarray) -> np.ndarray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class FaceSample:
    """What expression features are built from, for one frame (read-only float64 arrays)."""

    points3d: np.ndarray  # (66, 3) OpenSeeFace's 3D landmarks in the head's frame (no pupils/eyeballs)
    features: np.ndarray  # (14,) OpenSeeFace's expression features in FEATURE_NAMES order

    @classmethod
    def from_record(cls, rec: OpenSeeFaceRecord) -> FaceSample:
        """The sample of one record; raises UnusableFrameError when its 3D points cannot be used."""
        if not rec.success:
            raise UnusableFrameError(f"face {rec.id} at time {rec.time:.3f}: OpenSeeFace's 3D fit failed")
        points = np.array(rec.points3d[:_NUM_LANDMARKS], dtype=np.float64)
        if _eye_distance(points) < 1e-6:
            raise UnusableFrameError(f"face {rec.id} at time {rec.time:.3f}: its 3D points are collapsed")
        features = np.array([rec.features[name] for name in FEATURE_NAMES], dtype=np.float64)
        return cls(_read_only(points), _read_only(features))


@dataclass(frozen=True)
class Prediction:
    """The most probable expression of a frame and the probability of every trained expression.

    Probabilities treat every expression as equally likely before looking at the frame, however many
    samples each had in training.
    """

    expression: str
    probability: float
    probabilities: Mapping[str, float]


@dataclass(frozen=True)
class CalibrationStats:
    """What training saw and how well cross-validation did.

    ``confusion[i][j]`` counts samples of ``expressions[i]`` that cross-validation classified as
    ``expressions[j]``; ``accuracy`` is the share on the diagonal and ``balanced_accuracy`` the mean of the
    per-expression shares (what C and gamma are chosen by, so that a long neutral recording cannot hide a
    poorly recognised expression).
    """

    expressions: tuple[str, ...]
    samples: Mapping[str, int]
    accuracy: float
    balanced_accuracy: float
    confusion: tuple[tuple[int, ...], ...]
    folds: int
    c: float
    gamma: float

    def recall(self, expression: str) -> float:
        """Share of the samples of ``expression`` that cross-validation got right."""
        i = self.expressions.index(expression)
        row = self.confusion[i]
        return row[i] / max(1, sum(row))

    def format(self) -> str:
        """A small text report: samples and share correct per expression, confusion matrix, settings."""
        width = max(10, *(len(e) for e in self.expressions)) + 2
        lines = [
            f"cross-validated accuracy {self.accuracy * 100:.1f}% (balanced {self.balanced_accuracy * 100:.1f}%; "
            f"{self.folds} contiguous folds per expression; C={self.c:g}, gamma={self.gamma:.3g})",
            f"{'expression':<{width}}{'samples':>8}{'correct':>9}   predicted as:",
            f"{'':<{width}}{'':>8}{'':>9}   " + " ".join(f"{e[:9]:>9}" for e in self.expressions),
        ]
        for name, row in zip(self.expressions, self.confusion):
            lines.append(
                f"{name:<{width}}{self.samples[name]:>8}{self.recall(name) * 100:>8.1f}%   "
                + " ".join(f"{n:>9}" for n in row)
            )
        return "\n".join(lines)

    def to_json(self) -> dict:
        return {
            "expressions": list(self.expressions),
            "samples": dict(self.samples),
            "accuracy": self.accuracy,
            "balanced_accuracy": self.balanced_accuracy,
            "confusion": [list(row) for row in self.confusion],
            "folds": self.folds,
            "c": self.c,
            "gamma": self.gamma,
        }

    @classmethod
    def from_json(cls, doc: Mapping) -> CalibrationStats:
        return cls(
            expressions=tuple(str(e) for e in doc["expressions"]),
            samples=MappingProxyType({str(k): int(v) for k, v in doc["samples"].items()}),
            accuracy=float(doc["accuracy"]),
            balanced_accuracy=float(doc["balanced_accuracy"]),
            confusion=tuple(tuple(int(n) for n in row) for row in doc["confusion"]),
            folds=int(doc["folds"]),
            c=float(doc["c"]),
            gamma=float(doc["gamma"]),
        )


# --- geometry -----------------------------------------------------------------------------------


def _eye_distance(points: np.ndarray) -> float:
    return float(np.linalg.norm(points[_EYE_CORNERS[0]] - points[_EYE_CORNERS[1]]))


def _similarity(source: np.ndarray, target: np.ndarray) -> tuple[float, np.ndarray, np.ndarray, np.ndarray]:
    """Scale ``s``, rotation ``R`` and centroids such that ``(source - cs) @ R * s + ct`` best fits ``target``.

    Least squares over corresponding rows (Umeyama's method). ``R`` is a proper rotation: a reflection
    would turn a face into its mirror image.
    """
    cs, ct = source.mean(axis=0), target.mean(axis=0)
    a, b = source - cs, target - ct
    norm = float((a * a).sum())
    if norm < 1e-12:
        raise UnusableFrameError("the face's rigid points collapse to one point")
    u, sigma, vt = np.linalg.svd(a.T @ b)
    signs = np.ones(len(sigma))
    signs[-1] = 1.0 if np.linalg.det(u @ vt) >= 0 else -1.0
    rotation = (u * signs) @ vt
    return float((sigma * signs).sum()) / norm, rotation, cs, ct


def _align(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """``points`` moved by the similarity transform that best fits their rigid points onto ``reference``'s."""
    anchors = list(ANCHOR_POINTS)
    scale, rotation, cs, ct = _similarity(points[anchors], reference[anchors])
    return (points - cs) @ rotation * scale + ct


def _normalised(shape: np.ndarray) -> np.ndarray:
    """``shape`` with its rigid points centred on the origin and its outer eye corners 1 apart."""
    centred = shape - shape[list(ANCHOR_POINTS)].mean(axis=0)
    distance = _eye_distance(centred)
    if distance < 1e-12:
        raise UnusableFrameError("the eye corners of the face coincide")
    return centred / distance


def mean_face_shape(samples: Sequence[FaceSample], iterations: int = 5) -> np.ndarray:
    """The mean (66, 3) shape of the samples' 3D points (generalised Procrustes analysis, eye corners 1 apart)."""
    if not samples:
        raise NotEnoughDataError("a mean face shape needs at least one sample")
    reference = _normalised(samples[0].points3d)
    for _ in range(iterations):
        reference = _normalised(np.mean([_align(s.points3d, reference) for s in samples], axis=0))
    return _read_only(reference)


def expression_features(sample: FaceSample, reference: np.ndarray) -> np.ndarray:
    """The pose-free feature vector of a sample: its 3D points aligned to ``reference``, then the 14 features.

    A rotation, scaling or shift of the 3D points leaves it unchanged (up to rounding); the image landmarks
    are not used at all. Length :data:`FEATURE_LENGTH`.
    """
    return np.concatenate([_align(sample.points3d, reference).ravel(), sample.features])


def _block_scale(x: np.ndarray) -> np.ndarray:
    """Per-dimension divisors: the mean spread of the geometry block for its dimensions, likewise for features."""
    scale = np.empty(x.shape[1])
    for block in (slice(0, _GEOMETRY_LENGTH), slice(_GEOMETRY_LENGTH, x.shape[1])):
        scale[block] = max(float(x[:, block].std(axis=0).mean()), 1e-9)
    return scale


# --- libsvm -------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _openmp_thread_setter() -> Callable[[int], object] | None:
    """``omp_set_num_threads`` of the OpenMP runtime libsvm is built with, if it can be found."""
    for name in ("libgomp.so.1", "libomp.so", "libomp.dylib", "vcomp140.dll"):
        try:
            return ctypes.CDLL(name).omp_set_num_threads
        except (OSError, AttributeError):
            continue
    return None


def _svm():
    """libsvm's Python binding, imported on first use so that importing the SDK stays cheap.

    libsvm's wheels are built with OpenMP, which splits every single prediction across all cores. When
    the tracker keeps a core busy, each split waits for a descheduled thread: a prediction took 8 ms
    instead of 20 us in our measurements. The work per call is tiny, so the calling thread is limited to
    one OpenMP thread (a per-thread setting: other threads are not affected).
    """
    from libsvm import svmutil

    setter = _openmp_thread_setter()
    if setter is not None:
        setter(1)
    return svmutil


def _svm_options(labels: np.ndarray, c: float, gamma: float, probability: bool) -> str:
    # Each expression weighs the same however many samples it has (-wK scales C for class K).
    present, counts = np.unique(labels, return_counts=True)
    weights = " ".join(f"-w{k} {float(len(labels) / (len(present) * n))!r}" for k, n in zip(present, counts))
    return f"-s 0 -t 2 -c {float(c)!r} -g {float(gamma)!r} -b {int(probability)} {weights} -q"


def _svm_problem(labels: np.ndarray, x: np.ndarray):
    # Plain lists: libsvm's binding accepts numpy arrays only when SciPy is installed.
    return _svm().svm_problem(labels.astype(float).tolist(), x.tolist())


def _model_to_text(model) -> bytes:
    with tempfile.TemporaryDirectory(prefix="facewire-svm-") as folder:
        path = os.path.join(folder, _MODEL_MEMBER)
        _svm().svm_save_model(path, model)
        return Path(path).read_bytes()


def _model_from_text(text: bytes):
    with tempfile.TemporaryDirectory(prefix="facewire-svm-") as folder:
        path = os.path.join(folder, _MODEL_MEMBER)
        Path(path).write_bytes(text)
        model = _svm().svm_load_model(path)
    if model is None:
        raise ModelFileError("libsvm could not read the model inside the file (damaged model.txt)")
    return model


def _balanced_accuracy(labels: np.ndarray, predicted: np.ndarray) -> float:
    """Mean over expressions of the share of its samples classified correctly."""
    return float(np.mean([np.mean(predicted[labels == k] == k) for k in np.unique(labels)]))


def _contiguous_folds(labels: np.ndarray, folds: int) -> np.ndarray:
    """Fold number of every sample: each expression's samples (in recording order) cut into ``folds`` runs."""
    fold_of = np.empty(len(labels), dtype=int)
    for label in np.unique(labels):
        where = np.flatnonzero(labels == label)
        fold_of[where] = np.arange(len(where)) * folds // len(where)
    return fold_of


def _cross_validate(labels: np.ndarray, x: np.ndarray, folds: int) -> tuple[float, float, np.ndarray]:
    """Pick (C, gamma) on the grid; returns them and the cross-validated predictions of that choice."""
    svm = _svm()
    fold_of = _contiguous_folds(labels, folds)
    # libsvm problems and test node arrays are built once per fold and reused over the grid.
    splits = []
    for fold in range(folds):
        test = fold_of == fold
        nodes = [svm.gen_svm_nodearray(row)[0] for row in x[test].tolist()]
        splits.append((test, labels[~test], _svm_problem(labels[~test], x[~test]), nodes))
    results = []
    for gamma in (factor / x.shape[1] for factor in _GAMMA_FACTORS):
        for c in _C_GRID:
            predicted = np.empty_like(labels)
            for test, train_labels, problem, nodes in splits:
                model = svm.svm_train(problem, _svm_options(train_labels, c, gamma, probability=False))
                predicted[test] = [int(svm.libsvm.svm_predict(model, node)) for node in nodes]
            score = _balanced_accuracy(labels, predicted)
            _log.debug("C=%g gamma=%.3g: cross-validated balanced accuracy %.3f", c, gamma, score)
            results.append((score, c, gamma, predicted))
    best = max(score for score, *_ in results)
    # The first result within tolerance is the smoothest: the grid runs from small gamma and C up.
    _, c, gamma, predicted = next(r for r in results if r[0] >= best - _SELECTION_TOLERANCE)
    return c, gamma, predicted


# --- the calibrator -----------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class _Model:
    """Everything a trained calibrator needs to classify a frame."""

    expressions: tuple[str, ...]
    reference: np.ndarray  # (66, 3) mean face shape
    mean: np.ndarray       # feature scaler: (x - mean) / scale
    scale: np.ndarray
    svm: object
    text: bytes            # libsvm's model file, exactly as saved
    stats: CalibrationStats


class ExpressionCalibrator:
    """Record frames per expression, train a classifier, name the expression of new frames.

    ``skip`` keeps every ``skip``-th frame offered to :meth:`record` for an expression (neighbouring frames
    are near duplicates); ``min_samples`` is the fewest samples per expression that :meth:`train` accepts;
    ``folds`` is the number of cross-validation folds.
    """

    def __init__(self, skip: int = 1, min_samples: int = 10, folds: int = 5) -> None:
        if skip < 1:
            raise ValueError(f"skip must be at least 1 (keep every frame), got {skip}")
        if folds < 2:
            raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
        if min_samples < folds:
            raise ValueError(f"min_samples ({min_samples}) must be at least the number of folds ({folds})")
        self.skip = skip
        self.min_samples = min_samples
        self.folds = folds
        self._samples: dict[str, list[FaceSample]] = {}
        self._offered: dict[str, int] = {}
        self._model: _Model | None = None
        self._full = False  # MAX_SAMPLES reached (warned once)

    # --- recording ------------------------------------------------------------------------------

    @property
    def expressions(self) -> tuple[str, ...]:
        """Names of the expressions that have samples, in the order they were first recorded."""
        return tuple(name for name, samples in self._samples.items() if samples)

    def sample_counts(self) -> dict[str, int]:
        """Samples recorded so far per expression."""
        return {name: len(samples) for name, samples in self._samples.items() if samples}

    def record(self, name: str, frame: OpenSeeFaceRecord) -> bool:
        """Offer one frame of expression ``name``; True when it was kept as a sample.

        Every ``skip``-th frame offered for ``name`` is kept (the first one included), unless it carries no
        usable 3D points or the calibrator already holds :data:`MAX_SAMPLES` samples (the most a model file
        may hold, far more than training can use).
        """
        if not isinstance(name, str) or not name.strip():
            raise ValueError(f"an expression name must be a non-empty string, got {name!r}")
        offered = self._offered.get(name, 0)
        self._offered[name] = offered + 1
        if offered % self.skip:
            return False
        if sum(len(samples) for samples in self._samples.values()) >= MAX_SAMPLES:
            _log.log(logging.DEBUG if self._full else logging.WARNING,
                     "not recording more frames: the calibrator holds the most samples a model may have (%d)",
                     MAX_SAMPLES)
            self._full = True
            return False
        try:
            sample = FaceSample.from_record(frame)
        except UnusableFrameError as exc:
            _log.debug("frame not recorded: %s", exc)
            return False
        self._samples.setdefault(name, []).append(sample)
        return True

    def clear(self, name: str | None = None) -> int:
        """Forget the samples of ``name`` (or of every expression); returns how many were dropped.

        A trained model stays usable until the next :meth:`train`.
        """
        names = list(self._samples) if name is None else [name]
        dropped = 0
        for key in names:
            dropped += len(self._samples.pop(key, []))
            self._offered.pop(key, None)
        self._full = False
        return dropped

    # --- training -------------------------------------------------------------------------------

    def train(self) -> CalibrationStats:
        """Fit the mean shape and scaler, choose C and gamma by cross-validation, train the probabilistic SVM."""
        counts = self.sample_counts()
        too_few = {name: n for name, n in counts.items() if n < self.min_samples}
        if len(counts) < 2 or too_few:
            raise NotEnoughDataError(
                f"training needs at least 2 expressions with at least {self.min_samples} samples each; "
                f"recorded: {counts or 'nothing'}. Record for longer, or with a smaller skip."
            )
        expressions = self.expressions
        samples = [s for name in expressions for s in self._samples[name]]
        labels = np.array([k for k, name in enumerate(expressions) for _ in self._samples[name]])
        reference = mean_face_shape(samples)
        x = np.stack([expression_features(s, reference) for s in samples])
        mean, scale = x.mean(axis=0), _block_scale(x)
        xs = (x - mean) / scale

        c, gamma, predicted = _cross_validate(labels, xs, self.folds)
        confusion = np.zeros((len(expressions), len(expressions)), dtype=int)
        np.add.at(confusion, (labels, predicted), 1)
        stats = CalibrationStats(
            expressions=expressions,
            samples=MappingProxyType(dict(counts)),
            accuracy=float(np.mean(predicted == labels)),
            balanced_accuracy=_balanced_accuracy(labels, predicted),
            confusion=tuple(tuple(int(n) for n in row) for row in confusion),
            folds=self.folds,
            c=c,
            gamma=gamma,
        )
        final = _svm().svm_train(_svm_problem(labels, xs), _svm_options(labels, c, gamma, probability=True))
        # Keep the model as read back from libsvm's text, so that a saved and reloaded calibrator predicts
        # exactly what this one does (the text rounds support vectors to 8 digits).
        text = _model_to_text(final)
        self._model = _Model(expressions, reference, _read_only(mean), _read_only(scale),
                             _model_from_text(text), text, stats)
        _log.info("trained on %s: cross-validated accuracy %.3f, balanced %.3f (C=%g, gamma=%.3g)",
                  counts, stats.accuracy, stats.balanced_accuracy, c, gamma)
        return stats

    @property
    def trained(self) -> bool:
        return self._model is not None

    def _require_model(self) -> _Model:
        if self._model is None:
            raise NotTrainedError("no trained expression model: record expressions and call train(), or load a file")
        return self._model

    @property
    def model_expressions(self) -> tuple[str, ...]:
        """The expressions the trained model tells apart (the recorded ones may have changed since)."""
        return self._require_model().expressions

    def stats(self) -> CalibrationStats:
        """Samples, cross-validated accuracy and confusion matrix of the last training."""
        return self._require_model().stats

    def features(self, frame: OpenSeeFaceRecord) -> np.ndarray:
        """The (unscaled) feature vector of ``frame`` in the trained model's frame of reference."""
        return expression_features(FaceSample.from_record(frame), self._require_model().reference)

    def predict(self, frame: OpenSeeFaceRecord) -> Prediction:
        """The expression of ``frame`` with per-expression probabilities; raises UnusableFrameError."""
        model = self._require_model()
        x = (self.features(frame) - model.mean) / model.scale
        svm = _svm()
        nodes, _ = svm.gen_svm_nodearray(x.tolist())
        count = len(model.expressions)
        estimates = (svm.c_double * count)()
        svm.libsvm.svm_predict_probability(model.svm, nodes, estimates)
        by_label = dict(zip(model.svm.get_labels(), estimates[:count]))
        raw = np.array([by_label[k] for k in range(count)])
        # libsvm's probabilities carry the training shares of the expressions as priors (a long neutral
        # recording makes "neutral" likelier everywhere); every expression is equally likely a priori.
        shares = np.array([model.stats.samples[name] for name in model.expressions], dtype=np.float64)
        balanced = raw / (shares / shares.sum())
        balanced /= balanced.sum()
        probabilities = {name: float(p) for name, p in zip(model.expressions, balanced)}
        name = model.expressions[int(np.argmax(balanced))]
        return Prediction(name, probabilities[name], MappingProxyType(probabilities))

    # --- files ----------------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the samples and (if trained) the model to one zip archive; replaces ``path`` atomically."""
        path = Path(path)
        names = list(self.expressions)
        samples = [(k, s) for k, name in enumerate(names) for s in self._samples[name]]
        arrays = {
            "labels": np.array([k for k, _ in samples], dtype=np.int32),
            "points3d": np.array([s.points3d for _, s in samples], dtype=np.float64).reshape(-1, _NUM_LANDMARKS, 3),
            "features": np.array([s.features for _, s in samples], dtype=np.float64).reshape(-1, len(FEATURE_NAMES)),
        }
        model = self._model
        if model is not None:
            arrays.update(reference=model.reference, scaler_mean=model.mean, scaler_scale=model.scale)
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **arrays)
        members = {_SAMPLES_MEMBER: buffer.getvalue()}
        if model is not None:
            members[_MODEL_MEMBER] = model.text
        meta = {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "sample_expressions": names,
            "skip": self.skip,
            "min_samples": self.min_samples,
            "folds": self.folds,
            "feature_names": list(FEATURE_NAMES),
            "anchor_points": list(ANCHOR_POINTS),
            "model": None if model is None else {"expressions": list(model.expressions), "stats": model.stats.to_json()},
            "sha256": {name: hashlib.sha256(data).hexdigest() for name, data in members.items()},
        }
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as handle, zipfile.ZipFile(handle, "w", zipfile.ZIP_DEFLATED) as archive:
                archive.writestr(_META_MEMBER, json.dumps(meta, indent=1))
                for name, data in members.items():
                    archive.writestr(name, data)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExpressionCalibrator:
        """Read a file written by :meth:`save`; raises ModelFileError for foreign, damaged or newer files.

        Files are exchanged between users, so nothing in one is trusted: sizes are checked before anything
        is decompressed, the checksums of meta.json before any other member is parsed, every npy header
        before its array is read, and libsvm's model text line by line before libsvm sees it (see
        :mod:`facewire.client.calibration_archive`). Whatever a bad file does, the only error is
        ModelFileError; a missing or unreadable path gives the usual OSError.
        """
        path = Path(path)
        kind = os.stat(path).st_mode  # a missing path raises FileNotFoundError, as open() would
        if not stat.S_ISREG(kind) and not stat.S_ISDIR(kind):  # a directory: open() says so below
            # /dev/zero or a pipe would be read forever by the zip reader (it reads "the rest" of the file)
            raise ModelFileError(f"{path} is not a regular file, so not an expression model")
        with open(path, "rb") as handle:
            size = os.fstat(handle.fileno()).st_size
            try:
                return cls._read(handle, size, path)
            except ModelFileError:
                raise
            except ArchiveError as exc:
                raise ModelFileError(f"{path} is damaged: {exc}") from None
            except (zipfile.BadZipFile, zlib.error, EOFError) as exc:
                # Not a zip, or a truncated or corrupted one (CRC, zlib).
                raise ModelFileError(f"{path} is not a Facewire expression model, or is damaged ({exc})") from None
            except Exception as exc:  # noqa: BLE001 - a hostile file must not get anything else out of load()
                raise ModelFileError(
                    f"{path} is damaged: reading it failed with {type(exc).__name__} ({str(exc)[:200]})"
                ) from exc

    @classmethod
    def _read(cls, handle: io.BufferedIOBase, size: int, path: Path) -> ExpressionCalibrator:
        if size > _MAX_FILE_BYTES:
            raise ModelFileError(f"{path} is {size} bytes, larger than any expression model can be "
                                 f"({_MAX_FILE_BYTES} bytes)")
        with zipfile.ZipFile(handle) as archive:
            names = archive.namelist()
            if _META_MEMBER not in names:
                raise ModelFileError(f"{path} is not a Facewire expression model (a zip without {_META_MEMBER})")
            check_directory(archive, _MEMBER_LIMITS)
            meta = parse_json(read_member(archive, _META_MEMBER, _MEMBER_LIMITS[_META_MEMBER]), _META_MEMBER)
            _check_meta(meta, path)
            _check_meta_contents(meta)
            digests = meta["sha256"]
            unchecked = sorted(set(names) - set(digests) - {_META_MEMBER})
            if unchecked:
                raise ModelFileError(f"{path} is damaged: member {unchecked[0]!r} has no checksum")
            members = {}
            for name, digest in digests.items():
                if name not in names:
                    raise ModelFileError(f"{path} is damaged: member {name!r} is missing")
                data = read_member(archive, name, _MEMBER_LIMITS[name])
                if hashlib.sha256(data).hexdigest() != digest:
                    raise ModelFileError(f"{path} is damaged: {name} does not match its checksum")
                members[name] = data
        return cls._from_members(meta, members, path)

    @classmethod
    def _from_members(cls, meta: Mapping, members: Mapping[str, bytes], path: Path) -> ExpressionCalibrator:
        calibrator = cls(skip=meta["skip"], min_samples=meta["min_samples"], folds=meta["folds"])
        arrays = read_arrays(members[_SAMPLES_MEMBER], _ARRAYS)
        names = meta["sample_expressions"]
        labels, points3d, features = arrays["labels"], arrays["points3d"], arrays["features"]
        for key, values in (("points3d", points3d), ("features", features)):
            if not np.isfinite(values).all() or (np.abs(values) > _MAX_COORDINATE).any():
                raise ModelFileError(f"{path} is damaged: {key} holds values that are not finite or beyond "
                                     f"{_MAX_COORDINATE:g}")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise ModelFileError(f"{path} is damaged: sample labels outside the {len(names)} expressions")
        if len(labels) and (np.linalg.norm(points3d[:, _EYE_CORNERS[0]] - points3d[:, _EYE_CORNERS[1]], axis=1)
                            < 1e-6).any():
            raise ModelFileError(f"{path} is damaged: a recorded sample has collapsed 3D points")
        for k, name in enumerate(names):
            calibrator._samples[name] = [
                FaceSample(_read_only(points3d[i].copy()), _read_only(features[i].copy()))
                for i in np.flatnonzero(labels == k)
            ]
        if meta["model"] is not None:
            calibrator._model = _model_from_members(meta["model"], arrays, members, path)
        return calibrator


def _model_from_members(doc: Mapping, arrays: Mapping[str, np.ndarray], members: Mapping[str, bytes],
                        path: Path) -> _Model:
    expressions = tuple(doc["expressions"])
    if any(name not in arrays for name in ("reference", "scaler_mean", "scaler_scale")):
        raise ModelFileError(f"{path} is damaged: it claims a trained model but lacks its mean face or scaler")
    mean, scale, reference = arrays["scaler_mean"], arrays["scaler_scale"], arrays["reference"]
    if not (np.isfinite(mean).all() and (np.abs(mean) <= _MAX_COORDINATE).all()
            and (scale >= 1e-9).all() and (scale <= _MAX_COORDINATE).all()):
        raise ModelFileError(f"{path} is damaged: its feature scaler holds values a trained model cannot have")
    if not np.isfinite(reference).all() or (np.abs(reference) > 100).any() \
            or abs(_eye_distance(reference) - 1.0) > 1e-6:
        raise ModelFileError(f"{path} is damaged: its mean face shape is not normalised (outer eye corners 1 apart)")
    check_libsvm_model(members[_MODEL_MEMBER], len(expressions), FEATURE_LENGTH)
    svm = _model_from_text(members[_MODEL_MEMBER])
    if sorted(svm.get_labels()) != list(range(len(expressions))) or not svm.is_probability_model():
        raise ModelFileError(f"{path} is damaged: its SVM does not give probabilities for {expressions}")
    return _Model(expressions, _read_only(reference), _read_only(mean), _read_only(scale),
                  svm, members[_MODEL_MEMBER], CalibrationStats.from_json(doc["stats"]))


def _check_meta(meta: object, path: Path) -> None:
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        raise ModelFileError(f"{path} is not a Facewire expression model (its format is not {FORMAT_NAME!r})")
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path} is damaged: its version field is {str(version)[:40]!r}")
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer Facewire (model format version {version}; this one reads up to "
            f"{FORMAT_VERSION}). Upgrade Facewire or calibrate again."
        )


def _check_meta_contents(meta: dict) -> None:
    """Every field of meta.json as :meth:`ExpressionCalibrator.save` writes it; raises ArchiveError.

    The statistics must describe exactly the model's expressions: prediction looks up every expression's
    sample count in them.
    """
    check_keys(meta, "meta.json", ("sample_expressions", "skip", "min_samples", "folds", "feature_names",
                                   "anchor_points", "model", "sha256"))
    check_names(meta["sample_expressions"], "sample_expressions")
    check_int(meta["skip"], "skip", 1, MAX_SAMPLES)
    folds = check_int(meta["folds"], "folds", 2, _MAX_FOLDS)
    check_int(meta["min_samples"], "min_samples", folds, MAX_SAMPLES)
    if meta["feature_names"] != list(FEATURE_NAMES) or meta["anchor_points"] != list(ANCHOR_POINTS):
        raise ArchiveError("it was made with other expression features or anchor points than this Facewire uses")
    digests = meta["sha256"]
    if not isinstance(digests, dict) or not all(
            isinstance(d, str) and re.fullmatch(r"[0-9a-f]{64}", d) for d in digests.values()):
        raise ArchiveError("its checksums are not a map of SHA-256 hex digests")
    wanted = {_SAMPLES_MEMBER} | ({_MODEL_MEMBER} if meta["model"] is not None else set())
    if set(digests) != wanted:
        raise ArchiveError(f"its checksums cover {sorted(digests)[:5]}, expected {sorted(wanted)}")
    if meta["model"] is None:
        return
    model = check_keys(meta["model"], "the model entry of meta.json", ("expressions", "stats"))
    expressions = check_names(model["expressions"], "the model's expressions", at_least=2)
    stats = check_keys(model["stats"], "the model's statistics", ("expressions", "samples", "accuracy",
                                                                   "balanced_accuracy", "confusion", "folds", "c",
                                                                   "gamma"))
    if stats["expressions"] != expressions:
        raise ArchiveError("the statistics describe other expressions than the model tells apart")
    samples = stats["samples"]
    if not isinstance(samples, dict) or set(samples) != set(expressions):
        raise ArchiveError("the statistics' sample counts do not name exactly the model's expressions")
    counts = [check_int(samples[name], f"the sample count of {name[:40]!r}", 1, MAX_SAMPLES) for name in expressions]
    if sum(counts) > MAX_SAMPLES:
        raise ArchiveError(f"the statistics count {sum(counts)} samples, more than {MAX_SAMPLES}")
    for key in ("accuracy", "balanced_accuracy"):
        check_float(stats[key], key, 0.0, 1.0)
    check_int(stats["folds"], "the statistics' folds", 2, _MAX_FOLDS)
    for key in ("c", "gamma"):
        check_float(stats[key], key, 1e-12, 1e12)
    confusion = stats["confusion"]
    k = len(expressions)
    if not isinstance(confusion, list) or len(confusion) != k or any(
            not isinstance(row, list) or len(row) != k for row in confusion):
        raise ArchiveError(f"the confusion matrix is not {k} x {k}, one row and column per expression")
    for name, row, count in zip(expressions, confusion, counts):
        if sum(check_int(n, "a confusion matrix entry", 0, MAX_SAMPLES) for n in row) != count:
            raise ArchiveError(f"the confusion matrix row of {name[:40]!r} does not add up to its {count} samples")
