"""MediaPipe's canonical face as extracted from the Face Landmarker bundle (models/canonical_face.npz)."""
from __future__ import annotations

import sys
from collections import Counter

import numpy as np
import pytest

from conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import canonical_face  # noqa: E402


@pytest.fixture(scope="module")
def face():
    with np.load(REPO / "models" / "canonical_face.npz") as data:
        return {k: data[k] for k in data.files}


def test_counts_and_ranges(face):
    assert face["vertices"].shape == (468, 3) and face["uv"].shape == (468, 2)
    assert face["triangles"].shape == (898, 3)
    assert face["triangles"].min() == 0 and face["triangles"].max() == 467
    assert len(np.unique(face["triangles"])) == 468          # every vertex is used
    assert (face["uv"] >= 0).all() and (face["uv"] <= 1).all()
    assert face["procrustes_ids"].shape == face["procrustes_weights"].shape == (33,)
    assert (face["procrustes_weights"] > 0).all() and len(set(face["procrustes_ids"].tolist())) == 33
    # A face about 15 cm tall and wide, in centimetres
    extent = face["vertices"].max(0) - face["vertices"].min(0)
    assert 10 < extent[0] < 20 and 10 < extent[1] < 25


def test_a_consistently_wound_surface(face):
    """Every edge is in at most two triangles, and an edge two triangles share runs both ways."""
    directed = Counter()
    for a, b, c in face["triangles"].tolist():
        directed.update([(a, b), (b, c), (c, a)])
    assert max(directed.values()) == 1                       # no edge twice in the same direction
    undirected = Counter(tuple(sorted(e)) for e in directed)
    assert max(undirected.values()) == 2
    border = [e for e, n in undirected.items() if n == 1]
    assert 30 <= len(border) <= 60                           # the face's outer rim only


def test_the_reader_handles_packed_and_unpacked_fields():
    def varint(n: int) -> bytes:
        out = bytearray()
        while True:
            out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
            n >>= 7
            if not out[-1] & 0x80:
                return bytes(out)
    packed = np.arange(5, dtype="<f4").tobytes()
    message = b"\x1a" + varint(len(packed)) + packed + b"\x1d" + np.float32(7).tobytes() + b"\x20\x05"
    fields = canonical_face.fields(message)
    assert canonical_face._floats([(w, v) for n, w, v in fields if n == 3]) == [0, 1, 2, 3, 4, 7]
    assert canonical_face._uints([(w, v) for n, w, v in fields if n == 4]) == [5]
    with pytest.raises(canonical_face.CanonicalFaceError):
        canonical_face.parse_geometry_metadata(message)      # not a GeometryPipelineMetadata


def test_npz_bytes_are_reproducible(face):
    assert canonical_face.npz_bytes(face) == canonical_face.npz_bytes(dict(face))
    assert canonical_face.npz_bytes(face) == (REPO / "models" / "canonical_face.npz").read_bytes()
