"""Frame-to-frame tracking of one or several faces with stable ids.

The detector is the expensive, jittery part, so it runs only when needed: while fewer faces are
tracked than asked for, at most every ``scan_every`` frames (every frame while none is tracked).
A tracked face's next crop comes from its own landmarks in the previous frame, so each track follows
its own face and two faces passing near each other keep their ids. A face the mesh no longer
recognises is kept for ``discard_after`` frames; if the detector finds a face near where it was
lost within that time, the face gets its old id back.

Each face carries two numbers. ``track_id`` grows for every new track and is never reused: it names one
person's track. ``id`` is OpenSeeFace's slot: OpenSeeFace keeps a fixed pool of ``--faces`` slots and
sends the slot number, so its consumers (which never expire an id and read face 0 by default) keep
seeing ids 0..faces-1. A new track takes the free slot whose last face was nearest; a track coming back
takes its old slot when it is free.

A track can drift: after a scene cut its crop may hold half of a different face, or the gap between
two, that the mesh still half-recognises as a face. So even when every face slot is taken, the
detector checks the tracks every ``recheck_every`` frames, and sooner (at most every
``RECHECK_SOON`` frames) while a track's face probability is below ``recheck_below``. A track that
only partly overlaps a detected face is put back onto it, keeping its id; a track no detection
confirms gives its slot to a detected face nobody tracks.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from .detection import Detection, FaceDetector, iou
from .landmarks import Landmarker, MeshResult, Roi, roi_from_detection, roi_from_landmarks

log = logging.getLogger(__name__)

RECHECK_SOON = 5


@dataclass(frozen=True)
class TrackingConfig:
    max_faces: int = 1
    scan_every: int = 3
    discard_after: int = 10
    recheck_every: int = 30             # 0 disables the drift check
    recheck_below: float = 0.9          # check sooner while a face's probability is below this
    presence_threshold: float = 0.5     # mesh face probability below which a track is lost
    detection_threshold: float = 0.5
    detector: str = "auto"
    mesh: str = "attention"
    threads: int = 1

    def __post_init__(self) -> None:
        if self.max_faces < 1:
            raise ValueError(f"--faces must be at least 1, not {self.max_faces}")
        if self.scan_every < 1:
            raise ValueError(f"--scan-every must be at least 1 (frames), not {self.scan_every}")
        if self.discard_after < 0:
            raise ValueError(f"--discard-after cannot be negative, not {self.discard_after}")
        if self.threads < 1:
            raise ValueError(f"--max-threads must be at least 1, not {self.threads}")
        for name, flag in (("presence_threshold", "--threshold"), ("detection_threshold", "--detection-threshold")):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{flag} must lie between 0 and 1, not {getattr(self, name)}")


@dataclass(frozen=True)
class TrackedFace:
    """One face in one frame."""

    id: int              # OpenSeeFace slot, 0..max_faces-1 (what OpenSeeFace sends as the face id)
    mesh: MeshResult
    new: bool            # first frame of this track (or of its return after being lost)
    box: np.ndarray      # (4,) bounding box of the landmarks
    track_id: int = 0    # this person's track, never reused (a new person in a slot gets a new one)


class _Track:
    """Mutable per-face bookkeeping, private to the tracker."""

    def __init__(self, face_id: int, box: np.ndarray) -> None:
        self.id = face_id
        self.slot = -1                  # set while active; kept after loss as the slot to ask for first
        self.roi: Roi | None = None
        self.box = box
        self.missed = 0

    @property
    def active(self) -> bool:
        return self.roi is not None


def landmark_box(points: np.ndarray) -> np.ndarray:
    """(x0, y0, x1, y1) float32 bounding box of the points' x and y."""
    x, y = points[:, 0], points[:, 1]
    return np.array([x.min(), y.min(), x.max(), y.max()], np.float32)


class FaceTracker:
    """Call ``update(frame)`` once per frame; returns the faces found in it, by id."""

    def __init__(self, config: TrackingConfig, detector: FaceDetector | None = None,
                 landmarker: Landmarker | None = None) -> None:
        self.config = config
        self.detector = detector or FaceDetector(config.detector, config.detection_threshold, threads=config.threads)
        self.landmarker = landmarker or Landmarker(config.mesh, threads=config.threads)
        self._tracks: list[_Track] = []
        self._next_id = 0
        # Box of the last face each OpenSeeFace slot held (None: never used).
        self._slot_boxes: list[np.ndarray | None] = [None] * config.max_faces
        self._since_scan = 0
        self._since_recheck = 0
        self.detections_run = 0

    def track_ids(self) -> set[int]:
        """Track ids of every face still kept, tracked or recently lost."""
        return {t.id for t in self._tracks}

    def reset(self) -> None:
        self._tracks.clear()
        self._since_scan = 0
        self._slot_boxes = [None] * self.config.max_faces

    def update(self, image: np.ndarray) -> list[TrackedFace]:
        found: list[TrackedFace] = []
        for track in self._tracks:
            if track.active:
                mesh = self.landmarker(image, track.roi)
                if mesh.presence >= self.config.presence_threshold:
                    found.append(self._keep(track, mesh, new=False))
                else:
                    log.debug("face %d (slot %d) lost (presence %.2f)", track.id, track.slot, mesh.presence)
                    track.roi = None
            if not track.active:
                track.missed += 1
        self._prune()

        self._since_scan += 1
        self._since_recheck += 1
        active = sum(t.active for t in self._tracks)
        if active < self.config.max_faces and (active == 0 or self._since_scan >= self.config.scan_every):
            self._since_scan = self._since_recheck = 0
            found += self._scan(image, self.config.max_faces - active)
        elif active and self.config.recheck_every and self._recheck_due(found):
            self._since_recheck = 0
            found = self._recheck(image, found)
        found = self._drop_duplicates(found)
        return sorted(found, key=lambda f: f.id)

    def _prune(self) -> None:
        """Forget tracks lost for longer than ``discard_after`` frames."""
        self._tracks = [t for t in self._tracks if t.active or t.missed <= self.config.discard_after]

    def _keep(self, track: _Track, mesh: MeshResult, new: bool) -> TrackedFace:
        if not track.active:
            track.slot = self._free_slot(track)
        track.roi = roi_from_landmarks(mesh.points)
        track.box = landmark_box(mesh.points)
        track.missed = 0
        self._slot_boxes[track.slot] = track.box
        return TrackedFace(track.slot, mesh, new, track.box, track.id)

    def _free_slot(self, track: _Track) -> int:
        """The slot a (re)starting track takes: its own if free, else the free one whose last face was nearest."""
        taken = {t.slot for t in self._tracks if t.active}
        free = [s for s in range(self.config.max_faces) if s not in taken]
        if track.slot in free:
            return track.slot
        mine = track.box[:2] + track.box[2:]            # twice the box centre

        def distance(slot: int) -> float:   # between box centres; a never-used slot is infinitely far
            box = self._slot_boxes[slot]
            return np.inf if box is None else float(np.linalg.norm(box[:2] + box[2:] - mine)) / 2
        return min(free, key=lambda slot: (distance(slot), slot))

    def _scan(self, image: np.ndarray, room: int) -> list[TrackedFace]:
        self.detections_run += 1
        active_boxes = [t.box for t in self._tracks if t.active]
        found = []
        for det in self.detector.detect(image):
            if room == 0:
                break
            if active_boxes and iou(det.box, np.stack(active_boxes)).max() > 0.2:
                continue   # a face we already track
            mesh = self.landmarker(image, roi_from_detection(det))
            if mesh.presence < self.config.presence_threshold:
                continue
            mesh = self.landmarker(image, roi_from_landmarks(mesh.points))   # settle the first crop
            if mesh.presence < self.config.presence_threshold:
                continue
            track = self._returning_track(det) or self._new_track(det)
            found.append(self._keep(track, mesh, new=True))
            active_boxes.append(track.box)
            room -= 1
        return found

    def _recheck_due(self, found: list[TrackedFace]) -> bool:
        if self._since_recheck >= self.config.recheck_every:
            return True
        doubtful = any(f.mesh.presence < self.config.recheck_below for f in found)
        return doubtful and self._since_recheck >= RECHECK_SOON

    def _recheck(self, image: np.ndarray, found: list[TrackedFace]) -> list[TrackedFace]:
        """Put drifted tracks back onto the faces the detector sees, or free their slots."""
        self.detections_run += 1
        detections = self.detector.detect(image)
        if not detections or not found:
            return found
        boxes = np.stack([d.box for d in detections])
        overlaps = np.stack([iou(face.box, boxes) for face in found])      # (faces, detections)
        unclaimed = [k for k in range(len(detections)) if overlaps[:, k].max() < 0.1]
        tracks = {t.id: t for t in self._tracks if t.active}     # by track id
        result = []
        for row, face in enumerate(found):
            best = int(np.argmax(overlaps[row]))
            if overlaps[row, best] >= 0.5:
                result.append(face)
                continue
            target = best if overlaps[row, best] > 0.1 else (unclaimed.pop(0) if unclaimed else None)
            if target is None:
                result.append(face)            # nothing better to follow: keep it
                continue
            mesh = self.landmarker(image, roi_from_detection(detections[target]))
            if mesh.presence >= self.config.presence_threshold:
                mesh = self.landmarker(image, roi_from_landmarks(mesh.points))
            if mesh.presence < self.config.presence_threshold:
                result.append(face)
                continue
            if overlaps[row, best] > 0.1:
                log.debug("face %d drifted (overlap %.2f); put back on its face", face.track_id,
                          overlaps[row, best])
                result.append(self._keep(tracks[face.track_id], mesh, new=False))
            else:
                log.debug("face %d is not confirmed by the detector; its slot goes to a new face", face.track_id)
                tracks[face.track_id].roi, tracks[face.track_id].missed = None, 1
                result.append(self._keep(self._new_track(detections[target]), mesh, new=True))
        return result

    def _returning_track(self, det: Detection) -> _Track | None:
        """A recently lost track whose last position the detection overlaps."""
        lost = [t for t in self._tracks if not t.active]
        if not lost:
            return None
        overlaps = iou(det.box, np.stack([t.box for t in lost]))
        best = int(np.argmax(overlaps))
        return lost[best] if overlaps[best] > 0.3 else None

    def _new_track(self, det: Detection) -> _Track:
        track = _Track(self._next_id, det.box)
        self._next_id += 1
        self._tracks.append(track)
        return track

    def _drop_duplicates(self, found: list[TrackedFace]) -> list[TrackedFace]:
        """Two tracks that converged onto one face: keep the older (lower track id)."""
        kept: list[TrackedFace] = []
        for face in sorted(found, key=lambda f: f.track_id):
            if kept and iou(face.box, np.stack([k.box for k in kept])).max() > 0.5:
                log.debug("face %d duplicates an older track; dropped", face.track_id)
                for t in self._tracks:
                    if t.id == face.track_id:
                        t.roi, t.missed = None, self.config.discard_after + 1
                continue
            kept.append(face)
        self._prune()
        return kept
