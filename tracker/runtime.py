"""Loading the bundled ONNX models: manifest checks and single-threaded onnxruntime sessions.

Every model file is checked against ``models/MANIFEST.json`` before use, so a truncated or edited
file fails loudly with a message naming it instead of producing wrong landmarks.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)


class ModelError(RuntimeError):
    """A model file is missing, damaged, or does not match the manifest."""


@dataclass(frozen=True)
class ModelEntry:
    name: str
    path: Path
    sha256: str


MODELS_ENV = "FACEWIRE_MODELS"


def models_dir() -> Path:
    """Folder holding the models: ``$FACEWIRE_MODELS`` if set, else the bundled ``facewire/models``.

    Files are checked against that folder's own MANIFEST.json either way.
    """
    override = os.environ.get(MODELS_ENV)
    return Path(override) if override else Path(str(resources.files("facewire.models")))


def read_manifest(folder: Path | None = None) -> dict[str, ModelEntry]:
    folder = folder or models_dir()
    manifest_path = folder / "MANIFEST.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except FileNotFoundError:
        raise ModelError(f"model manifest {manifest_path} is missing; reinstall facewire") from None
    except json.JSONDecodeError as exc:
        raise ModelError(f"model manifest {manifest_path} is damaged: {exc}") from None
    return {m["name"]: ModelEntry(m["name"], folder / m["file"], m["onnx_sha256"]) for m in manifest["models"]}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def verified_model_bytes(name: str, folder: Path | None = None) -> bytes:
    """The model's bytes, after checking them against the manifest."""
    entries = read_manifest(folder)
    if name not in entries:
        raise ModelError(f"model {name!r} is not in the manifest (known: {', '.join(sorted(entries))})")
    entry = entries[name]
    try:
        data = entry.path.read_bytes()
    except FileNotFoundError:
        raise ModelError(f"model file {entry.path} is missing; reinstall facewire or run "
                         f"scripts/convert_models.py") from None
    if hashlib.sha256(data).hexdigest() != entry.sha256:
        raise ModelError(f"model file {entry.path} does not match its sha256 in MANIFEST.json (damaged or "
                         f"edited); reinstall facewire or run scripts/convert_models.py")
    return data


def make_session(name: str, threads: int = 1, folder: Path | None = None) -> ort.InferenceSession:
    """An onnxruntime CPU session for a bundled model, fully graph-optimised, on ``threads`` threads."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    return ort.InferenceSession(verified_model_bytes(name, folder), options, providers=["CPUExecutionProvider"])


@dataclass(frozen=True)
class ModelRunner:
    """A session plus its input/output names: ``runner(x)`` returns the outputs as a list of arrays."""

    session: ort.InferenceSession
    input_name: str
    output_names: tuple[str, ...]

    @classmethod
    def load(cls, name: str, threads: int = 1) -> "ModelRunner":
        session = make_session(name, threads)
        return cls(session, session.get_inputs()[0].name, tuple(o.name for o in session.get_outputs()))

    def __call__(self, x: np.ndarray) -> list[np.ndarray]:
        return self.session.run(self.output_names, {self.input_name: x})


class BoundRunner:
    """A model bound once to a fixed input array and fixed output arrays.

    Each call runs the model on whatever the input array holds now and overwrites the output arrays,
    so onnxruntime neither copies the input nor allocates outputs per frame (about 2% of the mesh's
    time). The outputs are only valid until the next call; not for several threads at once.
    """

    def __init__(self, runner: ModelRunner, input_array: np.ndarray) -> None:
        if input_array.dtype != np.float32 or not input_array.flags.c_contiguous:
            raise ValueError("the bound input must be a C-contiguous float32 array")
        self._session = runner.session
        self._binding = runner.session.io_binding()
        self._binding.bind_cpu_input(runner.input_name, input_array)
        self.outputs: list[np.ndarray] = []
        for meta in runner.session.get_outputs():
            if not all(isinstance(d, int) for d in meta.shape):
                raise ValueError(f"output {meta.name} has no fixed shape {meta.shape}; cannot bind it")
            array = np.empty(meta.shape, np.float32)
            self._binding.bind_output(meta.name, "cpu", 0, np.float32, array.shape, array.ctypes.data)
            self.outputs.append(array)
        self._input = input_array     # keeps the bound memory alive

    def __call__(self) -> list[np.ndarray]:
        self._session.run_with_iobinding(self._binding)
        return self.outputs


@lru_cache(maxsize=None)
def load_data_file(name: str) -> dict[str, np.ndarray]:
    """A small derived data file shipped in models/ (e.g. the 68-point mapping, the reference face)."""
    path = models_dir() / name
    if not path.exists():
        raise ModelError(f"data file {path} is missing; reinstall facewire")
    with np.load(path) as data:
        return {k: data[k] for k in data.files}
