"""Few-shot reports: one accuracy cell, a list of class names, and the AniWho Table 8 grid as
markdown (``fewshot.md``)."""

from __future__ import annotations

from typing import Any, Sequence


def format_cell(r: dict[str, Any]) -> str:
    """``"75.52 ± 1.10"`` in percent, or ``"n/a"``."""
    return "n/a" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"


def class_list(names: Sequence[str], limit: int | None = 8) -> str:
    """``"a, b, c"``; beyond ``limit`` names the first ``limit`` and ``"... (N more)"``; ``"none"`` when empty."""
    names = [str(n) for n in names]
    if limit is None or len(names) <= limit:
        return ", ".join(names) or "none"
    return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"


def class_set_words(split: str, n_classes: int) -> str:
    """``"all 17 classes"`` or ``"3 test classes"``."""
    return f"all {n_classes} classes" if split == "all" else f"{n_classes} {split} classes"


def grid_markdown(results: Sequence[dict[str, Any]], common: dict[str, Any]) -> str:
    """The AniWho Table 8 layout: rows N-way, columns K-shot, accuracy ± 95% CI in percent.

    Args:
        results: one dict per cell (``n_way``, ``k_shot``, ``accuracy``, ``ci95``, ``episodes``,
            ``n_query``, and ``note`` for a cell the classes could not fill).
        common: ``run`` or ``backbone``/``weights``, ``distance``, ``split``, ``data``, ``n_classes``,
            and ``classes`` (the names, all listed).
    """
    ways = sorted({r["n_way"] for r in results})
    shots = sorted({r["k_shot"] for r in results})
    cell = {(r["n_way"], r["k_shot"]): r for r in results}
    src = f"run `{common['run']}`" if common.get("run") else f"`{common['backbone']}` ({common['weights']})"
    lines = [
        f"Few-shot accuracy (%) ± 95% CI over {results[0]['episodes']} episodes, {results[0]['n_query']} queries per class, "
        f"{common['distance']} distance; {src}; {class_set_words(common['split'], common['n_classes'])} of `{common['data']}`.",
        "",
        f"Classes: {class_list(common.get('classes') or [], None)}.",
        "",
        "| | " + " | ".join(f"{k}-shot" for k in shots) + " |",
        "|---|" + "---|" * len(shots),
    ]
    notes = []
    for n in ways:
        row = []
        for k in shots:
            r = cell.get((n, k))
            if r is None:
                row.append("")
                continue
            text = format_cell(r)
            if r.get("note"):
                notes.append(f"{n}-way {k}-shot: {r['note']}")
                text += f" [{len(notes)}]"
            row.append(text)
        lines.append(f"| {n}-way | " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {t}" for i, t in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"
