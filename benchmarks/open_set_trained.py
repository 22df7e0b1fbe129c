"""Benchmark: open set when the embedding was trained on the enrolled characters (and never on the unknown ones).

``benchmarks/open_set.py`` enrols characters into an embedding that never saw them (ImageNet or a
few-shot run meta-trained on other characters). This is the other common case: a user trains a
classifier on the characters they care about (``anivision train``), enrols them from a few images
with that run's backbone (``anivision enroll --backbone B --weights RUN/model.safetensors``) and
wants every other character called ``unknown``.

Protocol on ``shared/data/characters`` (16 characters), class-level 4-fold cross-validation: the
characters are shuffled (seed 0) into 4 groups of 4; fold f holds group f out as *unknown* and
trains ``anivision train`` on the other 12 (85/10/5 train/val/test) — on their images outside the evaluation pool (the same
80 seeded images per character as ``open_set.py``), so no query or enrolment image is trained on.
Each fold then runs ``--trials`` seeded trials of ``open_set.py``'s rule: enrol the 12 from K = 5
random pool images each, query with the other 75 of each and all 80 of each unknown character,
threshold from ``calibrate_threshold`` at each ``--reject-rate``. Every character is unknown in
exactly one fold. The same trials on the ImageNet backbone are the baseline.

    python benchmarks/open_set_trained.py --work /tmp/openset-trained

Runs are resumable (a fold whose run has ``metrics.json`` is not retrained). Prints a Markdown
table and writes it with per-trial rows to ``--out`` (``.md``, ``.json``).
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from open_set import markdown, run_trial, sample_pool, summarise, trial_split  # noqa: E402

from anivision.data.cache import default_cache_dir  # noqa: E402
from anivision.data.folder import scan_class_folders  # noqa: E402
from anivision.data.splits import stratified_split  # noqa: E402
from anivision.embeddings import embed_paths  # noqa: E402
from anivision.models.backbone import DEFAULT_BACKBONE  # noqa: E402
from anivision.models.protonet import PrototypicalNetwork  # noqa: E402
from anivision.models.tta import TTA_CHOICES, with_tta  # noqa: E402
from anivision.tasks.fewshot import backbone_spec, build_backbone, l2_normalise  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def auroc(known: np.ndarray, unknown: np.ndarray) -> float:
    """Area under the ROC curve of "nearest-prototype distance" separating unknown (higher) from known queries."""
    s = np.concatenate([known, unknown])
    ranks = np.empty(len(s))
    ranks[np.argsort(s, kind="stable")] = np.arange(1, len(s) + 1)
    return float((ranks[len(known):].sum() - len(unknown) * (len(unknown) + 1) / 2) / (len(known) * len(unknown)))


def upper_bound(known: np.ndarray, unknown: np.ndarray, right: np.ndarray) -> float:
    """The most unknown queries any threshold rejects (score above it) while >= 90% of known ones
    are accepted (score at or below it) and named right; the threshold is chosen on the queries."""
    best = 0.0
    for t in np.unique(np.concatenate([known, unknown])):
        if np.mean((known <= t) & right) >= 0.9:
            best = max(best, float(np.mean(unknown > t)))
    return best


def separation(feats: np.ndarray, labels: np.ndarray, n: int, args: argparse.Namespace, seed: int) -> dict[str, float]:
    """One trial's AUROC of the nearest-prototype distance (unknown vs known queries) and the best
    operating point any threshold could reach: the most unknown queries rejected while >= 90% of
    known ones are accepted and named right (threshold picked on the queries: an upper bound)."""
    known, enrol, kq, uq = trial_split(labels, n, args.n_unknown, args.k_shot, seed, args.unknown_candidates)
    remap = np.full(n, -1)
    remap[known] = np.arange(len(known))
    f = l2_normalise(feats)
    net = PrototypicalNetwork(distance=args.distance)
    net.process_support_set(torch.from_numpy(f[enrol]), torch.from_numpy(remap[labels[enrol]]))
    dk, du = net.distances(torch.from_numpy(f[kq])).numpy(), net.distances(torch.from_numpy(f[uq])).numpy()
    sk, su, right = dk.min(1), du.min(1), dk.argmin(1) == remap[labels[kq]]
    return {"auroc": auroc(sk, su), "closed_set_acc": float(right.mean()), "best_unknown_rejected_at_90": upper_bound(sk, su, right)}


def classifier_open_set(run: Path, images, pool: np.ndarray, unknown: np.ndarray, rates: list[float]) -> list[dict]:
    """``anivision predict RUN --reject-rate R`` on the pool: known = the 12 trained characters' pool
    images (accepted + named right), unknown = the held-out ones' (rejected); the threshold is the
    library's (:meth:`ImageClassifier.unknown_threshold`: the R quantile of the top logit over the
    run's validation images). Plus the best any top-logit threshold could do (upper bound)."""
    import anivision as av

    clf = av.load(run)
    out = clf.outputs([images.paths[i] for i in pool], "logits")
    logits, rows_pool = out.values, pool[out.rows]
    names = np.array([images.classes[images.labels[i]] for i in rows_pool])
    is_unknown = np.isin(np.array([images.labels[i] for i in rows_pool]), unknown)
    right = np.array(clf.classes)[logits.argmax(1)] == names
    top = logits.max(1)
    res = []
    for rate in rates:
        thr = clf.unknown_threshold(rate)["threshold"]
        res.append({"reject_rate": rate, "threshold": thr, "unknown_rejected": float(np.mean(top[is_unknown] < thr)),
                    "known_accepted": float(np.mean(top[~is_unknown] >= thr)),
                    "known_right": float(np.mean((top[~is_unknown] >= thr) & right[~is_unknown])),
                    "closed_set_acc": float(right[~is_unknown].mean())})
    sk, su = -top[~is_unknown], -top[is_unknown]
    res.append({"reject_rate": "best", "auroc": auroc(sk, su), "best_unknown_rejected_at_90": upper_bound(sk, su, right[~is_unknown])})
    return res


def write_manifest(path: Path, images, rows: np.ndarray, seed: int) -> None:
    present = sorted({images.labels[i] for i in rows})
    index = {c: j for j, c in enumerate(present)}
    parts = stratified_split([index[images.labels[i]] for i in rows], [images.classes[c] for c in present], (0.85, 0.1, 0.05), seed)
    with open(path, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label", "split"])
        for i, p in zip(rows, parts):
            w.writerow([str(Path(images.paths[i]).resolve()), images.classes[images.labels[i]], p])


def embed(spec, images, pool: np.ndarray, cache_dir: str, tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    model, dcfg = build_backbone(spec)
    emb = embed_paths(with_tta(model, tta), [images.paths[i] for i in pool], dcfg, cache_dir=cache_dir, progress=sys.stderr.isatty())
    return emb.features[emb.valid], np.asarray(images.labels)[pool][emb.valid]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "characters"))
    ap.add_argument("--work", default="/tmp/openset-trained", help="manifests and the runs (reused when finished)")
    ap.add_argument("--folds", default="0,1,2,3", help="which of the 4 class folds to run")
    ap.add_argument("--train-args", default="--epochs 3", help="extra options of 'anivision train' (default strategy: full)")
    ap.add_argument("--trials", type=int, default=5, help="enrolment draws per fold")
    ap.add_argument("--k-shot", type=int, default=5)
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--distance", default="euclidean")
    ap.add_argument("--reject-rates", default="0.02,0.05,0.1,0.15,0.2")
    ap.add_argument("--cache-dir", default=None)
    ap.add_argument("--tta", default="none", choices=TTA_CHOICES, help="test-time augmentation of the embeddings (enroll --tta)")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "open_set_trained"))
    args = ap.parse_args(argv)
    t0 = time.time()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = args.cache_dir or default_cache_dir()
    images = scan_class_folders(args.data)
    n = len(images.classes)
    labels_all = np.asarray(images.labels)
    pool = sample_pool(labels_all, args.per_class, seed=0)
    groups = np.array_split(np.random.default_rng(0).permutation(n), 4)
    rates = [float(r) for r in args.reject_rates.split(",")]
    args.n_unknown = len(groups[0])
    base_feats, base_labels = embed(backbone_spec(None, DEFAULT_BACKBONE, None, None), images, pool, cache, args.tta)
    rows: dict[str, list[dict]] = {"trained": [], "imagenet": []}
    seps: dict[str, list[dict]] = {"trained": [], "imagenet": []}
    logit_rows: list[dict] = []
    for f in (int(x) for x in args.folds.split(",")):
        unknown = np.sort(groups[f])
        run = work / f"fold{f}"
        if not (run / "metrics.json").exists():
            train_rows = np.setdiff1d(np.flatnonzero(~np.isin(labels_all, unknown)), pool)
            manifest = work / f"fold{f}.csv"
            write_manifest(manifest, images, train_rows, seed=f)
            cmd = ["anivision", "train", "--data", str(manifest), "--out", str(run), *shlex.split(args.train_args)]
            print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
            subprocess.run(cmd, check=True)
        feats, labels = embed(backbone_spec(None, DEFAULT_BACKBONE, str(run / "model.safetensors"), None), images, pool, cache, args.tta)
        args.unknown_candidates = unknown
        for name, (x, y) in (("trained", (feats, labels)), ("imagenet", (base_feats, base_labels))):
            for t in range(args.trials):
                trial = run_trial(x, y, n, args, 100 * f + t, rates)
                rows[name] += [r | {"fold": f} for r in trial if r["mode"] == "normalised"]
                seps[name].append(separation(x, y, n, args, 100 * f + t) | {"fold": f})
        logit_rows += [r | {"fold": f} for r in classifier_open_set(run, images, pool, unknown, rates)]
        print(f"fold {f}: unknown {[images.classes[c] for c in unknown]} done ({time.time() - t0:.0f} s)", flush=True)
    cmd = "python benchmarks/open_set_trained.py " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:]))
    md = ""
    for name, what in (("trained", f"backbone of `anivision train {args.train_args}` on the 12 enrolled characters"
                                   + ("" if args.tta == "none" else f", `enroll --tta {args.tta}`")),
                       ("imagenet", "ImageNet `tf_efficientnet_lite0` (baseline)")):
        header = (f"**{what}**; {n - args.n_unknown} characters enrolled from {args.k_shot} images each, {args.n_unknown} unknown "
                  f"never trained on; folds {args.folds}, {args.trials} trials each; mean ± sd over trials.")
        md += markdown(summarise(rows[name]), header) + "\n"
    md += ("| embedding | AUROC, unknown vs known (nearest-prototype distance) | closed-set acc | best unknown rejected with >= 90% "
           "of known accepted + right (threshold chosen on the queries: upper bound) |\n|---|---:|---:|---:|\n")
    for name in ("trained", "imagenet"):
        v = {k: np.array([r[k] for r in seps[name]]) for k in ("auroc", "closed_set_acc", "best_unknown_rejected_at_90")}
        md += (f"| {name} | {v['auroc'].mean():.3f} ± {v['auroc'].std(ddof=1):.3f} | {100 * v['closed_set_acc'].mean():.1f} | "
               f"{100 * v['best_unknown_rejected_at_90'].mean():.1f} ± {100 * v['best_unknown_rejected_at_90'].std(ddof=1):.1f} |\n")
    md += ("\n**The same classifiers as classifiers** (`anivision predict RUN --reject-rate R`: `unknown` when the top logit is "
           "below the R quantile of the run's validation images' top logits; known = the 12 trained characters' 80 pool "
           "images each, unknown = the 4 held-out characters' 80 each); mean ± sd over folds.\n\n"
           "| --reject-rate | threshold | unknown rejected | known accepted | known accepted + right | closed-set acc |\n"
           "|---:|---:|---:|---:|---:|---:|\n")
    for rate in rates:
        sel = [r for r in logit_rows if r["reject_rate"] == rate]
        cell = lambda k: f"{100 * np.mean([r[k] for r in sel]):.1f} ± {100 * np.std([r[k] for r in sel], ddof=1):.1f}" if len(sel) > 1 else f"{100 * sel[0][k]:.1f}"  # noqa: E731
        md += (f"| {rate:g} | {np.mean([r['threshold'] for r in sel]):.3g} | {cell('unknown_rejected')} | {cell('known_accepted')} | "
               f"{cell('known_right')} | {cell('closed_set_acc')} |\n")
    best = [r for r in logit_rows if r["reject_rate"] == "best"]
    md += (f"\nTop logit as the unknown score: AUROC {np.mean([r['auroc'] for r in best]):.3f}; best unknown rejected with >= 90% of "
           f"known accepted + right (threshold chosen on the queries: upper bound) {100 * np.mean([r['best_unknown_rejected_at_90'] for r in best]):.1f}%.\n")
    md += f"\nCommand: `{cmd.strip()}`\n"
    print(md)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text(md)
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "separation": seps, "classifier": logit_rows, "classes": images.classes,
                                                    "groups": [[int(c) for c in g] for g in groups]}, indent=1) + "\n")
    print(f"wall {time.time() - t0:.0f} s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
