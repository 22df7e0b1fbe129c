"""Deployment: ONNX export, ONNX Runtime inference and INT8 quantization.

- :mod:`.runtime`: :func:`export_module` (the dynamo exporter, dynamic batch axis), :class:`OnnxModel`
  (an ONNX Runtime session with the right CPU thread settings; a float32 NCHW batch in, numpy out);
- :mod:`.quantize`: static QDQ (convolutional networks, calibrated on training images) or
  dynamic (transformers) INT8;
- :mod:`.sidecar`: the JSON beside every ``.onnx`` (preprocessing, classes, outputs, source run);
- :mod:`.store`: :class:`ExportSpec`, atomic :func:`write_export`, and :func:`cached_model`, the
  per-run export cache behind ``--engine onnx``.

Needs the ``[export]`` extra (onnx, onnxruntime, onnxscript); without it each call raises a
one-line error naming the extra.
"""

from anivision.deploy.runtime import DEFAULT_OPSET, ENGINES, ClassifierOutputs, OnnxModel, OnnxOutput, check_engine, export_module, session_options
from anivision.deploy.quantize import INT8_MODES, int8_mode, quantize_int8
from anivision.deploy.sidecar import INPUT_NAME, data_config_of, read_sidecar, sidecar_path
from anivision.deploy.store import EngineRunner, ExportSpec, cached_model, output_dims, write_export

__all__ = [
    "DEFAULT_OPSET", "ENGINES", "INPUT_NAME", "INT8_MODES", "ClassifierOutputs", "EngineRunner", "ExportSpec", "OnnxModel", "OnnxOutput",
    "cached_model", "check_engine", "data_config_of", "export_module", "int8_mode", "output_dims", "quantize_int8",
    "read_sidecar", "session_options", "sidecar_path", "write_export",
]
