"""MediaPipe's canonical face, read from the Face Landmarker bundle into ``models/canonical_face.npz``.

The bundle's ``geometry_pipeline_metadata_landmarks.binarypb`` is a serialised GeometryPipelineMetadata
protobuf: field 1 the canonical mesh (a Mesh3d: 1 vertex type, 2 primitive type, 3 the vertex buffer as
floats x, y, z, u, v per vertex, 4 the triangle index buffer), field 2 the Procrustes landmark basis
(repeated: 1 landmark id, 2 weight), field 3 the input source. We read the wire format ourselves (a few
dozen lines) rather than adding protobuf and MediaPipe's .proto files as dependencies.

The npz is written with fixed zip timestamps so the converter's ``--check`` can compare it byte for byte.
Arrays: ``vertices`` (468, 3) float32 in centimetres as MediaPipe stores them (x right, y up, z towards
the viewer), ``uv`` (468, 2) float32 texture coordinates as stored, ``triangles`` (898, 3) int32 vertex
indices, ``procrustes_ids`` (33,) int32 and ``procrustes_weights`` (33,) float32, the landmarks and
weights MediaPipe's geometry pipeline aligns the canonical face with.
"""
from __future__ import annotations

import io
import struct
import zipfile

import numpy as np

MEMBER = "geometry_pipeline_metadata_landmarks.binarypb"
VERTICES, TRIANGLES, PROCRUSTES = 468, 898, 33
_VARINT, _FIXED64, _BYTES, _FIXED32 = 0, 1, 2, 5


class CanonicalFaceError(ValueError):
    """The bundle's geometry metadata is not what this reader expects."""


def _varint(data: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if i >= len(data):
            raise CanonicalFaceError("protobuf varint runs past the end of its message")
        byte = data[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, i


def fields(data: bytes) -> list[tuple[int, int, int | bytes]]:
    """(field number, wire type, value) of every field of one protobuf message, in order."""
    out, i = [], 0
    while i < len(data):
        key, i = _varint(data, i)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            value, i = _varint(data, i)
        elif wire == _BYTES:
            size, i = _varint(data, i)
            value, i = data[i:i + size], i + size
        elif wire == _FIXED32:
            value, i = data[i:i + 4], i + 4
        elif wire == _FIXED64:
            value, i = data[i:i + 8], i + 8
        else:
            raise CanonicalFaceError(f"unsupported protobuf wire type {wire} (field {number})")
        out.append((number, wire, value))
    return out


def _floats(items: list[tuple[int, int | bytes]]) -> list[float]:
    """A repeated float field, packed (one length-delimited run) or not (one fixed32 each)."""
    values: list[float] = []
    for wire, value in items:
        if wire == _FIXED32:
            values.append(struct.unpack("<f", value)[0])
        elif wire == _BYTES and len(value) % 4 == 0:
            values.extend(struct.unpack(f"<{len(value) // 4}f", value))
        else:
            raise CanonicalFaceError("a float field is neither fixed32 nor packed floats")
    return values


def _uints(items: list[tuple[int, int | bytes]]) -> list[int]:
    """A repeated uint32 field, packed or not."""
    values: list[int] = []
    for wire, value in items:
        if wire == _VARINT:
            values.append(value)
        elif wire == _BYTES:
            i = 0
            while i < len(value):
                v, i = _varint(value, i)
                values.append(v)
        else:
            raise CanonicalFaceError("an integer field is neither a varint nor packed varints")
    return values


def _by_number(message: list[tuple[int, int, int | bytes]], number: int) -> list[tuple[int, int | bytes]]:
    return [(wire, value) for n, wire, value in message if n == number]


def parse_geometry_metadata(data: bytes) -> dict[str, np.ndarray]:
    """The canonical face's arrays from the serialised GeometryPipelineMetadata."""
    top = fields(data)
    meshes = _by_number(top, 1)
    if len(meshes) != 1 or meshes[0][0] != _BYTES:
        raise CanonicalFaceError("expected one canonical mesh (field 1)")
    mesh = fields(meshes[0][1])
    buffer = np.array(_floats(_by_number(mesh, 3)), np.float32)
    indices = np.array(_uints(_by_number(mesh, 4)), np.int64)
    if buffer.size != VERTICES * 5 or indices.size != TRIANGLES * 3:
        raise CanonicalFaceError(f"expected {VERTICES} vertices of 5 floats and {TRIANGLES} triangles, got "
                                 f"{buffer.size} floats and {indices.size} indices")
    if indices.min() < 0 or indices.max() >= VERTICES:
        raise CanonicalFaceError("a triangle index is outside the vertex buffer")
    ids, weights = [], []
    for wire, value in _by_number(top, 2):
        if wire != _BYTES:
            raise CanonicalFaceError("a Procrustes landmark (field 2) is not a message")
        entry = fields(value)
        ids.append(_uints(_by_number(entry, 1))[0] if _by_number(entry, 1) else 0)   # proto default 0
        weights.append(_floats(_by_number(entry, 2))[0] if _by_number(entry, 2) else 0.0)
    if len(ids) != PROCRUSTES:
        raise CanonicalFaceError(f"expected {PROCRUSTES} Procrustes landmarks, got {len(ids)}")
    vertices = buffer.reshape(VERTICES, 5)
    return {
        "vertices": np.ascontiguousarray(vertices[:, :3]),
        "uv": np.ascontiguousarray(vertices[:, 3:]),
        "triangles": indices.reshape(TRIANGLES, 3).astype(np.int32),
        "procrustes_ids": np.array(ids, np.int32),
        "procrustes_weights": np.array(weights, np.float32),
    }


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """An .npz (numpy's zip of .npy files) with fixed timestamps, so the same arrays give the same bytes."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as zf:
        for name in sorted(arrays):
            member = io.BytesIO()
            np.lib.format.write_array(member, np.ascontiguousarray(arrays[name]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            zf.writestr(info, member.getvalue())
    return out.getvalue()


def canonical_face_npz(task_bundle: bytes) -> bytes:
    """The canonical face npz from the Face Landmarker ``.task`` bundle's bytes."""
    with zipfile.ZipFile(io.BytesIO(task_bundle)) as bundle:
        return npz_bytes(parse_geometry_metadata(bundle.read(MEMBER)))
