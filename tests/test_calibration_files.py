"""Hostile calibration files: every crafted file gives ModelFileError with a message, never a crash.

The base file is a real calibration: OpenSeeFace's own records of the hamilton clip (its ``--log-data``
CSV), labelled by how open the mouth is (OpenSeeFace's ``mouth_open`` feature in thirds), trained and
saved. Each case edits one member the way an attacker would, recomputes the checksum in meta.json where
the edit should get past it, and loads the result. A libsvm crash would kill the test process, so a
passing run also shows that none of these reaches libsvm.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import re
import struct
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from facewire.client.calibration import (
    CalibrationError,
    ExpressionCalibrator,
    ModelFileError,
    Prediction,
)
from facewire.client.protocol import FEATURE_NAMES, OpenSeeFaceRecord

from conftest import data_path

#: Generous bound on what rejecting a bomb may allocate (the bombs unpack to 1 GB).
BOMB_MEMORY_LIMIT = 64 << 20


def _record_from_csv_row(row: list[str]) -> OpenSeeFaceRecord:
    """A record from one row of OpenSeeFace's CSV log, read by position (see facewire.client.protocol)."""
    v = [float(c == "True") if c in ("True", "False") else float(c) for c in row]
    landmarks = np.array(v[25:229]).reshape(68, 3)
    return OpenSeeFaceRecord(
        time=v[1], id=int(v[6]), width=v[2], height=v[3], eye_right=v[7], eye_left=v[8],
        success=bool(v[10]), pnp_error=v[11], quaternion=v[12:16], euler=v[16:19], translation=v[22:25],
        confidence=landmarks[:, 2], points=landmarks[:, :2], points3d=np.array(v[229:439]).reshape(70, 3),
        features=dict(zip(FEATURE_NAMES, v[439:453])),
    )


@pytest.fixture(scope="module")
def records() -> list[OpenSeeFaceRecord]:
    with open(data_path("openseeface_reference", "hamilton_m0_log.csv"), newline="") as handle:
        rows = list(csv.reader(handle))[1:]
    return [_record_from_csv_row(row) for row in rows]


@pytest.fixture(scope="module")
def good(records, tmp_path_factory) -> Path:
    """A real calibration of three expressions (mouth closed, half open, open), saved."""
    mouth = np.array([rec.features["mouth_open"] for rec in records])
    low, high = np.quantile(mouth, [1 / 3, 2 / 3])
    calibrator = ExpressionCalibrator()
    for rec, m in zip(records, mouth):
        calibrator.record("closed" if m < low else "open" if m > high else "half", rec)
    calibrator.train()
    path = tmp_path_factory.mktemp("calibration") / "good.fwexpr"
    calibrator.save(path)
    return path


def _members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as archive:
        return {name: archive.read(name) for name in archive.namelist()}


def _write(path: Path, members: dict[str, bytes], rehash: bool = True) -> Path:
    """A model file of ``members``; with ``rehash`` meta.json's checksums are made to match them."""
    if rehash and "meta.json" in members:
        try:
            meta = json.loads(members["meta.json"])
        except (ValueError, RecursionError):
            meta = None
        if isinstance(meta, dict) and isinstance(meta.get("sha256"), dict):
            for name in list(meta["sha256"]):
                if name in members:
                    meta["sha256"][name] = hashlib.sha256(members[name]).hexdigest()
            members = {**members, "meta.json": json.dumps(meta).encode()}
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return path


def _load_error(path: Path) -> str:
    with pytest.raises(ModelFileError) as info:
        ExpressionCalibrator.load(path)
    return str(info.value)


def _model_lines(good: Path) -> list[str]:
    return _members(good)["model.txt"].decode().split("\n")


def _with_model_text(good: Path, tmp_path: Path, text: str) -> Path:
    return _write(tmp_path / "edited.fwexpr", {**_members(good), "model.txt": text.encode()})


def _edit_header(lines: list[str], keyword: str, value: str) -> str:
    return "\n".join(f"{keyword} {value}" if line.split(" ")[0] == keyword else line for line in lines)


def test_the_real_calibration_loads_and_predicts_like_the_original(good, records) -> None:
    loaded = ExpressionCalibrator.load(good)
    assert set(loaded.model_expressions) == {"closed", "half", "open"}
    assert loaded.stats().balanced_accuracy > 0.6
    prediction = loaded.predict(records[100])
    assert isinstance(prediction, Prediction) and sum(prediction.probabilities.values()) == pytest.approx(1.0)


HEADER_CASES = {
    # keyword, value, what the message must say
    "total_sv 2147483647 (segfaulted in load)": ("total_sv", "2147483647", "total_sv is 2147483647, outside 1..10000"),
    "total_sv -1 (segfaulted in predict)": ("total_sv", "-1", "total_sv is -1, outside 1..10000"),
    "total_sv 1e9 (grew to 24 GB)": ("total_sv", "1e9", "total_sv '1e9' is not an integer"),
    "total_sv 0": ("total_sv", "0", "total_sv is 0, outside"),
    "huge nr_sv (segfaulted in predict)": ("nr_sv", "2000000000 1 1", "nr_sv is 2000000000, outside 0..10000"),
    "nr_sv not adding up": ("nr_sv", "1 1 1", "nr_sv adds up to 3, but total_sv is"),
    "nr_sv too short": ("nr_sv", "5", "nr_sv has 1 values; a model of 3 expressions has 3"),
    "nr_class 2 for 3 expressions": ("nr_class", "2", "nr_class is 2, but the file names 3 expressions"),
    "nr_class huge": ("nr_class", "2147483647", "nr_class is 2147483647, outside 2..64"),
    "rho count wrong": ("rho", "0.5 0.5", "rho has 2 values; a model of 3 expressions has 3"),
    "rho NaN": ("rho", "nan 0 0", "rho 'nan' is not a number"),
    "probA infinite": ("probA", "1e999 0 0", "probA '1e999' is not finite"),
    "labels repeated": ("label", "0 1 1", "labels [0, 1, 1] are not the expressions 0..2"),
    "label out of range": ("label", "0 1 7", "label is 7, outside 0..2"),
    "gamma zero": ("gamma", "0", "gamma is 0.0, not positive"),
    "gamma NaN": ("gamma", "NaN", "gamma 'NaN' is not a number"),
    "linear kernel": ("kernel_type", "linear", "not a c_svc with an rbf kernel"),
    "one-class SVM": ("svm_type", "one_class", "not a c_svc with an rbf kernel"),
    "underscore number": ("gamma", "1_0", "gamma '1_0' is not a number"),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_crafted_libsvm_headers_are_refused_before_libsvm_reads_them(case, good, tmp_path) -> None:
    keyword, value, expected = HEADER_CASES[case]
    message = _load_error(_with_model_text(good, tmp_path, _edit_header(_model_lines(good), keyword, value)))
    assert expected in message and "damaged" in message


def _edit_first_vector(lines: list[str], change) -> str:
    start = lines.index("SV") + 1
    return "\n".join(lines[:start] + [change(lines[start])] + lines[start + 1:])


VECTOR_CASES = {
    "NaN coefficient": (lambda line: "nan " + line.split(" ", 1)[1], "coefficient of support vector 1 'nan'"),
    "infinite coefficient": (lambda line: "-inf " + line.split(" ", 1)[1], "is not a number"),
    "index 0": (lambda line: re.sub(r" 1:", " 0:", line, count=1), "feature index of support vector 1 is 0, outside 1..212"),
    "index beyond the dimension": (lambda line: line.rstrip() + " 213:0.5 ", "is 213, outside 1..212"),
    "indices out of order": (lambda line: line.rstrip() + " 5:0.5 ", "do not increase (5 after"),
    "NaN feature value": (lambda line: re.sub(r" 2:[^ ]+", " 2:nan", line, count=1), "feature 2 of support vector 1 'nan'"),
    "missing colon": (lambda line: line.rstrip() + " 7 ", "where an index:value pair belongs"),
    "too few coefficients": (lambda line: line.split(" ", 2)[2], "is not a number"),
    "negative index": (lambda line: re.sub(r" 1:", " -1:", line, count=1), "is -1, outside 1..212"),
}


@pytest.mark.parametrize("case", list(VECTOR_CASES))
def test_crafted_support_vectors_are_refused(case, good, tmp_path) -> None:
    change, expected = VECTOR_CASES[case]
    message = _load_error(_with_model_text(good, tmp_path, _edit_first_vector(_model_lines(good), change)))
    assert expected in message


def test_support_vector_lines_must_match_total_sv(good, tmp_path) -> None:
    lines = _model_lines(good)
    total = int(next(line for line in lines if line.startswith("total_sv")).split()[1])
    nr_sv = next(line for line in lines if line.startswith("nr_sv")).split()[1:]
    bigger = str(int(nr_sv[0]) + 1)
    text = _edit_header(_edit_header(lines, "total_sv", str(total + 1)).split("\n"), "nr_sv",
                        " ".join([bigger, *nr_sv[1:]]))
    assert f"total_sv says {total + 1} support vectors, but {total} lines follow" in _load_error(
        _with_model_text(good, tmp_path, text))
    start = lines.index("SV") + 1
    extra = "\n".join(lines[:start + 1] + [lines[start]] + lines[start + 1:])
    assert f"but {total + 1} lines follow" in _load_error(_with_model_text(good, tmp_path, extra))
    assert "not plain ASCII" in _load_error(_with_model_text(good, tmp_path, "\n".join(lines) + "\u00e9"))
    missing = "\n".join(line for line in lines if not line.startswith("probA"))
    assert "expected the 'probA' line" in _load_error(_with_model_text(good, tmp_path, missing))


def _meta(members: dict[str, bytes]) -> dict:
    return json.loads(members["meta.json"])


def test_deeply_nested_json_gives_model_file_error_not_recursion_error(good, tmp_path) -> None:
    nested = b"[" * 200_000 + b"]" * 200_000
    message = _load_error(_write(tmp_path / "nested.fwexpr", {**_members(good), "meta.json": nested}))
    assert "nested too deeply" in message
    text = json.dumps(_meta(_members(good))).replace('"skip": ', '"skip": ' + "9" * 5000, 1)
    # an integer beyond Python's conversion limit raises ValueError inside json
    assert "is not valid JSON" in _load_error(_write(tmp_path / "long.fwexpr", {**_members(good), "meta.json":
                                                                                   text.encode()}))


META_CASES = {
    "statistics for an expression the model lacks (KeyError in predict)": (
        lambda m: m["model"]["stats"]["samples"].update(grin=5), "sample counts do not name exactly"),
    "statistics missing an expression": (
        lambda m: m["model"]["stats"]["samples"].pop(m["model"]["expressions"][0]), "sample counts do not name"),
    "statistics of other expressions": (
        lambda m: m["model"]["stats"].update(expressions=["a", "b", "c"]), "describe other expressions"),
    "confusion matrix of the wrong shape": (
        lambda m: m["model"]["stats"]["confusion"].pop(), "confusion matrix is not 3 x 3"),
    "confusion rows not matching the samples": (
        lambda m: m["model"]["stats"]["confusion"][0].__setitem__(0, 10_000), "does not add up"),
    "zero samples (division by zero in predict)": (
        lambda m: m["model"]["stats"]["samples"].update({m["model"]["expressions"][0]: 0}), "not an integer in 1..10000"),
    "NaN accuracy": (lambda m: m["model"]["stats"].update(accuracy=float("nan")), "NaN, which is not a number"),
    "string skip": (lambda m: m.update(skip="2"), "skip is '2', not an integer"),
    "folds larger than min_samples": (lambda m: m.update(folds=50), "min_samples is 10, not an integer in 50.."),
    "repeated expression names": (lambda m: m["model"].update(expressions=["a", "a", "b"]), "repeated"),
    "other feature definition": (lambda m: m.update(feature_names=["x"] * 14), "other expression features"),
    "checksum not hex": (lambda m: m["sha256"].update({"model.txt": "zz"}), "SHA-256 hex digests"),
    "model without model.txt checksum": (lambda m: m["sha256"].pop("model.txt"), "checksums cover"),
    "a million expressions": (lambda m: m.update(sample_expressions=[str(i) for i in range(100_000)]),
                              "lists 100000 expressions"),
}


@pytest.mark.parametrize("case", list(META_CASES))
def test_inconsistent_meta_is_refused_at_load(case, good, tmp_path) -> None:
    change, expected = META_CASES[case]
    members = _members(good)
    meta = _meta(members)
    change(meta)
    message = _load_error(_write(tmp_path / "meta.fwexpr", {**members, "meta.json": json.dumps(meta).encode()},
                                 rehash=False))
    assert expected in message


def _npz(**arrays: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    return buffer.getvalue()


def _good_arrays(good: Path) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(_members(good)["samples.npz"]), allow_pickle=False) as npz:
        return {name: npz[name] for name in npz.files}


def _npy_header_only(shape: tuple, descr: str = "<f8") -> bytes:
    """An npy file whose header claims ``shape`` but that carries no data."""
    buffer = io.BytesIO()
    np.lib.format.write_array_header_1_0(buffer, {"descr": descr, "fortran_order": False, "shape": shape})
    return buffer.getvalue()


def _with_npz_member(good: Path, tmp_path: Path, name: str, npy: bytes) -> Path:
    members = _members(good)
    with zipfile.ZipFile(io.BytesIO(members["samples.npz"])) as inner:
        arrays = {n: inner.read(n) for n in inner.namelist()}
    arrays[name] = npy
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as inner:
        for n, data in arrays.items():
            inner.writestr(n, data)
    return _write(tmp_path / "npz.fwexpr", {**members, "samples.npz": buffer.getvalue()})


NPY_CASES = {
    "shape claim of 10**12 samples (MemoryError)": ("points3d.npy", _npy_header_only((10**12, 66, 3)),
                                                    "claims 1000000000000 samples"),
    "shape claim of 2**62 labels": ("labels.npy", _npy_header_only((2**62,), "<i8"), "claims 4611686018427387904"),
    "wrong shape": ("features.npy", _npy_header_only((3, 15)), "expected (samples, 14)"),
    "object dtype": ("labels.npy", _npy_header_only((3,), "|O"), "dtype object"),
    "structured dtype": ("features.npy", _npy_header_only((3, 14), [("a", "<f8")]), "dtype"),
    "complex dtype": ("features.npy", _npy_header_only((3, 14), "<c16"), "dtype complex128"),
    "unknown array": ("payload.npy", _npy_header_only((1,)), "unexpected arrays: ['payload.npy']"),
    "nested npz": ("inner.npz", b"PK\x05\x06" + bytes(18), "unexpected arrays: ['inner.npz']"),
    "data cut short": ("reference.npy", _npy_header_only((66, 3)), "reference is cut short: 0 of 1584 bytes"),
    "header not a dict": ("labels.npy", np.lib.format.magic(1, 0) + struct.pack("<H", 8) + b"[1,2]  \n", "header"),
}


@pytest.mark.parametrize("case", list(NPY_CASES))
def test_npy_headers_are_checked_before_any_array_is_read(case, good, tmp_path) -> None:
    name, npy, expected = NPY_CASES[case]
    tracemalloc.start()
    try:
        message = _load_error(_with_npz_member(good, tmp_path, name, npy))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert expected in message
    assert peak < BOMB_MEMORY_LIMIT


def test_pickled_arrays_and_foreign_layouts_are_refused(good, tmp_path) -> None:
    arrays = _good_arrays(good)
    samples = len(arrays["labels"])
    cases = {
        "labels outside the expressions": ({**arrays, "labels": arrays["labels"] + 5}, "labels outside"),
        "NaN points": ({**arrays, "points3d": np.full_like(arrays["points3d"], np.nan)}, "not finite"),
        "collapsed points": ({**arrays, "points3d": np.zeros_like(arrays["points3d"])}, "collapsed 3D points"),
        "unnormalised mean face": ({**arrays, "reference": arrays["reference"] * 3}, "not normalised"),
        "zero scaler": ({**arrays, "scaler_scale": np.zeros_like(arrays["scaler_scale"])}, "feature scaler"),
        "no scaler with a model": ({k: v for k, v in arrays.items() if k != "scaler_mean"}, "lacks its mean face"),
        "sample counts disagree": ({**arrays, "features": arrays["features"][:-1]},
                                   f"features has {samples - 1} samples where the other arrays have {samples}"),
    }
    for case, (changed, expected) in cases.items():
        path = _write(tmp_path / "arrays.fwexpr", {**_members(good), "samples.npz": _npz(**changed)})
        assert expected in _load_error(path), case


# --- bombs --------------------------------------------------------------------------------------------


def _deflate_bomb(gigabytes: float = 1.0) -> bytes:
    """Raw deflate data that inflates to ``gigabytes`` of zeros: one compressed megabyte, repeated."""
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(1 << 20)) + compressor.flush(zlib.Z_FULL_FLUSH)
    return block * int(gigabytes * 1024) + b"\x03\x00"  # an empty final block ends the stream


def _raw_zip(entries: list[tuple[str, bytes, int, int]]) -> bytes:
    """A zip of deflated members given as (name, raw deflate data, claimed size, CRC-32)."""
    out, central = io.BytesIO(), io.BytesIO()
    for name, data, size, crc in entries:
        offset = out.tell()
        encoded = name.encode()
        out.write(struct.pack("<4sHHHHHIIIHH", b"PK\x03\x04", 20, 0, 8, 0, 0x21, crc, len(data), size,
                              len(encoded), 0) + encoded + data)
        central.write(struct.pack("<4sHHHHHHIIIHHHHHII", b"PK\x01\x02", 20, 20, 0, 8, 0, 0x21, crc, len(data),
                                  size, len(encoded), 0, 0, 0, 0, 0, offset) + encoded)
    start = out.tell()
    out.write(central.getvalue())
    out.write(struct.pack("<4sHHHHIIH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central.getvalue()),
                          start, 0))
    return out.getvalue()


def _deflated(data: bytes) -> tuple[bytes, int]:
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    return compressor.compress(data) + compressor.flush(), zlib.crc32(data)


def _load_measured(path: Path) -> tuple[str, int]:
    tracemalloc.start()
    try:
        message = _load_error(path)
        return message, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


@pytest.fixture(scope="module")
def bomb() -> bytes:
    return _deflate_bomb(1.0)


def test_a_one_megabyte_zip_bomb_is_refused_with_little_memory(good, bomb, tmp_path) -> None:
    members = _members(good)
    meta_data, meta_crc = _deflated(members["meta.json"])
    for claimed in (1 << 30, 1000, 16 << 20):  # the true size, lying directories (16 MB: just under the limit)
        path = tmp_path / "bomb.fwexpr"
        path.write_bytes(_raw_zip([("meta.json", meta_data, len(members["meta.json"]), meta_crc),
                                   ("samples.npz", bomb, claimed, 0)]))
        assert path.stat().st_size < 1.1e6
        message, peak = _load_measured(path)
        assert peak < BOMB_MEMORY_LIMIT, (claimed, peak)
        assert "damaged" in message or "not a Facewire expression model" in message
    # A meta.json that inflates to a gigabyte behind a directory entry claiming 100 bytes.
    path.write_bytes(_raw_zip([("meta.json", bomb, 100, 0)]))
    message, peak = _load_measured(path)
    assert peak < BOMB_MEMORY_LIMIT and "damaged" in message


def test_a_nested_npz_bomb_is_refused_with_little_memory(good, bomb, tmp_path) -> None:
    """samples.npz, itself deflated inside the model file, holding a member that inflates to a gigabyte."""
    members = _members(good)
    with zipfile.ZipFile(io.BytesIO(members["samples.npz"])) as inner:
        arrays = {n: inner.read(n) for n in inner.namelist()}
    samples = len(_good_arrays(good)["labels"])
    cases = {  # member: the npy header it starts with, before the gigabyte of zeros
        "junk.npy": _npy_header_only((1 << 27,)),  # an array the format does not have
        "scaler_mean.npy": _npy_header_only((1 << 27,)),  # a known array claiming a gigabyte
        "points3d.npy": _npy_header_only((samples, 66, 3)),  # an honest header whose data goes on and on
    }
    for name, npy in cases.items():
        for claimed in (len(npy) + (1 << 30), len(npy) + samples * 66 * 3 * 8):  # true size, lying directory
            entries = [(n, *_deflated(d)[:1], len(d), zlib.crc32(d)) for n, d in arrays.items() if n != name]
            compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
            entries.append((name, compressor.compress(npy) + compressor.flush(zlib.Z_FULL_FLUSH) + bomb, claimed, 0))
            path = _write(tmp_path / "nested.fwexpr", {**members, "samples.npz": _raw_zip(entries)})
            assert path.stat().st_size < good.stat().st_size + 20_000  # the bomb adds a few kilobytes
            message, peak = _load_measured(path)
            assert peak < BOMB_MEMORY_LIMIT, (name, claimed, peak)
            assert "damaged" in message, message


def test_oversized_files_and_members_are_refused_before_reading(good, tmp_path) -> None:
    for device in ("/dev/zero", "/dev/urandom"):  # endless: the zip reader would read them for ever
        if Path(device).exists():
            assert "not a regular file" in _load_error(Path(device))
    with pytest.raises(IsADirectoryError):
        ExpressionCalibrator.load(tmp_path)
    sparse = tmp_path / "huge.fwexpr"
    with open(sparse, "wb") as handle:
        handle.truncate(1 << 40)  # a terabyte, sparse: takes no disk space
    assert "larger than any expression model can be" in _load_error(sparse)
    members = _members(good)
    big_meta = json.dumps({**_meta(members), "padding": "x" * (2 << 20)}).encode()
    assert "member meta.json claims" in _load_error(_write(tmp_path / "m.fwexpr", {**members, "meta.json": big_meta}))
    many = _write(tmp_path / "many.fwexpr", {**members, **{f"x{i}": b"" for i in range(20)}}, rehash=False)
    assert "the zip holds 23 members" in _load_error(many)
    extra = _write(tmp_path / "extra.fwexpr", {**members, "notes.txt": b"hello"}, rehash=False)
    assert "unexpected members ['notes.txt']" in _load_error(extra)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data, compress_type=zipfile.ZIP_BZIP2 if name == "model.txt" else
                             zipfile.ZIP_DEFLATED)
    (tmp_path / "bz2.fwexpr").write_bytes(buffer.getvalue())
    assert "compression method 12" in _load_error(tmp_path / "bz2.fwexpr")
    duplicated = bytearray(_raw_zip([(n, *_deflated(d)[:1], len(d), zlib.crc32(d)) for n, d in members.items()]
                                   + [("meta.json", *_deflated(members["meta.json"])[:1], len(members["meta.json"]),
                                       zlib.crc32(members["meta.json"]))]))
    (tmp_path / "dup.fwexpr").write_bytes(duplicated)
    assert "occurs twice" in _load_error(tmp_path / "dup.fwexpr")
    encrypted = bytearray(_raw_zip([(n, *_deflated(d)[:1], len(d), zlib.crc32(d)) for n, d in members.items()]))
    central = encrypted.rindex(b"PK\x01\x02" + struct.pack("<HH", 20, 20))
    struct.pack_into("<H", encrypted, central + 8, 1)  # the last member's "encrypted" flag
    (tmp_path / "enc.fwexpr").write_bytes(encrypted)
    assert "is encrypted" in _load_error(tmp_path / "enc.fwexpr")


# --- fuzzing ------------------------------------------------------------------------------------------

_NASTY = ["nan", "inf", "-1", "0", "2147483647", "4294967296", "1e9", "1e999", "-0", "0:1", "213:1", "", "x",
          "1:nan", "\x00", "99999999999999999999", "[]", "{}", "null", "true", "\"a\""]


@st.composite
def _mutations(draw):
    member = draw(st.sampled_from(["model.txt", "meta.json", "samples.npz", "whole file"]))
    kind = draw(st.sampled_from(["token", "flip", "cut", "duplicate line"]))
    return member, kind, draw(st.integers(0, 10**9)), draw(st.sampled_from(_NASTY)), draw(st.integers(1, 255))


def _mutate(data: bytes, kind: str, position: int, token: str, xor: int) -> bytes:
    if not data:
        return token.encode()
    at = position % len(data)
    if kind == "flip":
        return data[:at] + bytes([data[at] ^ xor]) + data[at + 1:]
    if kind == "cut":
        return data[:at]
    if kind == "duplicate line":
        lines = data.split(b"\n")
        k = position % len(lines)
        return b"\n".join(lines[:k + 1] + lines[k:])
    tokens = re.split(rb"([\s,:\[\]{}]+)", data)
    k = (position % ((len(tokens) + 1) // 2)) * 2
    tokens[k] = token.encode()
    return b"".join(tokens)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(mutation=_mutations())
def test_mutated_real_files_give_model_file_error_or_a_working_model(good, records, tmp_path, mutation) -> None:
    member, kind, position, token, xor = mutation
    path = tmp_path / "fuzzed.fwexpr"
    if member == "whole file":
        path.write_bytes(_mutate(good.read_bytes(), kind, position, token, xor))
    else:
        members = _members(good)
        _write(path, {**members, member: _mutate(members[member], kind, position, token, xor)})
    try:
        loaded = ExpressionCalibrator.load(path)
    except ModelFileError as exc:
        assert str(exc)
        event(f"{member}, {kind}: ModelFileError")
        return
    event(f"{member}, {kind}: loaded")
    if not loaded.trained:
        return
    for rec in records[::40]:
        try:
            prediction = loaded.predict(rec)
        except CalibrationError:
            continue
        assert prediction.expression in loaded.model_expressions
        assert np.isfinite(list(prediction.probabilities.values())).all()


def test_recording_stops_at_the_most_samples_a_file_may_hold(records, monkeypatch, caplog) -> None:
    """What train() and save() produce must load again: recording stops at MAX_SAMPLES."""
    import facewire.client.calibration as calibration

    monkeypatch.setattr(calibration, "MAX_SAMPLES", 5)
    calibrator = ExpressionCalibrator()
    kept = [calibrator.record("a" if k % 2 else "b", rec) for k, rec in enumerate(records[:12])]
    assert sum(kept) == 5 and kept[5:] == [False] * 7
    assert "holds the most samples a model may have (5)" in caplog.text
    assert calibrator.clear("a") > 0 and calibrator.record("a", records[0])
