"""Export a torch module to ONNX (dynamic batch axis) and run it with ONNX Runtime.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript), with
``external_data=False`` so the graph and its weights are one self-contained ``.onnx`` file (the
models here are far below protobuf's 2 GB limit). The TorchScript exporter (``dynamo=False``) is
deprecated since torch 2.9 and will be removed; it exports in a second where the dynamo
exporter takes tens of seconds, but an export is made once per run and cached (see
docs/ARCHITECTURE.md, "Why the hand-written parts stay").

Sessions run on the CPU execution provider with ``intra_op`` threads = ``torch.get_num_threads()``
(or the count given), one ``inter_op`` thread, sequential execution and every graph
optimisation: the settings that give the throughput on a CPU for one batch at a time.
"""

from __future__ import annotations

import contextlib
import copy
import io
import logging
import os
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from anivision.deploy.sidecar import INPUT_NAME, read_sidecar
from anivision.errors import AnivisionError
from anivision.extras import require
from anivision.models.classifier import Classifier
from anivision.progress import progress_bar

log = logging.getLogger(__name__)

#: The inference engines every predictor accepts.
ENGINES = ("torch", "onnx")
#: The opset exported when none is asked for (the dynamo exporter's own default in torch 2.9+).
DEFAULT_OPSET = 18
#: Loggers of the exporter and the quantizer, whose INFO notes (passes applied, nodes removed) are not the user's business.
QUIET_LOGGERS = ("onnxscript", "onnx_ir", "torch.onnx", "torch.export", "torch._dynamo", "onnxruntime")


@contextlib.contextmanager
def quiet_exporter() -> Iterator[None]:
    """Silence the exporter's and quantizer's notes (stdout, warnings, INFO logs) while inside."""
    loggers = [logging.getLogger(n) for n in QUIET_LOGGERS] + [logging.getLogger()]  # the quantizer logs to the root logger
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.WARNING)
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def check_engine(engine: str) -> str:
    """``engine`` if it is one of :data:`ENGINES`.

    Raises:
        AnivisionError: another name.
    """
    if engine not in ENGINES:
        raise AnivisionError(f"--engine {engine!r}: choose one of {', '.join(ENGINES)}")
    return engine


class ClassifierOutputs(nn.Module):
    """A :class:`Classifier` with two outputs: ``(logits (B, C), embeddings (B, D))``."""

    def __init__(self, model: Classifier) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        feats = self.model.backbone(x)
        return self.model.head(feats), feats


def export_module(module: nn.Module, path: str | Path, img_size: int, output_names: list[str], opset: int | None = None) -> None:
    """Write ``module`` as ONNX to ``path`` (atomically: a temporary file beside it, then a rename).

    Args:
        module: maps a float32 (B, 3, img_size, img_size) batch to one tensor or a tuple of them.
        path: the ``.onnx`` file.
        img_size: the square input side.
        output_names: one name per output, in order.
        opset: the ONNX opset (default :data:`DEFAULT_OPSET`).

    Raises:
        AnivisionError: the export extra is missing, the model cannot be exported, or ``path``
            cannot be written.
    """
    require("onnxscript", "export", "ONNX export")
    onnx = require("onnx", "export", "ONNX export")
    path = Path(path)
    # A CPU float32 copy in eval mode: the caller's module (maybe on CUDA, channels-last) is left as it is.
    m = copy.deepcopy(module).cpu().float().eval().to(memory_format=torch.contiguous_format)
    x = torch.zeros(2, 3, img_size, img_size)  # batch 2: a batch of 1 would be specialised away
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with quiet_exporter():
            torch.onnx.export(
                m, (x,), str(tmp), dynamo=True, external_data=False, opset_version=opset or DEFAULT_OPSET, verbose=False,
                input_names=[INPUT_NAME], output_names=list(output_names),
                dynamic_shapes=({0: torch.export.Dim("batch", min=1, max=65536)},),
            )
        onnx.checker.check_model(str(tmp))
        os.replace(tmp, path)
    except OSError as exc:
        raise AnivisionError(f"{path}: cannot write the ONNX file ({exc.strerror or exc})") from exc
    except AnivisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch.export/onnxscript raise many types; one line for the user
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise AnivisionError(f"{path}: ONNX export failed ({type(exc).__name__}: {first[:300]}); try another --opset") from exc
    finally:
        tmp.unlink(missing_ok=True)


def session_options(threads: int | None = None) -> Any:
    """ONNX Runtime options: ``threads`` (default ``torch.get_num_threads()``) intra-op threads,
    one inter-op thread, sequential execution, every graph optimisation."""
    ort = require("onnxruntime", "export", "ONNX Runtime inference")
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or torch.get_num_threads())
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # errors only: ORT's warnings about unused initialisers are noise here
    return so


class OnnxModel:
    """An exported model and its sidecar, run with ONNX Runtime on a float32 NCHW batch.

    Attributes:
        path: the ``.onnx`` file.
        meta: its sidecar (:func:`~anivision.deploy.sidecar.read_sidecar`).
        outputs: output names, in order.
    """

    def __init__(self, path: str | Path, threads: int | None = None) -> None:
        ort = require("onnxruntime", "export", "ONNX Runtime inference")
        self.path = Path(path)
        if not self.path.is_file():
            raise AnivisionError(f"{self.path}: no such ONNX file")
        self.meta = read_sidecar(self.path)
        try:
            self.session = ort.InferenceSession(str(self.path), session_options(threads), providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own Fail/InvalidProtobuf types
            raise AnivisionError(f"{self.path}: not a readable ONNX model ({str(exc).strip().splitlines()[0][:200]})") from exc
        self.outputs = [o.name for o in self.session.get_outputs()]
        self.img_size = int(self.meta["input_size"])

    def __repr__(self) -> str:
        return f"OnnxModel({str(self.path)!r}, kind={self.meta.get('kind')!r}, outputs={self.outputs})"

    def run(self, x: np.ndarray | torch.Tensor) -> dict[str, np.ndarray]:
        """Every output for a (B, 3, S, S) float32 batch, by name.

        Raises:
            AnivisionError: a batch of another shape.
        """
        arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
        want = (3, self.img_size, self.img_size)
        if arr.ndim != 4 or tuple(arr.shape[1:]) != want:
            raise AnivisionError(f"{self.path.name}: expected a (batch, {', '.join(map(str, want))}) float32 batch, got shape {tuple(arr.shape)}")
        outs = self.session.run(self.outputs, {INPUT_NAME: np.ascontiguousarray(arr, dtype=np.float32)})
        return dict(zip(self.outputs, outs))

    def output(self, name: str) -> "OnnxOutput":
        """One named output as a callable batch -> array (what :func:`~anivision.embeddings.forward_batches` runs)."""
        if name not in self.outputs:
            raise AnivisionError(f"{self.path.name}: no output {name!r} (outputs: {', '.join(self.outputs)})")
        return OnnxOutput(self, name)


class OnnxOutput:
    """One output of an :class:`OnnxModel`: ``(B, 3, S, S) -> (B, ...)`` numpy, and ``num_features``."""

    def __init__(self, model: OnnxModel, name: str) -> None:
        self.model = model
        self.name = name
        self.num_features = int(model.meta.get("output_dims", {}).get(name, 0))

    def __call__(self, x: np.ndarray | torch.Tensor) -> np.ndarray:
        return self.model.run(x)[self.name]

    def eval(self) -> "OnnxOutput":
        """Nothing to switch (the torch idiom, so code that calls ``model.eval()`` runs either engine)."""
        return self

    def forward_dataset(self, dataset: Dataset, batch_size: int = 64, desc: str = "predict", progress: bool = False) -> np.ndarray:
        """This output over every item ``(x, ...)`` of ``dataset``, batched: (len(dataset), ...) float32."""
        loader: Iterable[Any] = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0)
        outs = [self(batch[0]) for batch in progress_bar(loader, progress, desc=f"{desc} (onnx)", leave=False)]
        if not outs:
            return np.zeros((0, self.num_features), np.float32)
        return np.concatenate(outs).astype(np.float32, copy=False)
