"""Benchmark: few-shot accuracy on characters from another source, with an ablation of the embedding.

Every row is a ``fewshot train`` on ``../shared/data/characters`` (the default class split,
10/3/3 with seed 0) and two ``fewshot evaluate`` runs with the documented protocol (5-way
1-shot and 5-shot, 10 queries, 1,000 episodes, seed 0; ``--grid`` computes both from one
embedding pass):

- cross-source: every class of ``../shared/data/characters-danbooru`` (6 characters of
  another source and other artists);
- same-source: the 6 unseen characters (val + test classes) of ``../shared/data/characters``.

The ImageNet row evaluates the untrained backbone's pooled features, as every earlier RESULTS
section did. The command of every row is printed beside its figures, and the table is written
to ``benchmarks/results/fewshot_cross_source.md``. Run folders are reused (training and
evaluation resume), so a second call only prints::

    python benchmarks/fewshot_cross_source.py --work /tmp/fs-xsource [--rows default,transfer-all,...]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
CHARS, OTHER = DATA / "characters", DATA / "characters-danbooru"

#: name -> (what it is, extra ``fewshot train`` flags); None: no training (ImageNet pooled features).
ROWS: dict[str, tuple[str, list[str] | None]] = {
    "imagenet": ("ImageNet pooled features, squared euclidean (the baseline of every earlier section)", None),
    "simpleshot-head": ("pooled features centred on the training mean + L2 (SimpleShot), no meta-training", ["--epochs", "0", "--parts", "head"]),
    "stage-2": ("stage -2 (112 ch) pooled, centred + L2, no meta-training", ["--epochs", "0", "--parts", "stage-2"]),
    "colour": ("colour histogram alone, centred + L2", ["--epochs", "0", "--parts", "colour"]),
    "stages": ("stages -2, -1 + head, no colour, no meta-training", ["--epochs", "0", "--parts", "stage-2,stage-1,head"]),
    "transfer": ("stages -2, -1 + head + colour, no meta-training", ["--epochs", "0"]),
    "default": ("the default recipe: `fewshot train --data ... --out RUN`, no other flag", []),
}


def run(cmd: list[str]) -> None:
    print("$ " + " ".join(shlex.quote(c) for c in cmd), flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "anivision.cli", "-q", *args]


def evaluate(model: list[str], out: Path, data: Path, extra: list[str]) -> dict[tuple[int, int], tuple[float, float]]:
    if not (out / "fewshot.json").exists():
        run(cli("fewshot", "evaluate", *model, "--data", str(data), *extra, "--grid", "--n-query", "10",
                "--episodes", "1000", "--seed", "0", "--out", str(out)))
    report = json.loads((out / "fewshot.json").read_text())
    return {(c["n_way"], c["k_shot"]): (100 * c["accuracy"], 100 * c["ci95"]) for c in report["grid"] if c.get("accuracy") is not None}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/fs-xsource", help="run folders (reused)")
    ap.add_argument("--rows", default=",".join(ROWS), help="which rows, comma-separated")
    args = ap.parse_args()
    work = Path(args.work)
    lines = ["| embedding | danbooru 5-way 1-shot | danbooru 5-way 5-shot | characters unseen 5-way 1-shot | characters unseen 5-way 5-shot | train command |",
             "|---|---|---|---|---|---|"]
    for name in args.rows.split(","):
        what, flags = ROWS[name]
        rdir = work / name
        if flags is None:
            model = ["--backbone", "tf_efficientnet_lite0", "--weights", "efficientnet_lite0_imagenet"]
            split_from = work / "transfer"  # any run with the default class split
            if not (split_from / "classes.json").exists():
                run(cli("fewshot", "train", "--data", str(CHARS), *ROWS["transfer"][1], "--out", str(split_from)))
            same = ["--class-split", str(split_from), "--class-set", "unseen"]
            train_cmd = "none"
        else:
            cmd = cli("fewshot", "train", "--data", str(CHARS), *flags, "--out", str(rdir))
            if not (rdir / "train.json").exists():
                run(cmd)
            model, same = [str(rdir)], ["--class-set", "unseen"]
            train_cmd = "`anivision fewshot train --data ../shared/data/characters " + " ".join(flags) + (" " if flags else "") + "--out RUN`"
        cross = evaluate(model, rdir / "eval-danbooru", OTHER, ["--class-set", "all"])
        own = evaluate(model, rdir / "eval-unseen", CHARS, same)
        cells = [cross.get((5, 1)), cross.get((5, 5)), own.get((5, 1)), own.get((5, 5))]
        fmt = " | ".join(f"{x[0]:.2f} ± {x[1]:.2f}" if x else "n/a" for x in cells)
        lines.append(f"| {what} | {fmt} | {train_cmd} |")
        print(lines[-1], flush=True)
    md = "\n".join(lines) + "\n\nEvaluation: `anivision fewshot evaluate RUN --data ../shared/data/characters-danbooru --class-set all --grid --n-query 10 --episodes 1000 --seed 0` (cross-source) and `... --data ../shared/data/characters --class-set unseen ...` (same source); ImageNet row: `--backbone tf_efficientnet_lite0 --weights efficientnet_lite0_imagenet` instead of RUN (`--class-split RUN` for the unseen classes).\n"
    out = ROOT / "benchmarks" / "results" / "fewshot_cross_source.md"
    out.write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
