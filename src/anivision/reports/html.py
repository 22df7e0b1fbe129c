"""``report.html``: a report's markdown as one self-contained page (images embedded, CSS inline).

The converter reads the small markdown subset anivision's reports write (headings, pipe tables
with alignment rows, ``![alt](file.png)`` images, ``- `` lists, fenced code, paragraphs,
``**bold**``, ``*em*``, `` `code` `` and ``[text](link)``) and nothing else; every character of
the text is HTML-escaped. Images are read from the report's folder and embedded as
``data:image/png;base64`` URIs (other formats are converted to PNG), so the page opens from
disk, on another machine, with no network: it references no URL at all. Links to files beside
the report stay relative; links to the web become plain text.
"""

from __future__ import annotations

import base64
import html
import io
import re
from pathlib import Path

from PIL import Image

from anivision.files import atomic_write_text

CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f5f6f8;color:#1d2330;line-height:1.45}
main{max-width:1100px;margin:0 auto;padding:24px 32px 64px;background:#fff;min-height:100vh;box-shadow:0 0 12px rgba(0,0,0,.06)}
h1{font-size:1.7em;border-bottom:2px solid #3b6fb6;padding-bottom:.25em}
h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #d9dde5;padding-bottom:.2em}
h3{font-size:1.1em;margin-top:1.4em}
table{border-collapse:collapse;margin:.8em 0;font-size:.92em}
th,td{border:1px solid #d0d5de;padding:4px 10px;vertical-align:top}
th{background:#eef2f8;text-align:left}
tr:nth-child(even) td{background:#fafbfc}
td.r,th.r{text-align:right}td.c,th.c{text-align:center}
img{max-width:100%;height:auto;display:block;margin:.6em 0;border:1px solid #e3e6ec}
figure{margin:1em 0}figcaption{color:#5a6272;font-size:.85em}
pre{background:#f3f4f7;padding:10px 12px;overflow:auto;font-size:.85em;border-radius:4px}
code{background:#f3f4f7;padding:0 3px;border-radius:3px;font-size:.9em}
pre code{background:none;padding:0}
nav{font-size:.9em;background:#f7f9fc;border:1px solid #e1e6ef;padding:8px 14px;border-radius:4px}
nav a{margin-right:14px;color:#2d5b9a;text-decoration:none}
.missing{color:#b3261e}
footer{margin-top:3em;color:#7a8292;font-size:.8em}
"""

_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:|^//")


def png_data_uri(path: str | Path) -> str:
    """``data:image/png;base64,...`` of an image file (converted to PNG when it is another format)."""
    raw = Path(path).read_bytes()
    if not raw.startswith(b"\x89PNG\r\n\x1a\n"):
        buf = io.BytesIO()
        with Image.open(io.BytesIO(raw)) as img:
            img.convert("RGBA" if img.mode in ("RGBA", "LA", "P") else "RGB").save(buf, format="PNG")
        raw = buf.getvalue()
    return "data:image/png;base64," + base64.b64encode(raw).decode("ascii")


def _slug(text: str, used: set[str]) -> str:
    base = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "section"
    slug, n = base, 1
    while slug in used:
        n += 1
        slug = f"{base}-{n}"
    used.add(slug)
    return slug


def inline(text: str, base_dir: Path | None = None) -> str:
    """One line of markdown inline syntax as escaped HTML (code spans first, then links, bold, em)."""
    out: list[str] = []
    for k, part in enumerate(re.split(r"(`[^`]*`)", text)):
        if k % 2 == 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
            continue
        pieces = []
        pos = 0
        for m in re.finditer(r"(!?)\[([^\]]*)\]\(([^)\s]*)\)", part):
            pieces.append(_emphasis(html.escape(part[pos:m.start()].replace("\\|", "|"))))
            label, target = m.group(2), m.group(3)
            if m.group(1):
                pieces.append(image_tag(label, target, base_dir))
            elif _URL.match(target) or not target:
                pieces.append(_emphasis(html.escape(label)))  # no web links: the page must load nothing
            else:
                pieces.append(f'<a href="{html.escape(target, quote=True)}">{_emphasis(html.escape(label))}</a>')
            pos = m.end()
        pieces.append(_emphasis(html.escape(part[pos:].replace("\\|", "|"))))
        out.append("".join(pieces))
    return "".join(out)


def _emphasis(escaped: str) -> str:
    escaped = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"(?<![\w*])\*(?!\s)([^*]+?)(?<!\s)\*(?![\w*])", r"<em>\1</em>", escaped)


def image_tag(alt: str, target: str, base_dir: Path | None) -> str:
    """An ``<img>`` with the file embedded, or a visible note when it cannot be (missing, remote)."""
    path = (base_dir or Path(".")) / target
    if _URL.match(target) or not path.is_file():
        return f'<span class="missing">[image not available: {html.escape(target)}]</span>'
    try:
        uri = png_data_uri(path)
    except (OSError, ValueError) as exc:
        return f'<span class="missing">[unreadable image {html.escape(target)}: {html.escape(str(exc))}]</span>'
    return f'<img src="{uri}" alt="{html.escape(alt, quote=True)}" title="{html.escape(target, quote=True)}">'


def _cells(row: str) -> list[str]:
    row = row.strip()
    row = row[1:] if row.startswith("|") else row
    row = row[:-1] if row.endswith("|") and not row.endswith("\\|") else row
    return [c.strip() for c in re.split(r"(?<!\\)\|", row)]


def _table(lines: list[str], base_dir: Path | None) -> str:
    head = _cells(lines[0])
    spec = _cells(lines[1]) if len(lines) > 1 and re.fullmatch(r"\s*\|?[\s:|-]+\|?\s*", lines[1]) else None
    body = lines[2:] if spec is not None else lines[1:]
    align = []
    for s in spec or []:
        align.append(" class=\"c\"" if s.startswith(":") and s.endswith(":") else " class=\"r\"" if s.endswith(":") else "")
    a = lambda j: align[j] if j < len(align) else ""  # noqa: E731
    rows = ["<table>", "<thead><tr>" + "".join(f"<th{a(j)}>{inline(c, base_dir)}</th>" for j, c in enumerate(head)) + "</tr></thead>", "<tbody>"]
    for line in body:
        rows.append("<tr>" + "".join(f"<td{a(j)}>{inline(c, base_dir)}</td>" for j, c in enumerate(_cells(line))) + "</tr>")
    return "\n".join(rows + ["</tbody>", "</table>"])


def markdown_to_html(text: str, base_dir: str | Path | None = None) -> tuple[str, list[tuple[int, str, str]]]:
    """The HTML body of a report's markdown, and its headings as (level, anchor, text)."""
    base = Path(base_dir) if base_dir is not None else None
    lines = text.splitlines()
    out: list[str] = []
    headings: list[tuple[int, str, str]] = []
    used: set[str] = set()
    para: list[str] = []
    i = 0

    def flush() -> None:
        if para:
            out.append("<p>" + "<br>\n".join(inline(p, base) for p in para) + "</p>")
            para.clear()

    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if stripped.startswith("```"):
            flush()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith("```"):
                j += 1
            out.append("<pre><code>" + html.escape("\n".join(lines[i + 1:j])) + "</code></pre>")
            i = j + 1
            continue
        m = re.match(r"^(#{1,6})\s+(.*)$", stripped)
        if m:
            flush()
            level, title = len(m.group(1)), m.group(2).strip()
            slug = _slug(title, used)
            headings.append((level, slug, title))
            out.append(f'<h{level} id="{slug}">{inline(title, base)}</h{level}>')
        elif stripped.startswith("|"):
            flush()
            j = i
            while j < len(lines) and lines[j].strip().startswith("|"):
                j += 1
            out.append(_table([ln.strip() for ln in lines[i:j]], base))
            i = j
            continue
        elif re.match(r"^[-*]\s+", stripped):
            flush()
            j = i
            items = []
            while j < len(lines) and re.match(r"^[-*]\s+", lines[j].strip()):
                items.append("<li>" + inline(re.sub(r"^[-*]\s+", "", lines[j].strip()), base) + "</li>")
                j += 1
            out.append("<ul>\n" + "\n".join(items) + "\n</ul>")
            i = j
            continue
        elif re.fullmatch(r"!\[[^\]]*\]\([^)\s]*\)", stripped):
            flush()
            alt = re.match(r"!\[([^\]]*)\]", stripped).group(1)  # type: ignore[union-attr]
            out.append(f"<figure>{inline(stripped, base)}<figcaption>{html.escape(alt)}</figcaption></figure>")
        elif not stripped:
            flush()
        else:
            para.append(stripped)
        i += 1
    flush()
    return "\n".join(out), headings


def render_html(markdown: str, base_dir: str | Path | None = None, title: str | None = None) -> str:
    """A whole self-contained HTML page of a report's markdown (see the module notes)."""
    body, headings = markdown_to_html(markdown, base_dir)
    page_title = title or next((t for lvl, _, t in headings if lvl == 1), "anivision report")
    toc = [f'<a href="#{slug}">{inline(t)}</a>' for lvl, slug, t in headings if lvl == 2]
    nav = f"<nav>{' '.join(toc)}</nav>" if len(toc) > 1 else ""
    if not any(lvl == 1 for lvl, _, _ in headings):
        body = f"<h1>{html.escape(page_title)}</h1>\n{nav}\n{body}"
    else:  # the contents bar goes right under the first title
        end = body.index("</h1>") + len("</h1>")
        body = f"{body[:end]}\n{nav}{body[end:]}"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{html.escape(re.sub(r'[`*]', '', page_title))}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"{body}\n<footer>Written by anivision; self-contained (images embedded), opens offline.</footer>\n"
        "</main>\n</body>\n</html>\n"
    )


def write_html_report(markdown_path: str | Path, html_path: str | Path | None = None, title: str | None = None) -> Path:
    """Write ``report.html`` (default: beside ``markdown_path``) from that markdown report, atomically."""
    md = Path(markdown_path)
    target = Path(html_path) if html_path is not None else md.with_name("report.html")
    atomic_write_text(target, render_html(md.read_text(encoding="utf-8"), md.parent, title))
    return target
