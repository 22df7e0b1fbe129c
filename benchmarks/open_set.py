"""Benchmark: open-set identification (enrol some characters, are the others called "unknown"?).

Protocol on ``shared/data/characters`` (16 characters): each trial picks, with its own seed, 4
characters to hold out as *unknown* and enrols the other 12 from K = 5 random images each;
every other sampled image of the 12 is a *known* query, every sampled image of the 4 an
*unknown* query. A query is accepted when its nearest prototype is within the gallery's
threshold; a known query counts as right when it is accepted *and* named correctly.

The enrolment and the threshold are the library's own (:func:`l2_normalise`,
:func:`calibrate_threshold`, the same calls ``anivision enroll`` makes); the embeddings are
computed once (:func:`anivision.embeddings.embed_paths`, cached) and every trial and
operating point reuses them. For comparison, the rule of galleries before normalisation
("raw": unnormalised embeddings, 95th percentile of leave-one-out distances) runs on the same
trials.

Run from the repository root::

    python benchmarks/open_set.py                       # ImageNet tf_efficientnet_lite0
    python benchmarks/open_set.py --run RUN             # a meta-trained few-shot run

It prints a Markdown table (mean ± sd over trials) and writes it with the per-trial figures to
``--out`` (``.md`` and ``.json``).
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch

from anivision.data.cache import default_cache_dir
from anivision.data.folder import scan_class_folders
from anivision.embeddings import embed_paths
from anivision.models.protonet import PrototypicalNetwork
from anivision.tasks.fewshot import backbone_spec, build_backbone, calibrate_threshold, l2_normalise

ROOT = Path(__file__).resolve().parents[1]


def sample_pool(labels: np.ndarray, per_class: int | None, seed: int) -> np.ndarray:
    """At most ``per_class`` seeded-random image indices per class (all when None), sorted."""
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        keep.append(idx if per_class is None or len(idx) <= per_class else rng.choice(idx, per_class, replace=False))
    return np.sort(np.concatenate(keep))


def trial_split(labels: np.ndarray, n_classes: int, n_unknown: int, k_shot: int, seed: int, candidates: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(known classes, enrolment rows, known query rows, unknown query rows) of one trial.

    ``candidates``: the classes the unknown ones are drawn from (default: all).
    """
    rng = np.random.default_rng(10_000 + seed)
    pool = np.arange(n_classes) if candidates is None else np.asarray(candidates)
    unknown = np.sort(rng.permutation(pool)[:n_unknown])
    known = np.setdiff1d(np.arange(n_classes), unknown)
    enrol, queries = [], []
    for c in known:
        idx = rng.permutation(np.flatnonzero(labels == c))
        enrol.append(np.sort(idx[:k_shot]))
        queries.append(idx[k_shot:])
    unk = np.flatnonzero(np.isin(labels, unknown))
    return known, np.concatenate(enrol), np.sort(np.concatenate(queries)), unk


def score(dist: np.ndarray, threshold: float, truth: np.ndarray | None) -> tuple[float, float]:
    """(accepted share, accepted-and-right share) of queries with (Q, C) distances."""
    accepted = dist.min(1) <= threshold
    if truth is None:
        return float(accepted.mean()), float("nan")
    return float(accepted.mean()), float((accepted & (dist.argmin(1) == truth)).mean())


def run_trial(feats: np.ndarray, labels: np.ndarray, n_classes: int, args: argparse.Namespace, seed: int, rates: list[float]) -> list[dict]:
    known, enrol, kq, uq = trial_split(labels, n_classes, args.n_unknown, args.k_shot, seed, args.unknown_candidates)
    remap = np.full(n_classes, -1)
    remap[known] = np.arange(len(known))
    rows = []
    for mode in ("normalised", "raw"):
        f = l2_normalise(feats) if mode == "normalised" else feats.astype(np.float32)
        sup, sup_y = torch.from_numpy(f[enrol]), torch.from_numpy(remap[labels[enrol]])
        net = PrototypicalNetwork(distance=args.distance)
        protos = net.process_support_set(sup, sup_y).numpy().astype(np.float32)
        dk = net.distances(torch.from_numpy(f[kq])).numpy()
        du = net.distances(torch.from_numpy(f[uq])).numpy()
        closed = float((dk.argmin(1) == remap[labels[kq]]).mean())
        for rate in rates if mode == "normalised" else [0.05]:
            point = calibrate_threshold(f[enrol], remap[labels[enrol]], protos, args.distance, rate)
            thr = point["threshold"]
            k_acc, k_right = score(dk, thr, remap[labels[kq]])
            u_acc, _ = score(du, thr, None)
            rows.append({"trial": seed, "mode": mode, "reject_rate": rate, "threshold": thr, "known_accepted": k_acc,
                         "known_right": k_right, "unknown_rejected": 1 - u_acc, "closed_set_acc": closed,
                         "est_unknown_rejection": point["est_unknown_rejection"], "loo_false_rejection": point["loo_false_rejection"],
                         "unknown": [int(c) for c in np.setdiff1d(np.arange(n_classes), known)]})
    return rows


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for key in sorted({(r["mode"], r["reject_rate"]) for r in rows}, key=lambda k: (k[0] != "normalised", k[1])):
        sel = [r for r in rows if (r["mode"], r["reject_rate"]) == key]
        agg = {"mode": key[0], "reject_rate": key[1], "trials": len(sel)}
        for m in ("threshold", "unknown_rejected", "known_accepted", "known_right", "closed_set_acc", "est_unknown_rejection"):
            v = np.array([r[m] for r in sel], dtype=float)
            agg[m], agg[m + "_sd"] = float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0
        out.append(agg)
    return out


def markdown(summary: list[dict], header: str) -> str:
    lines = [header, "", "| embeddings | --reject-rate | threshold | unknown rejected | known accepted | known accepted + right | closed-set acc | LOO estimate of unknown rejected |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for s in summary:
        mode = "L2-normalised (now)" if s["mode"] == "normalised" else "raw, 95th pct (before)"
        pct = lambda m: f"{100 * s[m]:.1f} ± {100 * s[m + '_sd']:.1f}"  # noqa: E731
        lines.append(f"| {mode} | {s['reject_rate']:g} | {s['threshold']:.4g} | {pct('unknown_rejected')} | {pct('known_accepted')} | "
                     f"{pct('known_right')} | {pct('closed_set_acc')} | {pct('est_unknown_rejection')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "characters"))
    ap.add_argument("--run", help="a few-shot run folder (default: the ImageNet backbone)")
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--weights", default=None, help="default: efficientnet_lite0_imagenet (offline)")
    ap.add_argument("--img-size", type=int, default=None)
    ap.add_argument("--distance", default="euclidean")
    ap.add_argument("--n-unknown", type=int, default=4)
    ap.add_argument("--k-shot", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=80, help="images sampled per character (0: all)")
    ap.add_argument("--trials", type=int, default=10)
    ap.add_argument("--reject-rates", default="0,0.02,0.05,0.1,0.15,0.2,0.3")
    ap.add_argument("--unknown-from", choices=("all", "unseen"), default="all",
                    help="unseen (with --run): draw the unknown characters only from the run's val + test classes, never meta-trained on")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "open_set"))
    args = ap.parse_args(argv)
    t0, c0 = time.time(), time.process_time()
    spec = backbone_spec(args.run, None if args.run else args.backbone, None if args.run else args.weights, args.img_size)
    images = scan_class_folders(args.data)
    labels_all = np.asarray(images.labels)
    pool = sample_pool(labels_all, args.per_class or None, seed=0)
    model, dcfg = build_backbone(spec)
    emb = embed_paths(model, [images.paths[i] for i in pool], dcfg, cache_dir=args.cache_dir or default_cache_dir(), progress=sys.stderr.isatty())
    feats, labels = emb.features[emb.valid], labels_all[pool][emb.valid]
    rates = [float(r) for r in args.reject_rates.split(",")]
    args.unknown_candidates = None
    if args.unknown_from == "unseen":
        split = json.loads((Path(args.run) / "classes.json").read_text())
        args.unknown_candidates = np.array([images.classes.index(c) for c in split["val"] + split["test"]])
    rows = [r for t in range(args.trials) for r in run_trial(feats, labels, len(images.classes), args, t, rates)]
    summary = summarise(rows)
    who = f"few-shot run `{args.run}`" if args.run else f"`{spec.backbone}` ({spec.weights})"
    if args.unknown_from == "unseen":
        who += " (unknown characters drawn from the run's val + test classes only, never meta-trained on)"
    cmd = "python benchmarks/open_set.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    header = (f"Open set on `{args.data}`: {len(images.classes) - args.n_unknown} characters enrolled from {args.k_shot} images each, "
              f"{args.n_unknown} held out as unknown; {who}, {args.distance} distance; {len(feats)} images "
              f"({args.per_class or 'all'} per character); mean ± sd over {args.trials} seeded trials.\n\nCommand: `{cmd.strip()}`")
    md = markdown(summary, header)
    print(md)
    print(f"wall {time.time() - t0:.0f} s, CPU {time.process_time() - c0:.0f} s", file=sys.stderr)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"summary": summary, "trials": rows, "classes": images.classes}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
