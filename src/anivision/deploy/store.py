"""What an export is made of (:class:`ExportSpec`), writing one atomically, and the per-run cache
that ``--engine onnx`` uses.

An export is the ``.onnx`` file and its sidecar JSON; both are written under temporary names
and renamed into place only when everything succeeded, so a failed export (bad opset, no
calibration images, a full disk) leaves an earlier export untouched. The cache keeps one export
per model in ``RUN/onnx/`` (``<name>-<key>.onnx``), the key covering the weights' fingerprint,
the input config and the outputs: changed weights give a new key and a new export.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn
from torch.utils.data import Dataset

from anivision.data.cache import default_cache_dir
from anivision.data.transforms import DataConfig
from anivision.deploy.runtime import DEFAULT_OPSET, OnnxModel, OnnxOutput, check_engine, export_module
from anivision.deploy.quantize import int8_mode, quantize_int8
from anivision.deploy.sidecar import FORMAT_VERSION, build_sidecar, sidecar_path
from anivision.errors import AnivisionError

log = logging.getLogger(__name__)


@dataclass
class ExportSpec:
    """A model to export and what its sidecar records.

    Attributes:
        module: maps (B, 3, S, S) float32 to one tensor, or a tuple with one per ``outputs`` name.
        kind: ``classifier``, ``fewshot``, ``gallery`` or ``retrieval``.
        data_config: input size and normalisation.
        outputs: output names (``logits``, ``embeddings``).
        fingerprint: the weights' fingerprint (:func:`~anivision.embeddings.model_fingerprint`).
        source: the run or gallery folder.
        classes: class names of ``logits`` (or a gallery's characters).
        extra: more sidecar keys (a gallery's prototypes and threshold, a retrieval fold).
        name: file stem in the cache folder.
    """

    module: nn.Module
    kind: str
    data_config: DataConfig
    outputs: list[str]
    fingerprint: str
    source: str = ""
    classes: list[str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    name: str = "model"

    def key(self, opset: int | None = None) -> str:
        """Changes whenever the exported graph would: weights, input config, outputs, opset, format."""
        src = json.dumps([self.fingerprint, asdict(self.data_config), self.outputs, opset or DEFAULT_OPSET, FORMAT_VERSION, torch.__version__])
        return hashlib.sha1(src.encode()).hexdigest()[:16]


@torch.no_grad()
def output_dims(module: nn.Module, img_size: int, outputs: list[str]) -> dict[str, int]:
    """The width of each output (one CPU forward pass on a zero batch of 2, in eval mode)."""
    m = module
    was_training = m.training
    m.eval()
    try:
        p = next(m.parameters(), None)
        x = torch.zeros(2, 3, img_size, img_size, device=p.device if p is not None else "cpu")
        out = m(x)
    finally:
        m.train(was_training)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return {name: int(o.shape[1]) for name, o in zip(outputs, outs)}


def write_export(
    spec: ExportSpec, path: str | Path, opset: int | None = None, int8: bool = False, calibration: Callable[[], Dataset] | None = None,
) -> dict[str, Any]:
    """Export ``spec`` to ``path`` (+ sidecar ``path.with_suffix('.json')``), optionally as INT8.

    ``calibration`` gives the normalised images of static INT8 (:func:`~anivision.deploy.quantize.int8_mode`).

    Nothing at ``path`` changes unless every step succeeds.

    Returns:
        The sidecar.

    Raises:
        AnivisionError: the folder is not writable, export or quantization failed, or static
            INT8 without calibration images.
    """
    path = Path(path)
    if path.suffix != ".onnx":
        raise AnivisionError(f"--out {path}: the file name must end in .onnx")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise AnivisionError(f"--out {path}: cannot create its folder ({exc.strerror or exc})") from exc
    if not os.access(path.parent, os.W_OK):
        raise AnivisionError(f"--out {path}: the folder {path.parent} is not writable")
    tag = f".{os.getpid()}.tmp"
    tmp_fp32, tmp_int8 = path.with_name(f".{path.stem}{tag}.onnx"), path.with_name(f".{path.stem}{tag}.int8.onnx")
    tmp_json = path.with_name(f".{path.stem}{tag}.json")
    try:
        export_module(spec.module, tmp_fp32, spec.data_config.img_size, spec.outputs, opset)
        meta = build_sidecar(
            spec.kind, spec.data_config, spec.outputs, output_dims(spec.module, spec.data_config.img_size, spec.outputs),
            spec.fingerprint, spec.source, spec.classes, spec.extra,
        )
        meta["exporter"] = {"torch": torch.__version__, "dynamo": True, "opset": opset or DEFAULT_OPSET}
        final = tmp_fp32
        if int8:
            mode = int8_mode(spec.module)
            meta["precision"] = "int8"
            meta["int8"] = quantize_int8(tmp_fp32, tmp_int8, mode, calibration() if mode == "static" and calibration else None)
            final = tmp_int8
        tmp_json.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        # Both staged; the model first, then its sidecar (a reader that finds the new sidecar finds the new model).
        os.replace(final, path)
        os.replace(tmp_json, sidecar_path(path))
    except OSError as exc:
        raise AnivisionError(f"--out {path}: cannot write ({exc.strerror or exc})") from exc
    finally:
        for t in (tmp_fp32, tmp_int8, tmp_json):
            t.unlink(missing_ok=True)
    return meta


def _writable_folder(folder: Path) -> Path:
    """``folder``, or ``$ANIVISION_CACHE/onnx/<hash of folder>`` when it cannot be written (a read-only run)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if os.access(folder, os.W_OK):
            return folder
    except OSError:
        pass
    alt = default_cache_dir() / "onnx" / hashlib.sha1(str(folder.resolve()).encode()).hexdigest()[:16]
    alt.mkdir(parents=True, exist_ok=True)
    log.info("%s is not writable: ONNX export cached in %s", folder, alt)
    return alt


def cached_model(spec: ExportSpec, folder: str | Path, threads: int | None = None) -> OnnxModel:
    """The fp32 ONNX export of ``spec`` in ``folder`` (``RUN/onnx``), exported on first use and
    again whenever the weights change; older exports of the same ``spec.name`` are removed."""
    folder = _writable_folder(Path(folder))
    path = folder / f"{spec.name}-{spec.key()}.onnx"
    if path.is_file() and sidecar_path(path).is_file():
        try:
            return OnnxModel(path, threads)
        except AnivisionError as exc:  # a damaged cache entry: export again
            log.warning("re-exporting: %s", exc)
    log.info("exporting %s to ONNX (once; cached in %s)", spec.source or spec.kind, folder)
    write_export(spec, path)
    for old in folder.glob(f"{spec.name}-*.onnx"):
        if old != path:
            old.unlink(missing_ok=True)
            sidecar_path(old).unlink(missing_ok=True)
    return OnnxModel(path, threads)


class EngineRunner:
    """A predictor's choice of engine: ``pick(module, output)`` gives the torch ``module`` itself,
    or with ``engine="onnx"`` that output of the model's cached ONNX export (exported on first
    use from ``spec()``, into ``folder``), ready for :func:`~anivision.embeddings.forward_batches`.

    Args:
        engine: ``torch`` or ``onnx``.
        spec: builds the :class:`ExportSpec` (called only when an export is needed).
        folder: the export cache (``RUN/onnx``).
        threads: ONNX Runtime intra-op threads (default ``torch.get_num_threads()``).
    """

    def __init__(self, engine: str, spec: Callable[[], ExportSpec], folder: str | Path, threads: int | None = None) -> None:
        self.engine = check_engine(engine)
        self.spec = spec
        self.folder = Path(folder)
        self.threads = threads
        self._model: OnnxModel | None = None

    def __repr__(self) -> str:
        return f"EngineRunner({self.engine!r})"

    def onnx_model(self) -> OnnxModel:
        """The cached export (made now if needed)."""
        if self._model is None:
            self._model = cached_model(self.spec(), self.folder, self.threads)
        return self._model

    def pick(self, module: nn.Module, output: str) -> nn.Module | OnnxOutput:
        return module if self.engine == "torch" else self.onnx_model().output(output)
