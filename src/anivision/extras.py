"""Optional extras: import a heavy optional library or say, in one line, what to install.

The core install stays lean; ONNX export and inference (``[export]``), FAISS galleries
(``[index]``), the web app (``[web]``) and Grad-CAM explanations (``[explain]``) each live in an
extra. ``require("onnxruntime", "export")`` returns the module, or raises an
:class:`AnivisionError` such as ``onnxruntime is not installed: pip install "anivision[export]"``.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from anivision.errors import AnivisionError


def require(module: str, extra: str, feature: str = "") -> ModuleType:
    """Import ``module`` (e.g. ``"faiss"``) or raise a one-line error naming the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        what = f" (needed for {feature})" if feature else ""
        raise AnivisionError(
            f"{module.split('.')[0]} is not installed{what}: pip install \"anivision[{extra}]\" "
            f"(from a checkout: pip install -e \".[{extra}]\"); import failed with: {exc}"
        ) from exc
