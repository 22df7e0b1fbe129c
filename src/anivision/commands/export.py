"""``anivision export``: a run or gallery as an ONNX file with its preprocessing recorded beside it."""

from __future__ import annotations

import argparse
import json

from anivision.api import export
from anivision.api.onnx_export import DEFAULT_CALIBRATION
from anivision.commands import add_shared
from anivision.deploy import DEFAULT_OPSET, sidecar_path


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``export``."""
    p = subparsers.add_parser(
        "export", help="export a run or gallery to ONNX (dynamic batch), with a JSON sidecar of its preprocessing",
        description="Export a classification run (logits + embeddings), a few-shot run or gallery (embeddings; a gallery's "
        "prototypes, classes and threshold in the sidecar) or a retrieval run (embeddings of one fold) to ONNX.",
    )
    p.add_argument("run_dir", metavar="RUN", help="a run folder or gallery folder")
    add_shared(p, "--out", "the .onnx file; its sidecar is the same name with .json",
               default_text="RUN/export/model.onnx, model-int8.onnx with --int8, fold<k>.onnx for a retrieval run", metavar="FILE")
    p.add_argument("--int8", action="store_true",
                   help="quantize to INT8: static (calibrated) for convolutional networks, dynamic for transformers")
    p.add_argument("--opset", type=int, help=f"ONNX opset (default: {DEFAULT_OPSET})")
    p.add_argument("--calibration", type=int, default=DEFAULT_CALIBRATION, metavar="N",
                   help="with --int8 (static): this many images drawn from the run's training split calibrate the activations")
    p.add_argument("--fold", type=int, help="a retrieval run's fold (default: the trained fold with the best test mAP)")
    p.set_defaults(func=cmd_export)


def cmd_export(args: argparse.Namespace) -> int:
    path = export(args.run_dir, out=args.out, int8=args.int8, opset=args.opset, calibration=args.calibration, fold=args.fold)
    meta = json.loads(sidecar_path(path).read_text())
    how = meta.get("int8", {}).get("mode", "")
    print(f"{meta['kind']} -> {path} ({meta['precision']}{' ' + how if how else ''}; outputs {', '.join(meta['outputs'])}); "
          f"preprocessing and classes: {sidecar_path(path)}")
    return 0
