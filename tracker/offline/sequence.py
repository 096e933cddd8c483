"""A recorded sequence, video file or image folder, read frame by frame with names and an index range.

Video frames are named by their zero-padded frame number (as many digits as the last frame needs, at
least 6); images by their file stem, in natural name order (img2 before img10).
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})


class SequenceError(ValueError):
    """The sequence cannot be opened or read, or the requested range lies outside it."""


@dataclass(frozen=True)
class SequenceFrame:
    name: str
    index: int
    image: np.ndarray
    path: str | None       # the image file, for image folders


def _natural_key(name: str) -> list:
    return [int(p) if i % 2 else p.lower() for i, p in enumerate(re.split(r"(\d+)", name))]


def image_files(folder: Path) -> list[Path]:
    files = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
                   key=lambda p: (_natural_key(p.name), p.name))
    if not files:
        raise SequenceError(f"{folder} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
    stems = [p.stem for p in files]
    dupes = sorted({s for s in stems if stems.count(s) > 1})
    if dupes:
        raise SequenceError(f"{folder}: several images share a name stem ({', '.join(dupes[:5])}); frames are "
                            f"named by stem, so rename them")
    return files


def video_frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    try:
        return int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if cap.isOpened() else 0
    finally:
        cap.release()


def frame_name_width(count: int) -> int:
    return max(6, len(str(max(count - 1, 0))))


class Sequence:
    """Frames of a video or an image folder, ``start <= index < stop``."""

    def __init__(self, path: str | Path, start: int = 0, stop: int | None = None) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise SequenceError(f"sequence {self.path} does not exist")
        self.is_video = self.path.is_file()
        if self.is_video:
            cap = cv2.VideoCapture(str(self.path))
            ok = cap.isOpened()
            total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) if ok else 0
            cap.release()
            if not ok or total <= 0:
                raise SequenceError(f"cannot open {self.path} as a video")
            self.files: list[Path] = []
        else:
            self.files = image_files(self.path)
            total = len(self.files)
        self.total = total
        self.width = frame_name_width(total)
        if start >= total:
            raise SequenceError(f"--range starts at frame {start} but {self.path} has {total} frames "
                                f"(0..{total - 1})")
        self.start, self.stop = start, min(total, stop) if stop is not None else total

    def __len__(self) -> int:
        return self.stop - self.start

    def name(self, index: int) -> str:
        return f"{index:0{self.width}d}" if self.is_video else self.files[index].stem

    def __iter__(self) -> Iterator[SequenceFrame]:
        if not self.is_video:
            for i in range(self.start, self.stop):
                image = cv2.imread(str(self.files[i]), cv2.IMREAD_COLOR)
                if image is None:
                    raise SequenceError(f"cannot decode {self.files[i]} as an image")
                yield SequenceFrame(self.files[i].stem, i, image, str(self.files[i]))
            return
        cap = cv2.VideoCapture(str(self.path))
        try:
            for _ in range(self.start):      # grab, not seek: seeking compressed video can land off by frames
                if not cap.grab():
                    raise SequenceError(f"{self.path} ended before frame {self.start}")
            for i in range(self.start, self.stop):
                ok, image = cap.read()
                if not ok:
                    if i < self.stop:
                        self.stop = i          # the container's frame count was an estimate
                    return
                yield SequenceFrame(self.name(i), i, image, None)
        finally:
            cap.release()


def read_frame_image(sequence: str | Path, index: int, image: str | None = None) -> np.ndarray:
    """One frame's pixels: an image file when given, else frame ``index`` of the video."""
    if image:
        data = cv2.imread(str(image), cv2.IMREAD_COLOR)
        if data is None:
            raise SequenceError(f"cannot read image {image}")
        return data
    seq = Sequence(sequence, index, index + 1)
    for frame in seq:
        return frame.image
    raise SequenceError(f"{sequence} has no frame {index}")
