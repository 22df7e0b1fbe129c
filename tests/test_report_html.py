"""``report.html``: one self-contained page per run kind (train, evaluate, bench, few-shot grid, retrieval).

Every report must open from disk with no network: no http(s) URL in any ``src``/``href``, every
``<img>`` a PNG data URI that decodes. Also the converter itself and the misclassified-images page.
"""

from __future__ import annotations

import base64
import io
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anivision.cli import main
from anivision.data.cache import DecodedImages
from anivision.data.synth import generate
from anivision.data.transforms import DataConfig
from anivision.models.backbone import create_backbone
from anivision.models.classifier import Classifier
from anivision.reports.html import markdown_to_html, render_html, write_html_report
from anivision.reports.mistakes import mistakes_section

from conftest import TINY_CNN, make_class_folders


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[str] = []
        self.refs: list[tuple[str, str, str]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "srcset", "poster", "data", "action") and value is not None:
                self.refs.append((tag, name, value))
                if tag == "img" and name == "src":
                    self.imgs.append(value)


def assert_self_contained(path: Path, min_images: int = 1) -> list[Image.Image]:
    """No web reference anywhere; every <img> is a PNG data URI that decodes. Returns the images."""
    text = path.read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(text)
    for tag, name, value in parser.refs:
        assert not value.lower().startswith(("http:", "https:", "//", "ftp:", "file:")), (tag, name, value[:80])
    assert "url(" not in text.lower() and "@import" not in text.lower()  # no CSS fetches either
    images = []
    for src in parser.imgs:
        assert src.startswith("data:image/png;base64,"), src[:60]
        raw = base64.b64decode(src.split(",", 1)[1], validate=True)
        img = Image.open(io.BytesIO(raw))
        img.load()
        assert img.format == "PNG" and img.width > 0 and img.height > 0
        images.append(img)
    assert len(images) >= min_images, f"{path}: {len(images)} images"
    return images


def test_converter_escapes_embeds_and_drops_web_links(tmp_path):
    Image.new("RGB", (4, 3), "red").save(tmp_path / "a.png")
    Image.new("RGB", (5, 5), "blue").save(tmp_path / "b.jpg")
    md = "\n".join([
        "# Run <script>alert(1)</script>", "", "Some **bold** and `a|b <c>` and *em*.", "",
        "| metric | value |", "|---|---:|", "| acc | 87.5% |", "| a\\|b | [csv](results.csv) |", "",
        "![plot](a.png)", "", "![jpeg](b.jpg)", "", "![gone](missing.png)", "",
        "- see [the paper](https://example.org/x.pdf)", "- [local](table.md)", "",
        "```json", '{"k": "<v>"}', "```",
    ])
    (tmp_path / "report.md").write_text(md)
    out = write_html_report(tmp_path / "report.md")
    assert out == tmp_path / "report.html"
    text = out.read_text()
    assert "<script>" not in text and "&lt;script&gt;" in text
    assert "<strong>bold</strong>" in text and "<code>a|b &lt;c&gt;</code>" in text and "<em>em</em>" in text
    assert '<td class="r">87.5%</td>' in text and "<td>a|b</td>" in text and '<a href="results.csv">csv</a>' in text
    assert "example.org" not in text.split("</style>")[1].split("the paper")[0] and "https://" not in text
    assert '<a href="table.md">local</a>' in text and "image not available: missing.png" in text
    assert "&quot;k&quot;: &quot;&lt;v&gt;&quot;" in text
    imgs = assert_self_contained(out, min_images=2)
    assert sorted(i.size for i in imgs) == [(4, 3), (5, 5)]  # the JPEG was converted to PNG
    body, heads = markdown_to_html("## A\n\n## A\n")
    assert [h[1] for h in heads] == ["a", "a-2"]
    assert "<h1>Given</h1>" in render_html("plain text", title="Given")


@pytest.fixture(scope="module")
def reports(tmp_path_factory) -> dict[str, Path]:
    """One tiny run of every kind that writes a report."""
    root = tmp_path_factory.mktemp("html")
    cache = root / "cache"
    data = make_class_folders(root / "data", n_classes=3, n_per_class=10, size=32)
    tiny = ["--backbone", TINY_CNN, "--weights", "none", "--img-size", "32", "--cache-dir", str(cache)]
    out = {}
    run = root / "run"
    assert main(["-q", "train", "--data", str(data), *tiny, "--batch-size", "8", "--epochs", "2", "--strategy", "full", "--out", str(run)]) == 0
    out["train"] = run / "report.html"
    assert main(["-q", "evaluate", str(run), "--data", str(data), "--out", str(root / "eval")]) == 0
    out["evaluate"] = root / "eval" / "report.html"
    assert main(["-q", "bench", "--data", str(data), "--backbones", TINY_CNN, "--strategies", "linear_probe,full", "--seeds", "1",
                 "--weights", "none", "--img-size", "32", "--epochs", "1", "--batch-size", "8", "--cache-dir", str(cache),
                 "--out", str(root / "bench")]) == 0
    out["bench"] = root / "bench" / "report.html"
    fs_data = make_class_folders(root / "fs", n_classes=5, n_per_class=8, size=32)
    assert main(["-q", "fewshot", "evaluate", "--data", str(fs_data), *tiny, "--grid", "--n-query", "2", "--episodes", "10",
                 "--out", str(root / "fewshot")]) == 0
    out["fewshot"] = root / "fewshot" / "report.html"
    style = root / "style"
    generate("style", style, n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    assert main(["-q", "retrieval", "train", "--data", str(style), *tiny, "--epochs", "1", "--folds", "2", "--p", "3", "--k", "2",
                 "--out", str(root / "retrieval")]) == 0
    out["retrieval"] = root / "retrieval" / "report.html"
    return out


@pytest.mark.parametrize("kind,min_images", [("train", 5), ("evaluate", 3), ("bench", 2), ("fewshot", 0), ("retrieval", 2)])
def test_every_run_kind_writes_a_self_contained_report(reports, kind, min_images):
    path = reports[kind]
    assert path.is_file()
    assert_self_contained(path, min_images)
    md = path.with_name("fewshot.md" if kind == "fewshot" else "bench.md" if kind == "bench" else "report.md")
    text = path.read_text()
    for line in md.read_text().splitlines():  # every heading of the markdown is a heading of the page
        if line.startswith("## "):
            assert f">{line[3:].strip().split('`')[0].replace('&', '&amp;').replace('<', '&lt;')}" in text, line


def test_train_report_has_the_misclassified_page(reports):
    run = reports["train"].parent
    md = (run / "report.md").read_text()
    m = json.loads((run / "metrics.json").read_text())
    cm = np.asarray(m["confusion_matrix"])
    n_wrong = int(cm.sum() - np.trace(cm))
    assert "## Misclassified test images" in md
    if n_wrong:
        assert f"{n_wrong} of {m['n_images']} test images misclassified" in md and "(mistakes.png)" in md
        grid = Image.open(run / "mistakes.png")
        assert grid.format == "PNG" and grid.width > grid.height
        assert md.count("| `img") == min(n_wrong, 24)
    else:
        assert "every test image was classified correctly" in md


def test_mistakes_section_draws_overlays_and_caps(tmp_path):
    torch.manual_seed(0)
    model = Classifier(create_backbone(TINY_CNN, "none", 64), 3).eval()
    dcfg = DataConfig(64, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25), 1.0)
    rng = np.random.default_rng(0)
    n = 30
    decoded = DecodedImages(rng.integers(0, 255, (n + 1, 64, 64, 3), dtype=np.uint8), np.array([True] * n + [False]),
                            {"bad.png": "bad.png: unreadable"}, [f"img{i}.png" for i in range(n)] + ["bad.png"])
    probs = rng.dirichlet(np.ones(3), size=n)
    labels = (probs.argmax(1) + 1) % 3  # every image wrong
    lines = mistakes_section(tmp_path, model, dcfg, decoded, np.arange(n + 1), labels, probs, ["a", "b", "c"], cap=5)
    text = "\n".join(lines)
    assert f"{n} of {n} test images misclassified; the 5 most confident of {n} shown" in text
    confs = [float(line.rsplit("|", 2)[1].strip().rstrip("%")) for line in lines if line.startswith("| `img")]
    assert len(confs) == 5 and confs == sorted(confs, reverse=True)
    assert Image.open(tmp_path / "mistakes.png").format == "PNG"
    ok = mistakes_section(tmp_path, model, dcfg, decoded, np.arange(n), probs.argmax(1), probs, ["a", "b", "c"])
    assert "every test image was classified correctly" in "\n".join(ok) and not (tmp_path / "mistakes.png").exists()
