"""Benchmark: which unknown score separates unseen characters best, given a trained classifier?

Reuses the runs of ``benchmarks/open_set_trained.py`` (``--work``): for each class fold, the
classifier trained on 12 characters and the 80 pool images of all 16. Scores (higher = more
likely unknown) compared by AUROC (unknown vs known pool images) and the most unknown images any
threshold could reject while >= 90% of known images are accepted and named right (an upper
bound: the threshold is chosen on the queries):

- the classifier: top logit, energy (log-sum-exp of the logits), top softmax probability;
- k-nearest neighbour (cosine) to the run's *training* images (Sun et al. 2022);
- cosine to the class means of the training images;
- Mahalanobis distance with a tied covariance of the training images (Lee et al. 2018), on raw
  or L2-normalised features, with shrinkage ``s`` towards a scaled identity;
- 5-shot prototypes (what ``anivision enroll`` does; 5 trials per fold), alone or with a
  Mahalanobis metric (the training images' covariance or the 60 enrolment images' own).

    python benchmarks/open_set_scores.py --work /tmp/openset-trained-v

Embeddings are cached (``anivision.embeddings``); prints a Markdown table.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from open_set import sample_pool  # noqa: E402
from open_set_trained import auroc, upper_bound  # noqa: E402

import anivision as av  # noqa: E402
from anivision.data.cache import default_cache_dir  # noqa: E402
from anivision.data.folder import scan_class_folders  # noqa: E402
from anivision.embeddings import embed_paths  # noqa: E402
from anivision.tasks.fewshot import l2_normalise as l2  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def tied_precision(x: np.ndarray, y: np.ndarray, n: int, shrink: float) -> tuple[np.ndarray, np.ndarray]:
    """Class means and the inverse of the shrunk pooled within-class covariance."""
    mu = np.stack([x[y == c].mean(0) for c in range(n)])
    s = np.cov((x - mu[y]).T)
    s = (1 - shrink) * s + shrink * np.trace(s) / len(s) * np.eye(len(s))
    return mu, np.linalg.inv(s)


def mahalanobis(q: np.ndarray, mu: np.ndarray, p: np.ndarray) -> np.ndarray:
    qp, mp = q @ p, mu @ p
    return (qp * q).sum(1)[:, None] - 2 * qp @ mu.T + (mp * mu).sum(1)[None]


def fold_scores(run: Path, images, pool: np.ndarray, unknown: np.ndarray, cache: str, fold: int) -> dict[str, tuple[float, float, float]]:
    clf = av.load(run)
    model = clf.model
    with open(run / "split.csv", newline="") as fh:
        train = [r for r in csv.DictReader(fh) if r["split"] == "train"]
    index = {c: i for i, c in enumerate(clf.classes)}
    e = embed_paths(model.backbone, [images.paths[i] for i in pool], clf.data_config, cache_dir=cache, progress=False)
    t = embed_paths(model.backbone, [str(Path(r["root"]) / r["path"]) for r in train], clf.data_config, cache_dir=cache, progress=False)
    feats, names = e.features[e.valid], np.array([images.classes[images.labels[i]] for i in pool])[e.valid]
    tf, ty = t.features[t.valid], np.array([index[r["label"]] for r in train])[t.valid]
    is_u = np.isin(names, [images.classes[c] for c in unknown])
    fk, fu, yk = feats[~is_u], feats[is_u], np.array([index[n] for n in names[~is_u]])
    with torch.no_grad():
        lk, lu = (model.head(torch.from_numpy(x)).numpy() for x in (fk, fu))
    right = lk.argmax(1) == yk
    out: dict[str, list[tuple[float, float, float]]] = {}

    def add(name: str, sk: np.ndarray, su: np.ndarray, ok: np.ndarray) -> None:
        out.setdefault(name, []).append((auroc(sk, su), upper_bound(sk, su, ok), float(ok.mean())))

    lse = lambda x: np.log(np.exp(x - x.max(1, keepdims=True)).sum(1)) + x.max(1)  # noqa: E731
    add("top logit", -lk.max(1), -lu.max(1), right)
    add("energy", -lse(lk), -lse(lu), right)
    add("top softmax probability", -np.exp(lk.max(1) - lse(lk)), -np.exp(lu.max(1) - lse(lu)), right)
    tn, kn, un = l2(tf), l2(fk), l2(fu)
    for k in (1, 5, 20):
        add(f"{k}-NN cosine to training images", -np.sort(kn @ tn.T, 1)[:, -k], -np.sort(un @ tn.T, 1)[:, -k], right)
    n = len(clf.classes)
    mu = l2(np.stack([tn[ty == c].mean(0) for c in range(n)]))
    dk, du = 1 - kn @ mu.T, 1 - un @ mu.T
    add("cosine to training class means", dk.min(1), du.min(1), dk.argmin(1) == yk)
    for shrink in (0.01, 0.1, 0.5):
        for what, x, qk, qu in (("raw", tf, fk, fu), ("L2-normalised", tn, kn, un)):
            m, p = tied_precision(x, ty, n, shrink)
            dk, du = mahalanobis(qk, m, p), mahalanobis(qu, m, p)
            add(f"Mahalanobis, {what}, s={shrink}", dk.min(1), du.min(1), dk.argmin(1) == yk)
    for trial in range(5):
        rng = np.random.default_rng(100 * fold + trial)
        enrol, queries = [], []
        for c in range(n):
            idx = rng.permutation(np.flatnonzero(yk == c))
            enrol.append(idx[:5])
            queries.append(idx[5:])
        en, q = np.concatenate(enrol), np.sort(np.concatenate(queries))
        proto = np.stack([kn[en][yk[en] == c].mean(0) for c in range(n)])
        dk = ((kn[q][:, None] - proto[None]) ** 2).sum(-1)
        du = ((un[:, None] - proto[None]) ** 2).sum(-1)
        add("5-shot prototypes (enroll)", dk.min(1), du.min(1), dk.argmin(1) == yk[q])
        for name, (x, y, s) in {"training covariance, s=0.5": (tn, ty, 0.5), "own covariance, s=0.9": (kn[en], yk[en], 0.9)}.items():
            _, p = tied_precision(x, y, n, s)
            dk, du = mahalanobis(kn[q], proto, p), mahalanobis(un, proto, p)
            add(f"5-shot prototypes + Mahalanobis, {name}", dk.min(1), du.min(1), dk.argmin(1) == yk[q])
    return {k: tuple(np.mean(v, 0)) for k, v in out.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "characters"))
    ap.add_argument("--work", default="/tmp/openset-trained-v", help="the --work folder of open_set_trained.py (finished folds)")
    ap.add_argument("--folds", default="0,1,2,3")
    ap.add_argument("--out", default=None, help="also write the table and per-fold figures here (.md, .json)")
    args = ap.parse_args(argv)
    images = scan_class_folders(args.data)
    labels = np.asarray(images.labels)
    pool = sample_pool(labels, 80, seed=0)
    groups = np.array_split(np.random.default_rng(0).permutation(len(images.classes)), 4)
    per_fold = {}
    for f in (int(x) for x in args.folds.split(",")):
        per_fold[f] = fold_scores(Path(args.work) / f"fold{f}", images, pool, np.sort(groups[f]), default_cache_dir(), f)
        print(f"fold {f} done", file=sys.stderr, flush=True)
    names = list(next(iter(per_fold.values())))
    md = (f"Runs: `{args.work}` (folds {args.folds}); mean over folds (5-shot rows: 5 trials per fold).\n\n"
          "| unknown score | AUROC | best unknown rejected at >= 90% known right (upper bound) | closed-set acc |\n|---|---:|---:|---:|\n")
    for name in names:
        v = np.array([per_fold[f][name] for f in per_fold])
        md += f"| {name} | {v[:, 0].mean():.3f} | {100 * v[:, 1].mean():.1f} | {100 * v[:, 2].mean():.1f} |\n"
    md += "\nCommand: `python benchmarks/open_set_scores.py " + " ".join(argv if argv is not None else sys.argv[1:]) + "`\n"
    print(md)
    if args.out:
        out = Path(args.out)
        out.with_suffix(".md").write_text(md)
        out.with_suffix(".json").write_text(json.dumps({str(f): v for f, v in per_fold.items()}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
