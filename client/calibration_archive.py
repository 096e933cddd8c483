"""Reading a calibration archive without trusting it: bounded zip members, npy headers checked before any
array is read, and libsvm's model text checked line by line before libsvm parses it.

Calibration files are exchanged between users, so every byte may be hostile. Three readers underneath
trust their input: libsvm's C loader allocates and indexes by the counts a model header claims (a
``total_sv`` of 2**31 - 1 crashes the process, a lying ``nr_sv`` makes prediction read past its arrays),
numpy's npz loader allocates whatever shape an npy header claims, and a zip member inflates to whatever
size it likes. So every size here is checked against limits no real calibration reaches, before the bytes
are read or parsed, and every read is capped whatever the zip headers say.

Everything raises :class:`ArchiveError` (a ``ValueError``) with a message naming the problem; the
calibrator turns it into its documented ``ModelFileError``.
"""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

__all__ = [
    "ArchiveError",
    "ArraySpec",
    "MAX_EXPRESSIONS",
    "MAX_SAMPLES",
    "check_float",
    "check_int",
    "check_keys",
    "check_libsvm_model",
    "check_names",
    "max_model_text_bytes",
    "check_directory",
    "max_npz_bytes",
    "parse_json",
    "read_arrays",
    "read_member",
]

#: Most expressions a calibration may tell apart (each pair gets its own SVM inside libsvm).
MAX_EXPRESSIONS = 64
#: Most recorded samples a calibration may hold. Training cross-validates 16 settings x 5 folds of an
#: O(n^2) SVM, which already takes hours at this size, so no trained file gets near it.
MAX_SAMPLES = 10_000
#: Longest expression name.
MAX_NAME_LENGTH = 200

_CHUNK = 1 << 16
_MAX_ZIP_MEMBERS = 16
_MAX_NPY_HEADER = 4096


class ArchiveError(ValueError):
    """A calibration archive breaks one of the rules above; the message says which."""


# --- zip ------------------------------------------------------------------------------------------


def check_directory(archive: zipfile.ZipFile, limits: Mapping[str, int]) -> None:
    """Refuse a zip whose directory lists unknown or repeated members or sizes beyond ``limits``.

    Nothing is decompressed here; :func:`read_member` caps what it reads whatever the directory claims.
    """
    infos = archive.infolist()
    if len(infos) > _MAX_ZIP_MEMBERS:
        raise ArchiveError(f"the zip holds {len(infos)} members (a calibration has at most {len(limits)})")
    names = [info.filename for info in infos]
    if len(set(names)) != len(names):
        raise ArchiveError("a member name occurs twice in the zip")
    unknown = sorted(set(names) - set(limits))
    if unknown:
        raise ArchiveError(f"unexpected members {unknown[:5]} (a calibration holds only {sorted(limits)})")
    total = 0
    for info in infos:
        _check_zip_info(info, limits[info.filename])
        total += info.file_size
    if total > sum(limits.values()):
        raise ArchiveError(f"its members would unpack to {total} bytes, more than a calibration can hold")


def _check_zip_info(info: zipfile.ZipInfo, limit: int) -> None:
    if info.flag_bits & 0x1:
        raise ArchiveError(f"member {info.filename} is encrypted")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        raise ArchiveError(f"member {info.filename} uses compression method {info.compress_type} "
                           "(only stored and deflated are read)")
    if info.file_size > limit:
        raise ArchiveError(f"member {info.filename} claims {info.file_size} bytes, more than the "
                           f"{limit} a calibration's {info.filename} can have")


def read_member(archive: zipfile.ZipFile, name: str, limit: int) -> bytes:
    """Member ``name``, read in chunks and refused once it passes ``limit`` bytes (a lying header cannot help)."""
    info = archive.getinfo(name)
    _check_zip_info(info, limit)
    with archive.open(info) as stream:
        return _read_capped(stream, limit, name)


def _read_capped(stream: io.BufferedIOBase, limit: int, what: str) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        chunk = stream.read(min(_CHUNK, limit + 1 - size))
        if not chunk:
            return b"".join(parts)
        size += len(chunk)
        if size > limit:
            raise ArchiveError(f"{what} unpacks to more than {limit} bytes")
        parts.append(chunk)


# --- json -----------------------------------------------------------------------------------------


def _no_constant(name: str) -> object:
    raise ArchiveError(f"meta.json holds {name}, which is not a number")


def parse_json(data: bytes, what: str) -> object:
    """JSON without NaN/Infinity; nesting too deep for the parser is an ArchiveError, not a RecursionError."""
    try:
        return json.loads(data.decode("utf-8"), parse_constant=_no_constant)
    except RecursionError:
        raise ArchiveError(f"{what} is nested too deeply to be a calibration header") from None
    except UnicodeDecodeError as exc:
        raise ArchiveError(f"{what} is not UTF-8 text ({exc})") from None
    except ValueError as exc:  # JSONDecodeError, and integers too long to convert
        raise ArchiveError(f"{what} is not valid JSON ({str(exc)[:200]})") from None


# --- npz ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ArraySpec:
    """What one array of the npz must look like: dtype kinds ('f' float, 'iu' integer) and shape.

    ``None`` in ``shape`` stands for the number of samples, the same for every array, at most
    :data:`MAX_SAMPLES`.
    """

    kinds: str
    shape: tuple[int | None, ...]
    required: bool = True


def read_arrays(data: bytes, specs: Mapping[str, ArraySpec]) -> dict[str, np.ndarray]:
    """The arrays of an npz (bytes already capped), each header checked against ``specs`` before reading.

    Only plain little- or big-endian numbers are accepted (no objects, no pickles, no structured or
    nested data), and each array's data must be exactly as long as its header says.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise ArchiveError(f"samples.npz is not an npz archive ({exc})") from None
    with archive:
        members = {f"{name}.npy": name for name in specs}
        limits = {member: _max_array_bytes(specs[name]) for member, name in members.items()}
        infos = archive.infolist()
        names = [info.filename for info in infos]
        unknown = sorted(set(names) - set(members))
        if unknown or len(set(names)) != len(names) or len(infos) > len(specs):
            raise ArchiveError(f"samples.npz holds unexpected arrays: {(unknown or names)[:5]}")
        missing = sorted(name for member, name in members.items() if specs[name].required and member not in names)
        if missing:
            raise ArchiveError(f"samples.npz lacks the arrays {missing}")
        arrays: dict[str, np.ndarray] = {}
        samples: int | None = None
        for info in infos:
            name = members[info.filename]
            _check_zip_info(info, limits[info.filename])
            with archive.open(info) as stream:
                dtype, shape, fortran = _npy_header(stream, name)
                samples = _check_array(name, dtype, shape, specs[name], samples)
                count = math.prod(shape)
                raw = _read_capped(stream, count * dtype.itemsize, f"array {name}")
                if len(raw) != count * dtype.itemsize:
                    raise ArchiveError(f"array {name} is cut short: {len(raw)} of {count * dtype.itemsize} bytes")
                if stream.read(1):
                    raise ArchiveError(f"array {name} has more data than its header's shape {shape}")
            array = np.frombuffer(raw, dtype=dtype).reshape(shape, order="F" if fortran else "C")
            arrays[name] = array.astype(array.dtype.newbyteorder("="))  # a native-order copy
        return arrays


def max_npz_bytes(specs: Mapping[str, ArraySpec]) -> int:
    """Upper bound of an npz holding the largest arrays ``specs`` allow (zip overhead included)."""
    return 64 * 1024 + sum(_max_array_bytes(spec) for spec in specs.values())


def _max_array_bytes(spec: ArraySpec) -> int:
    """Upper bound of an npy member: header plus the largest array ``spec`` allows, in float64/int64."""
    return _MAX_NPY_HEADER + 64 + 8 * math.prod(MAX_SAMPLES if n is None else n for n in spec.shape)


def _npy_header(stream: io.BufferedIOBase, name: str) -> tuple[np.dtype, tuple[int, ...], bool]:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(stream, max_header_size=_MAX_NPY_HEADER)
        elif version == (2, 0):
            shape, fortran, dtype = fmt.read_array_header_2_0(stream, max_header_size=_MAX_NPY_HEADER)
        else:
            raise ArchiveError(f"array {name} has npy format version {version}, which is not read")
    except ArchiveError:
        raise
    except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError) as exc:
        raise ArchiveError(f"array {name} has an unreadable npy header ({exc})") from None
    return np.dtype(dtype), tuple(shape), bool(fortran)


def _check_array(name: str, dtype: np.dtype, shape: tuple[int, ...], spec: ArraySpec, samples: int | None) -> int | None:
    if dtype.hasobject or dtype.fields is not None or dtype.subdtype is not None or dtype.kind not in spec.kinds \
            or dtype.itemsize > 8:
        raise ArchiveError(f"array {name} has dtype {dtype}; expected plain {'floats' if spec.kinds == 'f' else 'integers'}")
    if len(shape) != len(spec.shape) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ArchiveError(f"array {name} has shape {shape}, expected {_shape_text(spec.shape)}")
    if any(want is not None and got != want for got, want in zip(shape, spec.shape)):
        raise ArchiveError(f"array {name} has shape {shape}, expected {_shape_text(spec.shape)}")
    for got, want in zip(shape, spec.shape):
        if want is None:
            if got > MAX_SAMPLES:
                raise ArchiveError(f"array {name} claims {got} samples, more than the {MAX_SAMPLES} a calibration holds")
            if samples is not None and got != samples:
                raise ArchiveError(f"array {name} has {got} samples where the other arrays have {samples}")
            samples = got
    return samples


def _shape_text(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("samples" if n is None else str(n) for n in shape) + ")"


# --- libsvm's model text ------------------------------------------------------------------------------

_NUMBER = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
_INTEGER = re.compile(r"[+-]?\d{1,10}")
_MAX_TOKEN = 40
#: Header keywords in the order libsvm writes a probabilistic RBF C-SVC model; libsvm sizes the arrays
#: of rho, label, probA, probB and nr_sv by nr_class, so the order is part of the format.
_HEADER = ("svm_type", "kernel_type", "gamma", "nr_class", "total_sv", "rho", "label", "probA", "probB", "nr_sv")


def max_model_text_bytes(dimension: int, classes: int = MAX_EXPRESSIONS) -> int:
    """Upper bound of libsvm's text for ``classes`` expressions over ``dimension`` features.

    libsvm writes coefficients with ``%.17g`` (at most 24 characters and a space) and features as
    ``index:%.8g`` (at most 4 + 1 + 15 characters and a space), one support vector per sample at most.
    """
    line = (classes - 1) * 26 + dimension * 24 + 2
    return 64 * 1024 + MAX_SAMPLES * line


def _finite(token: str, what: str) -> float:
    if len(token) > _MAX_TOKEN or not _NUMBER.fullmatch(token):
        raise ArchiveError(f"model.txt: {what} {token[:_MAX_TOKEN]!r} is not a number")
    value = float(token)
    if not math.isfinite(value):
        raise ArchiveError(f"model.txt: {what} {token[:_MAX_TOKEN]!r} is not finite")
    return value


def _integer(token: str, what: str, low: int, high: int) -> int:
    if not _INTEGER.fullmatch(token):
        raise ArchiveError(f"model.txt: {what} {token[:_MAX_TOKEN]!r} is not an integer")
    value = int(token)
    if not low <= value <= high:
        raise ArchiveError(f"model.txt: {what} is {value}, outside {low}..{high}")
    return value


def check_libsvm_model(text: bytes, classes: int, dimension: int) -> None:
    """Refuse model text that libsvm's loader or predictor could mis-read; return quietly when it is sound.

    It must be a probabilistic RBF C-SVC for exactly the labels ``0..classes-1``: header fields in
    libsvm's order with counts that agree (``nr_class == classes``, ``sum(nr_sv) == total_sv`` == the
    number of support-vector lines, ``classes * (classes - 1) / 2`` values of rho, probA and probB),
    then one line per support vector: ``classes - 1`` finite coefficients and ``index:value`` pairs with
    strictly increasing indices in ``1..dimension`` and finite values.
    """
    if not 2 <= classes <= MAX_EXPRESSIONS:
        raise ArchiveError(f"model.txt: a model of {classes} expressions is not supported")
    try:
        lines = text.decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise ArchiveError("model.txt is not plain ASCII text") from None
    if len(lines) < len(_HEADER) + 2:
        raise ArchiveError("model.txt is too short for a libsvm model")
    pairs = classes * (classes - 1) // 2
    fields: dict[str, list[str]] = {}
    for keyword, line in zip(_HEADER, lines):
        tokens = line.split()
        if not tokens or tokens[0] != keyword:
            raise ArchiveError(f"model.txt: expected the {keyword!r} line of libsvm's header, found {line[:60]!r}")
        fields[keyword] = tokens[1:]
    if fields["svm_type"] != ["c_svc"] or fields["kernel_type"] != ["rbf"]:
        raise ArchiveError(f"model.txt is a {' '.join(fields['svm_type'])[:20]} model with a "
                           f"{' '.join(fields['kernel_type'])[:20]} kernel, not a c_svc with an rbf kernel")
    expected_counts = {"gamma": 1, "nr_class": 1, "total_sv": 1, "rho": pairs, "label": classes, "probA": pairs,
                       "probB": pairs, "nr_sv": classes}
    for keyword, count in expected_counts.items():
        if len(fields[keyword]) != count:
            raise ArchiveError(f"model.txt: {keyword} has {len(fields[keyword])} values; a model of {classes} "
                               f"expressions has {count}")
    gamma = _finite(fields["gamma"][0], "gamma")
    if gamma <= 0:
        raise ArchiveError(f"model.txt: gamma is {gamma}, not positive")
    nr_class = _integer(fields["nr_class"][0], "nr_class", 2, MAX_EXPRESSIONS)
    if nr_class != classes:
        raise ArchiveError(f"model.txt: nr_class is {nr_class}, but the file names {classes} expressions")
    total_sv = _integer(fields["total_sv"][0], "total_sv", 1, MAX_SAMPLES)
    for keyword in ("rho", "probA", "probB"):
        for token in fields[keyword]:
            _finite(token, keyword)
    labels = [_integer(t, "label", 0, classes - 1) for t in fields["label"]]
    if sorted(labels) != list(range(classes)):
        raise ArchiveError(f"model.txt: labels {labels} are not the expressions 0..{classes - 1}")
    nr_sv = [_integer(t, "nr_sv", 0, MAX_SAMPLES) for t in fields["nr_sv"]]
    if sum(nr_sv) != total_sv:
        raise ArchiveError(f"model.txt: nr_sv adds up to {sum(nr_sv)}, but total_sv is {total_sv}")
    if lines[len(_HEADER)].strip() != "SV":
        raise ArchiveError("model.txt: the header does not end with the 'SV' line")
    vectors = lines[len(_HEADER) + 1:]
    while vectors and not vectors[-1].strip():
        vectors.pop()
    if len(vectors) != total_sv:
        raise ArchiveError(f"model.txt: total_sv says {total_sv} support vectors, but {len(vectors)} lines follow")
    for number, line in enumerate(vectors, start=1):
        _check_vector_line(line, number, classes - 1, dimension)


def _check_vector_line(line: str, number: int, coefficients: int, dimension: int) -> None:
    tokens = line.split()
    if len(tokens) < coefficients or len(tokens) > coefficients + dimension:
        raise ArchiveError(f"model.txt: support vector {number} has {len(tokens)} fields; expected "
                           f"{coefficients} coefficients and at most {dimension} features")
    for token in tokens[:coefficients]:
        _finite(token, f"coefficient of support vector {number}")
    previous = 0
    for token in tokens[coefficients:]:
        index_text, colon, value_text = token.partition(":")
        if not colon:
            raise ArchiveError(f"model.txt: support vector {number} has {token[:_MAX_TOKEN]!r} where an "
                               "index:value pair belongs")
        index = _integer(index_text, f"feature index of support vector {number}", 1, dimension)
        if index <= previous:
            raise ArchiveError(f"model.txt: feature indices of support vector {number} do not increase ({index} "
                               f"after {previous})")
        previous = index
        _finite(value_text, f"feature {index} of support vector {number}")


def check_names(names: object, what: str, at_least: int = 0) -> list[str]:
    """A list of distinct, non-empty expression names of sane length and number."""
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise ArchiveError(f"{what} is not a list of names")
    if len(names) > MAX_EXPRESSIONS or len(names) < at_least:
        raise ArchiveError(f"{what} lists {len(names)} expressions (allowed: {at_least}..{MAX_EXPRESSIONS})")
    if any(not n.strip() or len(n) > MAX_NAME_LENGTH for n in names) or len(set(names)) != len(names):
        raise ArchiveError(f"{what} has an empty, overlong or repeated expression name")
    return list(names)


def check_int(value: object, what: str, low: int, high: int) -> int:
    """A JSON integer (not a bool or float) within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ArchiveError(f"{what} is {_shown(value)}, not an integer in {low}..{high}")
    return value


def check_float(value: object, what: str, low: float, high: float) -> float:
    """A finite JSON number within ``low..high``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not low <= value <= high:
        raise ArchiveError(f"{what} is {_shown(value)}, not a number in {low:g}..{high:g}")
    return float(value)


def _shown(value: object) -> str:
    text = repr(value) if isinstance(value, str) else json.dumps(value) if isinstance(value, (list, dict)) \
        else str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def check_keys(doc: object, what: str, keys: Iterable[str]) -> dict:
    """A JSON object holding at least ``keys``."""
    if not isinstance(doc, dict):
        raise ArchiveError(f"{what} is not a JSON object")
    missing = [key for key in keys if key not in doc]
    if missing:
        raise ArchiveError(f"{what} lacks {missing}")
    return doc
