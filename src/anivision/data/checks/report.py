"""The ``check.md`` and ``check.json`` report of a :func:`~anivision.data.checks.check_dataset` result."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from anivision.errors import AnivisionError
from anivision.files import atomic_write_text

# How many entries of each list check.md shows; check.json always has everything.
_MD_LIMIT = 50


def has_blocking_problems(result: dict[str, Any]) -> bool:
    """True when the result shows leakage or label conflicts (what ``--strict`` fails on)."""
    return bool(result["leakage"] or result["label_conflicts"])


def _cell(text: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _short(path: str, root: str) -> str:
    """``path`` relative to the dataset root when it lies inside it (shorter tables)."""
    try:
        rel = os.path.relpath(path, root)
    except ValueError:  # other drive on Windows
        return path
    return path if rel.startswith("..") else rel


def _group_section(title: str, why: str, groups: list[list[str]], result: dict[str, Any]) -> list[str]:
    lines = [f"## {title} ({len(groups)} group{'s' if len(groups) != 1 else ''})", "", why, ""]
    if not groups:
        return lines + ["None.", ""]
    files, root = result["files"], result["root"]
    lines += ["| group | file | class | split | size |", "|---:|---|---|---|---|"]
    for g, group in enumerate(groups[:_MD_LIMIT], start=1):
        for path in group:
            f = files.get(path, {})
            size = "x".join(map(str, f["size"])) if f.get("size") else ""
            lines.append(f"| {g} | {_cell(_short(path, root))} | {_cell(f.get('label', ''))} | {f.get('split') or ''} | {size} |")
    if len(groups) > _MD_LIMIT:
        lines.append(f"\n... {len(groups) - _MD_LIMIT} more group(s) in check.json.")
    return lines + [""]


def _list_section(
    title: str, paths: list[str], root: str, extra: dict[str, str] | None = None, level: int = 2
) -> list[str]:
    lines = [f"{'#' * level} {title} ({len(paths)})", ""]
    if not paths:
        return lines + ["None.", ""]
    for p in paths[:_MD_LIMIT]:
        lines.append(f"- `{_short(p, root)}`" + (f": {extra[p]}" if extra and p in extra else ""))
    if len(paths) > _MD_LIMIT:
        lines.append(f"- ... {len(paths) - _MD_LIMIT} more in check.json")
    return lines + [""]


def render_markdown(result: dict[str, Any]) -> str:
    """The human-readable report of a :func:`check_dataset` result."""
    root = result["root"]
    n_conf, n_leak = len(result["label_conflicts"]), len(result["leakage"])
    verdict = "**Blocking problems**: leakage or label conflicts found (`--strict` fails)." if (
        n_conf or n_leak
    ) else "No leakage and no label conflicts."
    s = result["settings"]
    lines = [
        f"# Data check: `{root}`",
        "",
        verdict,
        "",
        "| check | result |",
        "|---|---:|",
        f"| image files | {result['n_images']} |",
        f"| readable | {result['n_readable']} |",
        f"| corrupt | {len(result['corrupt'])} |",
        f"| exact-duplicate groups | {len(result['duplicates'])} |",
        f"| near-duplicate groups | {len(result['near_duplicates'])} |",
        f"| label conflicts | {n_conf} |",
        f"| leakage across splits | {n_leak} |",
        f"| tiny (< {s['min_size']} px) | {len(result['tiny'])} |",
        f"| greyscale | {result['n_grayscale']} ({100 * result['grayscale_fraction']:.1f}%) |",
        f"| non-image files | {len(result['ignored'])} |",
        "",
        "## Counts",
        "",
    ]
    counts = result["counts"]
    if counts["per_class_split"]:
        lines += ["| class | images | train | val | test |", "|---|---:|---:|---:|---:|"]
        for c, n in counts["per_class"].items():
            ps = counts["per_class_split"][c]
            lines.append(f"| {_cell(c)} | {n} | {ps['train']} | {ps['val']} | {ps['test']} |")
        ps = counts["per_split"]
        lines.append(f"| **all** | **{result['n_readable']}** | {ps['train']} | {ps['val']} | {ps['test']} |")
        if ps.get("unassigned"):
            lines.append(f"\n{ps['unassigned']} readable image(s) are in no split.")
    else:
        lines += ["| class | images |", "|---|---:|"]
        lines += [f"| {_cell(c)} | {n} |" for c, n in counts["per_class"].items()]
        lines.append(f"| **all** | **{result['n_readable']}** |")
    if result["empty_classes"]:
        lines.append(f"\nEmpty class folders: {', '.join(result['empty_classes'])}.")
    lines.append("")
    lines += _list_section("Corrupt files", result["corrupt"], root, result["corrupt_reasons"])
    lines += _group_section(
        "Leakage", "Copies of one picture (exact or near) in different split parts: test scores will be too high.",
        result["leakage"], result,
    )
    lines += _group_section(
        "Label conflicts", "Copies of one picture (exact or near) filed under different classes.",
        result["label_conflicts"], result,
    )
    lines += _group_section("Exact duplicates", "Byte-identical files (same sha1).", result["duplicates"], result)
    lines += _group_section(
        "Near duplicates",
        f"The same picture resized, re-compressed or lightly cropped (pHash <= {s['phash_threshold']} bits, "
        f"dHash <= {s['dhash_threshold']} bits, DCT correlation >= {s['min_correlation']}"
        + (f", no 8x8 block of the 64 px thumbnails differing by more than {s['max_local_difference']} sd" if "max_local_difference" in s else "")
        + "). "
        "Groups may also hold byte-identical copies.",
        result["near_duplicates"], result,
    )
    sizes = {p: "x".join(map(str, f["size"])) for p, f in result["files"].items() if f.get("size")}
    lines += _list_section(f"Tiny images, shorter side < {s['min_size']} px", result["tiny"], root, sizes)
    split = result.get("split")
    if split:
        checks = (
            ("Rows whose file is missing", "missing"),
            ("Changed since the split was made (sha1 differs)", "changed"),
            ("Folder class differs from the split's label", "label_mismatch"),
            ("In the folder but in no split", "unassigned"),
        )
        lines += [f"## Split file `{split['csv']}`", ""]
        lines += [f"- {title.lower()}: {len(split[key])}" for title, key in checks] + [""]
        for title, key in checks:
            if split[key]:
                lines += _list_section(title, split[key], root, level=3)
    if result["ignored"]:
        lines += _list_section("Non-image files (ignored)", result["ignored"], root)
    return "\n".join(lines).rstrip() + "\n"


def write_check_report(result: dict[str, Any], out_dir: str | Path) -> tuple[Path, Path]:
    """Write ``check.md`` and ``check.json`` into ``out_dir`` (created if needed).

    Args:
        result: the dict :func:`check_dataset` returns.
        out_dir: report folder.

    Returns:
        ``(md_path, json_path)``.
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise AnivisionError(f"{out}: exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out / "check.md", out / "check.json"
    atomic_write_text(json_path, json.dumps(result, indent=2) + "\n")
    atomic_write_text(md_path, render_markdown(result))
    return md_path, json_path
