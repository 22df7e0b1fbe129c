"""ONNX Runtime against torch eager: speed, parity, INT8 accuracy, and ``predict`` end to end.

Needs two classification runs on ../shared/data/characters (the run folders outside ../shared):
  anivision train --data ../shared/data/characters --strategy linear_probe --epochs 3 --out /tmp/onnxbench/cnn
  python benchmarks/characters_subset.py ../shared/data/characters 25 /tmp/onnxbench/chars25.csv   # no offline ViT weights:
  anivision train --data /tmp/onnxbench/chars25.csv --backbone vit_tiny_patch16_224 --weights none \
      --img-size 128 --strategy linear_probe --epochs 3 --out /tmp/onnxbench/vit

Then:
  python benchmarks/onnx_speed.py speed   --run /tmp/onnxbench/cnn            # 1 thread, batch 64, 128 px; batch-1 latency
  python benchmarks/onnx_speed.py parity  --run /tmp/onnxbench/cnn --run /tmp/onnxbench/vit   # 200 images of each run
  python benchmarks/onnx_speed.py int8    --run /tmp/onnxbench/cnn --unseen 1000   # test accuracy fp32 vs INT8, top-1 agreement
  python benchmarks/onnx_speed.py int8-variants --run /tmp/onnxbench/cnn --unseen 1000   # static INT8 options compared
  python benchmarks/onnx_speed.py predict --run /tmp/onnxbench/cnn --images ../shared/data/characters --n 5000 --work /tmp/onnxbench

Every contender runs in the same process, alternating round by round, so a machine shared with
other work slows all of them alike; the medians over rounds are printed with their ratios.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import anivision as av
from anivision.data.cache import decode_images
from anivision.data.datasets import CachedImageDataset
from anivision.data.splits import read_split, split_indices
from anivision.data.transforms import cache_size, eval_transform
from anivision.deploy import OnnxModel
from anivision.embeddings import embed_inputs


def test_images(run: Path, n: int | None = None, part: str = "test") -> tuple[list[str], np.ndarray]:
    """The run's ``part`` split (``all``: every image; a seeded pick of ``n`` when given): paths and labels."""
    split = read_split(run / "split.csv", verify=False)
    idx = list(range(len(split.paths))) if part == "all" else split_indices(split.splits or [])[part]
    if n is not None and len(idx) > n:
        idx = sorted(np.random.default_rng(0).choice(idx, size=n, replace=False).tolist())
    return [split.paths[i] for i in idx], np.asarray([split.labels[i] for i in idx])


def batch_of(clf: av.ImageClassifier, paths: list[str]) -> torch.Tensor:
    """Decoded, normalised images as one (N, 3, S, S) float32 tensor."""
    dec = decode_images(paths, cache_size(clf.data_config), cache_dir=None, progress=False)
    ds = CachedImageDataset(dec, np.flatnonzero(dec.valid), None, eval_transform(clf.data_config))
    return torch.stack([ds[i][0] for i in range(len(ds))])


def exports(run: Path) -> tuple[Path, Path]:
    """fp32 and INT8 exports of ``run`` (made once, reused)."""
    fp32, int8 = run / "export" / "model.onnx", run / "export" / "model-int8.onnx"
    for path, q in ((fp32, False), (int8, True)):
        if not path.exists():
            t0 = time.perf_counter()
            av.export(run, out=path, int8=q)
            print(f"exported {path} in {time.perf_counter() - t0:.1f} s")
    return fp32, int8


def bare_lite0(work: Path, images: str, n_calib: int = 64) -> tuple[torch.nn.Module, Path, Path, torch.Tensor]:
    """Without a finished run: Lite0 with its offline ImageNet weights and a 16-class head, exported
    (fp32, and INT8 calibrated on ``n_calib`` real images), and a batch of real images."""
    from anivision.data.folder import scan_class_folders
    from anivision.deploy import ClassifierOutputs, ExportSpec, write_export
    from anivision.embeddings import model_fingerprint
    from anivision.models.backbone import create_backbone, data_config
    from anivision.models.classifier import Classifier

    torch.manual_seed(0)
    backbone = create_backbone("tf_efficientnet_lite0", "efficientnet_lite0_imagenet", img_size=128)
    dcfg = data_config(backbone, 128)
    model = Classifier(backbone, 16).eval()
    paths = scan_class_folders(images).paths[::37]
    dec = decode_images(paths, cache_size(dcfg), cache_dir=None, progress=False)
    ds = CachedImageDataset(dec, np.flatnonzero(dec.valid), None, eval_transform(dcfg))
    spec = ExportSpec(ClassifierOutputs(model), "classifier", dcfg, ["logits", "embeddings"], model_fingerprint(model), "bare lite0")
    fp32, int8 = work / "lite0" / "model.onnx", work / "lite0" / "model-int8.onnx"
    if not fp32.exists():
        write_export(spec, fp32)
    if not int8.exists():
        calib = torch.utils.data.Subset(ds, range(n_calib))
        write_export(spec, int8, int8=True, calibration=lambda: calib)
    return model, fp32, int8, torch.stack([ds[i][0] for i in range(n_calib, len(ds))])


def cmd_speed(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    run = Path(args.run[0])
    if (run / "model.safetensors").exists():
        clf = av.load(run)
        model = clf.model.float().eval()
        fp32, int8 = exports(run)
        x = batch_of(clf, test_images(run, args.batch)[0])
    else:
        print(f"{run}: no trained run; Lite0 (offline ImageNet weights) with an untrained 16-class head")
        model, fp32, int8, x = bare_lite0(Path(args.work), args.images)
        x = x[: args.batch]
    sessions = {"onnx fp32": OnnxModel(fp32, threads=1), "onnx int8": OnnxModel(int8, threads=1)}
    assert x.shape == (args.batch, 3, 128, 128), x.shape
    xn = x.numpy()
    contenders = {
        "torch eager": lambda: model(x),
        "torch eager channels_last": lambda: model(x.contiguous(memory_format=torch.channels_last)),
        "onnx fp32": lambda: sessions["onnx fp32"].run(xn),
        "onnx int8": lambda: sessions["onnx int8"].run(xn),
    }
    times: dict[str, list[float]] = {k: [] for k in contenders}
    with torch.inference_mode():
        for f in contenders.values():
            f()  # warm-up
        for _ in range(args.rounds):
            for name, f in contenders.items():
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    eager = args.batch / np.median(times["torch eager"])
    print(f"1 thread, batch {args.batch}, 128 px, {args.rounds} alternating rounds (median):")
    for name, ts in times.items():
        ips = args.batch / np.median(ts)
        print(f"  {name:28s} {ips:7.1f} img/s  {ips / eager:4.2f}x eager")
    one = sessions["onnx fp32"]
    lat = []
    for i in range(args.latency_n + 3):
        t0 = time.perf_counter()
        one.run(xn[i % len(xn): i % len(xn) + 1])
        lat.append(time.perf_counter() - t0)
    lat_ms = 1000 * np.asarray(lat[3:])
    print(f"  batch-1 latency, onnx fp32: median {np.median(lat_ms):.2f} ms, p90 {np.percentile(lat_ms, 90):.2f} ms ({args.latency_n} runs)")


def cmd_parity(args: argparse.Namespace) -> None:
    for run in map(Path, args.run):
        clf, ox = av.load(run), av.load(run, engine="onnx")
        paths = test_images(run, 200, "all")[0]  # 200 real images (a small run's test split has fewer)
        a, b = clf.outputs(paths, "logits").values, ox.outputs(paths, "logits").values
        fa, fb = clf.outputs(paths, "features").values, ox.outputs(paths, "features").values
        print(f"{run.name} ({clf.config.backbone}): {len(a)} images, max |logit diff| {np.abs(a - b).max():.2e}, "
              f"max |embedding diff| {np.abs(fa - fb).max():.2e}, identical top-1: {bool((a.argmax(1) == b.argmax(1)).all())}")


def cmd_int8(args: argparse.Namespace) -> None:
    run = Path(args.run[0])
    clf = av.load(run)
    _, int8 = exports(run)
    meta = json.loads(int8.with_suffix(".json").read_text())
    paths, labels = test_images(run)
    print(f"{run.name}: INT8 {meta['int8']}")
    sets = [("test images", paths, labels)]
    if args.unseen:
        sets.append((f"test + {args.unseen} unseen images", *unseen_images(run, clf.classes, args.images, args.unseen, paths, labels)))
    for what, p, y in sets:
        fp = clf.outputs(p, "logits", batch_size=64).values
        q = embed_inputs(OnnxModel(int8).output("logits"), p, clf.data_config).values
        acc_fp, acc_q = (fp.argmax(1) == y).mean(), (q.argmax(1) == y).mean()
        print(f"  {what} ({len(y)}): accuracy fp32 (torch) {100 * acc_fp:.2f}%, INT8 (onnx) {100 * acc_q:.2f}% "
              f"({100 * (acc_q - acc_fp):+.2f} pt); top-1 agreement {100 * (fp.argmax(1) == q.argmax(1)).mean():.2f}%")


def unseen_images(run: Path, classes: list[str], images: str, n: int, paths: list[str], labels: np.ndarray) -> tuple[list[str], np.ndarray]:
    """The run's test images plus a seeded pick of ``n`` images of the ``images`` class folders that the
    run's split does not list (a run trained on a subset never saw them)."""
    from anivision.data.folder import scan_class_folders

    listed = {str(Path(p).resolve()) for p in read_split(run / "split.csv", verify=False).paths}
    found = scan_class_folders(images)
    rest = [(p, classes.index(found.classes[y])) for p, y in zip(found.paths, found.labels) if str(Path(p).resolve()) not in listed]
    pick = sorted(np.random.default_rng(1).choice(len(rest), size=min(n, len(rest)), replace=False).tolist())
    return list(paths) + [rest[i][0] for i in pick], np.concatenate([labels, np.asarray([rest[i][1] for i in pick], dtype=labels.dtype)])


#: Static INT8 variants compared by ``int8-variants``: quantize_static options (QDQ, per-channel, uint8 activations throughout).
#: ``dw8``: depthwise weights keep 8 bits; ``keep``: layers left in float32; ``default``: what ``anivision export --int8`` does.
VARIANTS = {
    "8-bit weights everywhere": {"reduce_range": False},
    "7-bit weights everywhere (reduce_range; the previous default)": {},
    "7-bit, depthwise 8-bit": {"dw8": True},
    "7-bit, depthwise 8-bit, Percentile calibration": {"dw8": True, "calibrate_method": "Percentile"},
    "7-bit, depthwise 8-bit, stem and head in float32 (default)": {"dw8": True, "keep": ("stem", "head")},
    "7-bit, depthwise convolutions in float32": {"keep": ("depthwise",)},
    "U8U8 (uint8 weights, 8-bit)": {"reduce_range": False, "weight_type": "QUInt8"},
}


def quantize_variant(src: Path, out: Path, calib: torch.utils.data.Dataset, reduce_range: bool = True, dw8: bool = False,
                     keep: tuple[str, ...] = (), calibrate_method: str = "MinMax", weight_type: str = "QInt8") -> None:
    """``src`` (an fp32 export, already through quant_pre_process) quantized with one :data:`VARIANTS` entry."""
    import onnx
    from onnxruntime import quantization as oq

    from anivision.deploy.quantize import batch_reader, depthwise_weights

    graph = onnx.load(str(src)).graph
    convs = [n for n in graph.node if n.op_type == "Conv"]
    dw = set(depthwise_weights(src))
    names = {"stem": [convs[0].name], "head": [convs[-1].name] + [n.name for n in graph.node if n.op_type == "Gemm"],
             "depthwise": [n.name for n in convs if n.input[1] in dw]}
    excluded = [x for k in keep for x in names[k]]
    after = {n.input[0]: n.name for n in graph.node if n.op_type == "Clip"}  # a float conv keeps its ReLU6 in float too
    excluded += [after[o] for n in graph.node if n.name in excluded for o in n.output if o in after]
    extra = {"TensorQuantOverrides": {w: [{"axis": 0, "reduce_range": False}] for w in dw}} if dw8 else {}
    # equal batches: the histogram calibrators cannot stack a shorter last batch
    oq.quantize_static(str(src), str(out), batch_reader(calib, math.gcd(len(calib), 16)), quant_format=oq.QuantFormat.QDQ, per_channel=True, reduce_range=reduce_range,
                       activation_type=oq.QuantType.QUInt8, weight_type=getattr(oq.QuantType, weight_type),
                       calibrate_method=getattr(oq.CalibrationMethod, calibrate_method), nodes_to_exclude=excluded, extra_options=extra)


def cmd_int8_variants(args: argparse.Namespace) -> None:
    """Each of :data:`VARIANTS` on one run: top-1 agreement with torch fp32 and accuracy on the test split plus
    ``--unseen`` images, then speed at 1 thread, batch 64, every variant alternating with torch eager and ONNX fp32."""
    import shutil

    from onnxruntime.quantization import quant_pre_process

    from anivision.api.onnx_export import calibration_set
    from anivision.deploy import sidecar_path

    run, work = Path(args.run[0]), Path(args.work) / "int8-variants"
    work.mkdir(parents=True, exist_ok=True)
    clf = av.load(run)
    fp32, _ = exports(run)
    pre = work / "pre.onnx"
    quant_pre_process(str(fp32), str(pre), skip_symbolic_shape=True)
    calib = calibration_set(clf, clf.data_config, args.calibration)
    paths, labels = test_images(run)
    paths, labels = unseen_images(run, clf.classes, args.images, args.unseen, paths, labels)
    x = batch_of(clf, paths)
    model = clf.model.float().eval()
    with torch.inference_mode():
        fp = torch.cat([model(x[i:i + 64]) for i in range(0, len(x), 64)]).numpy()
    n_test = len(test_images(run)[1])
    print(f"{run.name}: {len(labels)} images ({n_test} test + {len(labels) - n_test} unseen), {len(calib)} calibration images; "
          f"fp32 (torch) accuracy {100 * (fp.argmax(1) == labels).mean():.2f}% (test split {100 * (fp[:n_test].argmax(1) == labels[:n_test]).mean():.2f}%)")
    sessions = {"onnx fp32": OnnxModel(fp32, threads=1)}
    for i, (name, opts) in enumerate(VARIANTS.items()):
        out = work / f"v{i}.onnx"
        quantize_variant(pre, out, calib, **opts)
        shutil.copy(sidecar_path(fp32), sidecar_path(out))
        q = OnnxModel(out, threads=2)
        ql = np.concatenate([q.run(x[j:j + 64].numpy())["logits"] for j in range(0, len(x), 64)])
        agree, acc = ql.argmax(1) == fp.argmax(1), ql.argmax(1) == labels
        print(f"  {name}: agreement {100 * agree.mean():.2f}% (test split {100 * agree[:n_test].mean():.2f}%), accuracy {100 * acc.mean():.2f}% "
              f"({100 * (acc.mean() - (fp.argmax(1) == labels).mean()):+.2f} pt; test split {100 * acc[:n_test].mean():.2f}%)", flush=True)
        sessions[name] = OnnxModel(out, threads=1)
    torch.set_num_threads(1)
    xb = x[:64].contiguous()
    xn = xb.numpy()
    contenders = {"torch eager": lambda: model(xb)} | {k: (lambda s=s: s.run(xn)) for k, s in sessions.items()}
    times: dict[str, list[float]] = {k: [] for k in contenders}
    with torch.inference_mode():
        for f in contenders.values():
            f()
        for _ in range(args.rounds):
            for name, f in contenders.items():
                t0 = time.perf_counter()
                f()
                times[name].append(time.perf_counter() - t0)
    eager = 64 / np.median(times["torch eager"])
    print(f"1 thread, batch 64, {args.rounds} alternating rounds (median):")
    for name, ts in times.items():
        print(f"  {name:60s} {64 / np.median(ts):7.1f} img/s  {64 / np.median(ts) / eager:4.2f}x eager")


def cmd_predict(args: argparse.Namespace) -> None:
    run, work = Path(args.run[0]), Path(args.work)
    folder = work / f"predict{args.n}"
    if not folder.exists():  # symbolic links to the first N images: nothing copied
        src = sorted(p for p in Path(args.images).rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
        folder.mkdir(parents=True)
        for i, p in enumerate(src):
            (folder / f"{i:05d}{p.suffix}").symlink_to(p.resolve())
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    cmd = [sys.executable, "-m", "anivision.cli", "-q", "predict", str(run), str(folder)]
    if args.cold:  # the first --engine onnx call exports the run into RUN/onnx (once); time it apart
        t0 = time.perf_counter()
        subprocess.run([*cmd, "--engine", "onnx", "--out", str(work / "warm.csv")], check=True, env=env)
        print(f"cold onnx predict (export included if not cached): {time.perf_counter() - t0:.1f} s")
    times: dict[str, list[float]] = {"torch": [], "onnx": []}
    for _ in range(args.rounds):
        for engine in times:
            t0 = time.perf_counter()
            subprocess.run([*cmd, "--engine", engine, "--out", str(work / f"{engine}.csv")], check=True, env=env)
            times[engine].append(time.perf_counter() - t0)
    t, o = np.median(times["torch"]), np.median(times["onnx"])
    same = sum(a.split(",")[1] == b.split(",")[1] for a, b in zip(open(work / "torch.csv"), open(work / "onnx.csv")))
    print(f"predict on {args.n} images, {args.threads} thread(s), decode included, {args.rounds} alternating rounds (median): "
          f"torch {t:.1f} s ({args.n / t:.1f} img/s), onnx {o:.1f} s ({args.n / o:.1f} img/s): {t / o:.2f}x; "
          f"same top-1 on {same - 1}/{args.n}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("what", choices=("speed", "parity", "int8", "int8-variants", "predict"))
    p.add_argument("--run", action="append", required=True, help="classification run folder (repeat for parity)")
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--latency-n", type=int, default=50)
    p.add_argument("--images", default="../shared/data/characters")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--calibration", type=int, default=200, help="int8-variants: calibration images from the training split")
    p.add_argument("--unseen", type=int, default=0, help="int8: also score the test split plus N images the run's split does not list")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", default="/tmp/onnxbench")
    p.add_argument("--cold", action="store_true", help="predict: time a first --engine onnx call apart (the export, if not cached)")
    args = p.parse_args()
    {"speed": cmd_speed, "parity": cmd_parity, "int8": cmd_int8, "int8-variants": cmd_int8_variants, "predict": cmd_predict}[args.what](args)


if __name__ == "__main__":
    main()
