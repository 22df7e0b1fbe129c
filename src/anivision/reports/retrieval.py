"""The style-retrieval report: ``report.md`` with the fold table, the CMC curve, a grid of
example queries with their top-k, the fold-0 training curves and the per-work AP.

Works on the JSON summaries the retrieval task writes (``metrics.json``), so a report can be
rebuilt from a run folder alone.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from anivision.errors import AnivisionError
from anivision.files import atomic_write_text
from anivision.reports.html import write_html_report
from anivision.reports.plots import plot_cmc, plot_image_grid, plot_training_curves

log = logging.getLogger(__name__)

#: Summary metrics averaged over folds, in report order (LSASRD reports mINP / mAP / R1 / R5).
SUMMARY_KEYS = ("mINP", "mAP", "rank1", "rank5", "rank10")


def _pct(x: float) -> str:
    return f"{100.0 * x:.2f}"


def format_table(summary: dict[str, Any]) -> str:
    """Markdown table: one row per fold, then mean +/- std (percent, as LSASRD reports)."""
    head = "| fold | test works | query imgs | gallery imgs | mINP | mAP | rank-1 | rank-5 | rank-10 |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for r in summary["folds"]:
        excl = f" ({len(r['excluded_works'])} excluded)" if r["excluded_works"] else ""
        lines.append(
            f"| {r['fold']} | {len(r['test_works'])}{excl} | {r['n_query']} | {r['n_gallery']} | "
            + " | ".join(_pct(r[k]) for k in SUMMARY_KEYS) + " |"
        )
    m, s = summary["mean"], summary["std"]
    lines.append("| **mean ± std** | | | | " + " | ".join(f"**{_pct(m[k])} ± {_pct(s[k])}**" for k in SUMMARY_KEYS) + " |")
    return "\n".join(lines)


def _header(summary: dict[str, Any]) -> list[str]:
    """Title, model, data and protocol lines, and the command when recorded."""
    model, proto, data, kind = summary["model"], summary["protocol"], summary["data"], summary["kind"]
    lines = [
        f"# Style retrieval, cross-role protocol: {model['backbone']} ({kind})",
        "",
        f"- model: `{model['backbone']}`, weights `{model['weights']}`, {model['img_size']} px, distance {model['metric']}"
        + (f", preset {model['preset']}, {model['epochs']} epochs, PK {model['p']}×{model['k']}" if kind == "trained" else ", no re-ID training"),
        f"- data: `{data['source']}`: {data['images']} images, {data['works']} works, {data['roles']} roles",
        f"- protocol: {proto['folds']}-fold by work (seed {proto['seed']}), {100 * proto['query_ratio']:.0f}% of each test work's "
        f"roles as queries, the rest as gallery; no role on both sides; {summary['n_folds']} fold(s) reported",
    ]
    if summary["excluded_works"]:
        lines.append(
            f"- {len(summary['excluded_works'])} test work(s) with a single role could not be split and were excluded: "
            + ", ".join(summary["excluded_works"][:20])
        )
    if summary.get("command"):
        lines += ["", "```", summary["command"], "```"]
    return lines


def _cmc_section(out_dir: Path, summary: dict[str, Any]) -> list[str]:
    curves = {f"fold {r['fold']}": np.asarray(r["cmc"]) for r in summary["folds"]}
    if len(curves) > 1:
        curves["mean"] = np.asarray(summary["cmc_mean"])
    gallery = max((int(r.get("n_gallery") or 0) for r in summary["folds"]), default=0) or None
    plot_cmc(curves, out_dir / "cmc.png", title=f"CMC, {summary['model']['backbone']} ({summary['kind']})", max_rank=gallery)
    return ["![CMC curve](cmc.png)", ""]


def _examples_section(out_dir: Path, summary: dict[str, Any]) -> list[str]:
    """``examples.png`` from the first fold with example queries; empty when none or an image moved."""
    ex_fold = next((r for r in summary["folds"] if r.get("examples")), None)
    if ex_fold is None:
        return []
    rows = []
    for ex in ex_fold["examples"]:
        row: list[tuple[Any, str, bool | None]] = [(ex["query"], f"query: {ex['work']}", None)]
        row += [(t["path"], f"{i + 1}. {t['work']} ({t['dist']:.3f})", t["correct"]) for i, t in enumerate(ex["top"])]
        rows.append(row)
    try:
        plot_image_grid(rows, out_dir / "examples.png", title=f"fold {ex_fold['fold']}: queries and their top-{len(ex_fold['examples'][0]['top'])}")
    except AnivisionError as exc:  # an image moved since evaluation: the report still gets written
        log.warning("example grid skipped: %s", exc)
        return []
    return [
        "## Example queries",
        "",
        f"Fold {ex_fold['fold']}: each row is a query (first image) and its nearest gallery images; "
        "green = same work (correct), red = another work.",
        "",
        "![examples](examples.png)",
        "",
    ]


def _per_work_section(summary: dict[str, Any]) -> list[str]:
    lines = [
        "## Per-work AP (%)",
        "",
        "Every work is a test work in exactly one fold; AP and INP are averaged over its query images.",
        "",
        "| work | fold | query imgs | gallery imgs | AP | INP |",
        "|---|---|---|---|---|---|",
    ]
    rows_w = [(w, r["fold"], v) for r in summary["folds"] for w, v in r["per_work"].items()]
    for w, f, v in sorted(rows_w, key=lambda t: -t[2]["AP"]):
        lines.append(f"| {w} | {f} | {v['n_query']} | {v['n_gallery']} | {_pct(v['AP'])} | {_pct(v['INP'])} |")
    return lines


def write_report(out_dir: str | Path, summary: dict[str, Any]) -> Path:
    """``out_dir/report.md`` with the fold table, ``cmc.png``, ``examples.png`` and per-work AP."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = _header(summary) + ["", "## Results (%)", "", format_table(summary), ""]
    lines += _cmc_section(out_dir, summary)
    lines += _examples_section(out_dir, summary)
    hist_path = out_dir / "fold0" / "history.json"
    if summary["kind"] == "trained" and hist_path.exists():
        plot_training_curves(json.loads(hist_path.read_text()), out_dir / "training_fold0.png")
        lines += ["## Training (fold 0)", "", "![training curves](training_fold0.png)", ""]
    lines += _per_work_section(summary)
    path = out_dir / "report.md"
    atomic_write_text(path, "\n".join(lines) + "\n")
    write_html_report(path)
    return path
