"""``anivision retrieval {train,evaluate,search}``: anime style retrieval on ``work/role`` data.

Flags become a :class:`~anivision.tasks.retrieval.RetrievalConfig` here; everything else is in
the :mod:`anivision.tasks.retrieval` package.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from anivision.commands import add_shared, deprecated, print_help_when_bare
from anivision.data.cache import default_cache_dir
from anivision.data.reid import DEFAULT_FOLDS, DEFAULT_QUERY_RATIO, load_reid, summarize
from anivision.errors import AnivisionError
from anivision.files import atomic_write_json
from anivision.models.backbone import DEFAULT_BACKBONE, LITE0_ARCH, LITE0_WEIGHTS
from anivision.reports.plots import plot_image_grid
from anivision.tasks.retrieval import (
    PRESETS,
    RetrievalConfig,
    StyleRetriever,
    evaluate_baseline,
    evaluate_run,
    load_run_config,
    run_data_source,
    train_run,
)


def _default_weights(backbone: str, weights: str | None) -> str:
    """``--weights`` default: the offline ImageNet weights for the default backbone, ``imagenet`` otherwise."""
    if weights:
        return weights
    return LITE0_WEIGHTS if backbone.split(".")[0] == LITE0_ARCH else "imagenet"


def _cache_dir(args: argparse.Namespace) -> Path:
    return Path(args.cache_dir) if getattr(args, "cache_dir", None) else default_cache_dir()


def _command_line() -> str | None:
    """The command as typed, for the report (None when not run from the console script)."""
    if Path(sys.argv[0]).name != "anivision":
        return None
    return " ".join(shlex.quote(a) for a in ["anivision", *sys.argv[1:]])


def _load_data(path: str | None, what: str = "--data") -> Any:
    if not path:
        raise AnivisionError(f"{what} ROOT is needed (ROOT/<work>/<role>/<image>, or a path,work,role CSV)")
    data = load_reid(path)
    print(summarize(data, max_works=20), file=sys.stderr)
    return data


def _print_summary(summary: dict[str, Any], out: Path) -> None:
    m, s = summary["mean"], summary["std"]
    for r in summary["folds"]:
        print(f"fold {r['fold']}: mINP {100 * r['mINP']:.2f}%  mAP {100 * r['mAP']:.2f}%  rank-1 {100 * r['rank1']:.2f}%  "
              f"rank-5 {100 * r['rank5']:.2f}%  ({r['n_query']} queries, {r['n_gallery']} gallery)")
    names = {"mINP": "mINP", "mAP": "mAP", "rank1": "rank-1", "rank5": "rank-5", "rank10": "rank-10"}
    print("mean ± std over {} fold(s): ".format(summary["n_folds"])
          + "  ".join(f"{name} {100 * m[k]:.2f}% ± {100 * s[k]:.2f}" for k, name in names.items()))
    if summary["excluded_works"]:
        print(f"{len(summary['excluded_works'])} single-role test work(s) excluded: {', '.join(summary['excluded_works'][:10])}")
    print(f"report: {out / 'report.md'}")


# ------------------------------------------------------------------------------ handlers


def cmd_train(args: argparse.Namespace) -> int:
    """Train (and evaluate) every fold, or one with ``--fold``; rerun to resume."""
    cfg = RetrievalConfig(
        backbone=args.backbone,
        weights=_default_weights(args.backbone, args.weights),
        preset=args.preset,
        img_size=args.img_size,
        epochs=args.epochs,
        p=args.p,
        k=args.k,
        batches_per_epoch=args.batches_per_epoch,
        lr=args.lr,
        pool=args.pool,
        triplet_normalize=args.triplet_features == "normalized",
        folds=args.folds,
        query_ratio=args.query_ratio,
        seed=args.seed,
        metric=args.distance,
        grad_clip=args.grad_clip or None,
        amp=args.amp,
        num_workers=args.workers,
    )
    cfg.validate()
    data = _load_data(args.data)
    summary = train_run(
        data, cfg, args.out, data_source=args.data, only_fold=args.fold, cache_dir=_cache_dir(args),
        device=args.device, progress=not getattr(args, "quiet", False), command=_command_line(),
    )
    _print_summary(summary, Path(args.out))
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    """A trained run on its folds, or (``--backbone``) the untrained baseline on the same folds."""
    progress = not getattr(args, "quiet", False)
    run = Path(args.run_dir) if args.run_dir else None
    run_cfg = load_run_config(run) if run else None
    data_path = run_data_source(run, args.data) if run is not None and (args.data or (run / "data.json").exists()) else args.data
    if args.backbone:
        # Untrained baseline; with a run folder, on exactly that run's folds.
        folds = run_cfg.folds if run_cfg else (args.folds or 5)
        if run_cfg and args.folds and args.folds != run_cfg.folds:
            raise AnivisionError(f"--folds {args.folds} differs from the run's {run_cfg.folds}; drop one of them")
        out = Path(args.out) if args.out else (run / "baseline" if run else Path(f"retrieval-baseline-{args.backbone}"))
        data = _load_data(data_path)
        summary = evaluate_baseline(
            data,
            args.backbone,
            _default_weights(args.backbone, args.weights),
            out,
            img_size=args.img_size or (run_cfg.img_size if run_cfg else 128),
            folds=folds,
            query_ratio=run_cfg.query_ratio if run_cfg else args.query_ratio,
            seed=run_cfg.seed if run_cfg else args.seed,
            metric=args.distance or (run_cfg.metric if run_cfg else "cosine"),
            data_source=data_path or "",
            cache_dir=_cache_dir(args),
            device=args.device,
            progress=progress,
            command=_command_line(),
        )
    elif run is not None:
        if args.folds and run_cfg and args.folds != run_cfg.folds:
            raise AnivisionError(f"--folds {args.folds} differs from the run's {run_cfg.folds} (a trained run keeps its folds)")
        out = Path(args.out) if args.out else run
        data = _load_data(data_path)
        summary = evaluate_run(
            run, data, out, data_source=data_path or "", cache_dir=_cache_dir(args), device=args.device,
            progress=progress, command=_command_line(),
        )
    else:
        raise AnivisionError("retrieval evaluate needs RUN_DIR (a trained run) or --backbone NAME (the untrained baseline)")
    _print_summary(summary, out)
    return 0


def cmd_search(args: argparse.Namespace) -> int:
    """Most similar gallery images (and their works) for each query image."""
    if args.top_k < 1:
        raise AnivisionError("--top-k must be at least 1")
    progress = not getattr(args, "quiet", False)
    retriever = StyleRetriever.load(args.run_dir, args.fold, args.device, args.engine)
    index = retriever.index(args.gallery_images, progress=progress, kind=args.index)
    print(f"gallery: {len(index.paths)} images of {len(set(index.works))} works (fold {retriever.fold} model)", file=sys.stderr)
    found = retriever.search(args.images, index, args.top_k, skip_unreadable=True, progress=progress)
    results = []
    for r in found:
        print(f"{r.source}: nearest work {r.work}; top-{len(r.hits)} works: " + ", ".join(f"{w} ({n})" for w, n in r.votes))
        for i, t in enumerate(r.hits, 1):
            print(f"  {i:>3}. {t['dist']:.4f}  {t['work']}/{t['role']}  {t['path']}")
        results.append({"query": r.source, "top": r.hits})
    if args.out:
        out = Path(args.out)
        atomic_write_json(out / "search.json", {"run": str(args.run_dir), "fold": retriever.fold, "gallery": str(args.gallery_images), "results": results})
        rows = [[(r["query"], "query", None)] + [(t["path"], f"{i}. {t['work']}", None) for i, t in enumerate(r["top"], 1)] for r in results[:20]]
        plot_image_grid(rows, out / "search.png")
        print(f"results: {out / 'search.json'}, {out / 'search.png'}", file=sys.stderr)
    return 0 if results else 1


# ------------------------------------------------------------------------------ parser


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``retrieval`` with its ``train``, ``evaluate`` and ``search`` sub-commands."""
    d = RetrievalConfig()
    top = subparsers.add_parser(
        "retrieval",
        help="anime style retrieval: re-ID training and the cross-role k-fold protocol (LSASRD)",
        description="Data: ROOT/<work>/<role>/<image> or a CSV path,work,role. Each test work's roles are split "
        "into query and gallery roles; works are split into k folds.",
    )
    sub = top.add_subparsers(dest="retrieval_command", metavar="SUBCOMMAND")
    print_help_when_bare(top)

    p = sub.add_parser("train", help="train a re-ID model per fold (resumable) and evaluate it")
    p.add_argument("--data", required=True, help="ROOT/<work>/<role>/<image> folder or path,work,role CSV")
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help="any timm model name")
    p.add_argument("--weights", help="starting weights: none | imagenet (timm's hub, needs a network) | efficientnet_lite0_imagenet | FILE "
                   "(default: efficientnet_lite0_imagenet for the default backbone, else imagenet)")
    p.add_argument("--preset", default=d.preset, choices=tuple(PRESETS),
                   help="agw (SGD, warm-up + step, CE + weighted triplet, GeM) or transreid (SGD, cosine, CE + batch-hard triplet)")
    p.add_argument("--folds", type=int, default=DEFAULT_FOLDS, help="folds by work")
    p.add_argument("--fold", type=int, help="train only this fold (0-based); the others can follow later into the same --out (default: all)")
    add_shared(p, "--epochs", "per fold", default=d.epochs)
    add_shared(p, "--img-size", default=d.img_size)
    p.add_argument("--query-ratio", type=float, default=DEFAULT_QUERY_RATIO, help="fraction of each test work's roles used as queries")
    add_shared(p, "--seed", "of the folds, role split, sampler and initialisation", default=d.seed)
    p.add_argument("--p", type=int, default=d.p, help="works per PK batch")
    p.add_argument("--k", type=int, default=d.k, help="images per work in a PK batch")
    p.add_argument("--batches-per-epoch", type=int, help="PK batches per epoch (default: about one pass over the training images)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--pool", choices=("auto", "gem", "backbone"), help="pooling (default: the preset's; auto = GeM on CNNs)")
    p.add_argument("--triplet-features", default="normalized", choices=("normalized", "raw"),
                   help="triplet loss on L2-normalised features (stable in short runs) or raw features (as the papers)")
    add_shared(p, "--distance", default=d.metric)
    p.add_argument("--grad-clip", type=float, help="max total gradient norm (default: no clipping, as the papers)")
    add_shared(p, "--amp", default=True)
    add_shared(p, "--workers", default=0)
    add_shared(p, "--device")
    add_shared(p, "--cache-dir")
    add_shared(p, "--out", "the run folder (rerun the same command to resume)", required=True, metavar="RUN")
    deprecated(p, "--metric", "--distance")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="evaluate a run, or the untrained baseline (--backbone) on the same folds")
    p.add_argument("run_dir", nargs="?", metavar="RUN",
                   help="trained run folder; with --backbone: evaluate the baseline on its folds (default: none: needs --backbone)")
    p.add_argument("--backbone", help="evaluate this untrained timm backbone instead of the run's models (default: none)")
    p.add_argument("--weights", help="weights of --backbone (default: as for retrieval train)")
    p.add_argument("--data", help="ROOT/<work>/<role>/<image> folder or path,work,role CSV (default: the run's)")
    p.add_argument("--folds", type=int, help="folds by work for the baseline without RUN (default: 5)")
    p.add_argument("--query-ratio", type=float, default=DEFAULT_QUERY_RATIO, help="fraction of each test work's roles used as queries, without RUN")
    add_shared(p, "--seed", "of the folds and role split, without RUN", default=0)
    add_shared(p, "--img-size", "of the baseline", default_text="the run's, else 128")
    add_shared(p, "--distance", default_text="the run's, else cosine")
    add_shared(p, "--device")
    add_shared(p, "--cache-dir")
    add_shared(p, "--out", "the report folder", default_text="RUN, RUN/baseline with --backbone, or ./retrieval-baseline-BACKBONE",
               metavar="DIR")
    deprecated(p, "--metric", "--distance")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("search", help="most similar images of an image collection, and their works, for query images")
    p.add_argument("run_dir", metavar="RUN", help="trained run folder from 'anivision retrieval train'")
    p.add_argument("images", nargs="+", metavar="IMAGES", help="query image files or folders")
    p.add_argument("--gallery-images", required=True, metavar="DIR",
                   help="the images to search: a folder (<work>/<role>/<image>, <work>/<image> or flat) or a path,work,role CSV")
    add_shared(p, "--top-k", default=10)
    p.add_argument("--fold", type=int, help="which fold's model (default: the first trained one)")
    add_shared(p, "--device")
    add_shared(p, "--engine", "for the query images (the gallery index is built with torch, once)", default="torch")
    add_shared(p, "--index", "of the gallery, saved in RUN/search_index/", default="exact")
    add_shared(p, "--out", "a folder with search.json and a search.png grid", default_text="print only", metavar="DIR")
    deprecated(p, "--gallery", "--gallery-images")
    p.set_defaults(func=cmd_search)
