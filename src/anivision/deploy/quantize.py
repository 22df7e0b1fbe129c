"""INT8 models with ONNX Runtime's quantization tools.

Two modes, chosen per model from its layers (:func:`int8_mode`):

- **static** (QDQ, per-channel 7-bit-range int8 weights, uint8 activations, MinMax calibration) for
  convolutional networks: a convolution's activations need fixed scales, measured once on
  calibration images drawn from the run's training split (:class:`BatchReader`), so that the
  CPU runs integer convolutions end to end. Dynamic quantization would leave convolutions in
  float (or use the slow ``ConvInteger``).
- **dynamic** (int8 weights of ``MatMul``/``Gemm``, activation scales per batch at run time) for
  transformers: a ViT's time is in its matrix products, and its activations (after LayerNorm,
  GELU and softmax) have outliers that one calibrated scale clips badly; no calibration set needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from torch import nn
from torch.utils.data import DataLoader, Dataset

from anivision.deploy.runtime import quiet_exporter
from anivision.deploy.sidecar import INPUT_NAME
from anivision.errors import AnivisionError
from anivision.extras import require

log = logging.getLogger(__name__)

INT8_MODES = ("static", "dynamic")


def int8_mode(module: nn.Module) -> str:
    """``static`` for a network made mostly of convolutions, ``dynamic`` for one made mostly of linear layers."""
    convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
    linears = sum(isinstance(m, nn.Linear) for m in module.modules())
    return "static" if convs >= linears else "dynamic"


def batch_reader(dataset: Dataset, batch_size: int = 16) -> Any:
    """A ``CalibrationDataReader`` over ``dataset`` (items ``(x, ...)``, already normalised), in batches."""
    quant = require("onnxruntime.quantization", "export", "INT8 quantization")

    class BatchReader(quant.CalibrationDataReader):  # type: ignore[misc,name-defined]
        """Feeds ``{"image": (B, 3, S, S) float32}`` batches to the calibrator, then None."""

        def __init__(self) -> None:
            self.batches: Iterator[Any] = iter(DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=0))

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self.batches, None)
            return None if batch is None else {INPUT_NAME: batch[0].numpy().astype(np.float32)}

    return BatchReader()


def quantize_int8(fp32_path: str | Path, out_path: str | Path, mode: str, calibration: Dataset | None = None) -> dict[str, Any]:
    """Write an INT8 copy of ``fp32_path`` to ``out_path``.

    Args:
        mode: ``static`` (needs ``calibration``) or ``dynamic``.
        calibration: normalised images for the static activation ranges.

    Returns:
        What the sidecar records: mode, formats, calibration size.

    Raises:
        AnivisionError: static without calibration images, or the quantizer failed.
    """
    quant = require("onnxruntime.quantization", "export", "INT8 quantization")
    if mode not in INT8_MODES:
        raise AnivisionError(f"INT8 mode {mode!r}: choose one of {', '.join(INT8_MODES)}")
    try:
        with quiet_exporter():
            return _quantize(quant, Path(fp32_path), Path(out_path), mode, calibration)
    except AnivisionError:
        raise
    except Exception as exc:  # noqa: BLE001 - the quantizer raises many types; one line for the user
        raise AnivisionError(f"{fp32_path}: INT8 quantization ({mode}) failed: {type(exc).__name__}: {str(exc).strip()[:300]}") from exc


def _quantize(quant: Any, fp32_path: Path, out_path: Path, mode: str, calibration: Dataset | None) -> dict[str, Any]:
    """Run the quantizer of ``mode`` (see :func:`quantize_int8`)."""
    if mode == "dynamic":
        quant.quantize_dynamic(str(fp32_path), str(out_path), op_types_to_quantize=["MatMul", "Gemm"], per_channel=False, weight_type=quant.QuantType.QInt8)
        return {"mode": "dynamic", "ops": ["MatMul", "Gemm"], "weights": "int8", "activations": "uint8, scale per batch"}
    if calibration is None or len(calibration) == 0:  # type: ignore[arg-type]
        raise AnivisionError("static INT8 needs calibration images (the run's training images), and none is readable")
    pre = Path(str(out_path) + ".pre.onnx")
    try:
        try:
            quant.quant_pre_process(str(fp32_path), str(pre), skip_symbolic_shape=True)
            src = pre
        except Exception as exc:  # noqa: BLE001 - pre-processing only helps; quantize the graph as it is
            log.info("quantization pre-processing skipped: %s", exc)
            src = Path(fp32_path)
        quant.quantize_static(
            str(src), str(out_path), batch_reader(calibration), quant_format=quant.QuantFormat.QDQ, per_channel=True,
            # 7-bit weights: CPUs without VNNI (AVX2) saturate in u8s8 products; measured on Lite0: top-1 agreement 53% -> 78%.
            reduce_range=True,
            activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8,
            calibrate_method=quant.CalibrationMethod.MinMax,
        )
    finally:
        pre.unlink(missing_ok=True)
    return {"mode": "static", "format": "QDQ", "weights": "int8 per channel, reduce_range (7-bit)", "activations": "uint8", "calibration": "MinMax",
            "calibration_images": len(calibration)}  # type: ignore[arg-type]
