"""The web app (``anivision serve``) through FastAPI's TestClient: answers, bad input, no model."""

from __future__ import annotations

import base64
import functools
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision.cli import main
from anivision.data.faces import Box
from anivision.data.synth import generate
from anivision.web import Analyzer, create_app, load_models

from conftest import TINY_CNN, make_class_folders

pytest.importorskip("httpx")  # TestClient's transport (in the [dev] extra)
from fastapi.testclient import TestClient  # noqa: E402


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@functools.lru_cache(maxsize=None)
def huge_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A real, complete 1-bit PNG of ``width`` x ``height`` white pixels (a few kB; 400 MP decoded)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    z = zlib.compressobj(9)
    idat = b"".join(z.compress(row) for _ in range(height)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def class_image(data: Path, c: int = 0, j: int = 0) -> bytes:
    return (data / f"class{c}" / f"img{j:03d}.png").read_bytes()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """A tiny classification run, a gallery enrolled from the same classes and a tiny retrieval run."""
    tmp = tmp_path_factory.mktemp("web")
    data = make_class_folders(tmp / "data", n_classes=3, n_per_class=10)
    cache = str(tmp / "cache")
    assert main(["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--batch-size", "8", "--epochs", "10", "--strategy", "linear_probe", "--lr-head", "0.05", "--cache-dir", cache,
                 "--out", str(tmp / "run")]) == 0
    assert main(["-q", "enroll", TINY_CNN, str(data), "--weights", "none", "--img-size", "32", "--cache-dir", cache,
                 "--out", str(tmp / "gallery")]) == 0
    style = tmp / "style"
    generate("style", style, n_per_class=3, size=32, seed=0, n_works=3, roles_per_work=2, progress=False)
    assert main(["-q", "retrieval", "train", "--data", str(style), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                 "--epochs", "1", "--folds", "3", "--p", "2", "--k", "2", "--fold", "0", "--cache-dir", cache,
                 "--out", str(tmp / "style-run")]) == 0
    return {"data": data, "run": tmp / "run", "gallery": tmp / "gallery", "retrieval": tmp / "style-run", "style": style}


@pytest.fixture(scope="module")
def client(runs):
    app = create_app([runs["run"]], runs["gallery"], runs["retrieval"], top_k=2)
    with TestClient(app) as c:
        yield c


def post(client: TestClient, *files: tuple[str, bytes, str]):
    return client.post("/api/analyse", files=[("files", f) for f in files])


def assert_good(client: TestClient, data: Path) -> dict:
    r = post(client, ("a.png", class_image(data, 0), "image/png"))
    assert r.status_code == 200, r.text
    return r.json()


def decoded(uri: str) -> Image.Image:
    head, b64 = uri.split(",", 1)
    assert head.startswith("data:image/") and head.endswith(";base64")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


def test_upload_answers_labels_identity_and_similar_styles(client, runs):
    answer = assert_good(client, runs["data"])
    (image,) = answer["images"]
    assert image["name"] == "a.png" and (image["width"], image["height"]) == (40, 40)
    (face,) = image["faces"]  # 40 px: no detection, the whole image is the face
    assert face["box"] is None and decoded(face["crop"]).size == (40, 40)
    (clf,) = face["classifiers"]
    assert clf["name"] == "run" and len(clf["top"]) == 2
    assert clf["top"][0]["label"] == "class0"
    assert 0 < clf["top"][1]["prob"] <= clf["top"][0]["prob"] <= 1
    overlay = decoded(clf["overlay"])  # Grad-CAM++ of the predicted class, at the model's input size
    assert overlay.format == "PNG" and overlay.size == (32, 32) and clf["overlay_label"] == "class0"
    ident = face["identity"]
    assert ident["label"] in ("class0", "class1", "class2", "unknown")
    assert [t["label"] for t in ident["top"]][0] in ("class0", "unknown") and ident["known"] == (ident["label"] != "unknown")
    similar = face["similar"]
    assert len(similar) == 2 and similar[0]["dist"] <= similar[1]["dist"]
    assert similar[0]["work"].startswith("work_") and decoded(similar[0]["thumb"]).size[0] > 0
    assert answer["timings"]["total"] > 0


def test_several_images_in_one_request_each_get_their_labels(client, runs):
    data = runs["data"]
    r = post(client, ("red.png", class_image(data, 0, 1), "image/png"), ("green.png", class_image(data, 1, 1), "image/png"),
             ("blue.jpg", _jpeg(data / "class2" / "img001.png"), "image/jpeg"))
    assert r.status_code == 200, r.text
    names = [im["name"] for im in r.json()["images"]]
    labels = [im["faces"][0]["classifiers"][0]["top"][0]["label"] for im in r.json()["images"]]
    assert names == ["red.png", "green.png", "blue.jpg"] and labels == ["class0", "class1", "class2"]


def _jpeg(path: Path) -> bytes:
    buf = io.BytesIO()
    Image.open(path).save(buf, "JPEG", quality=95)
    return buf.getvalue()


def _truncated_png() -> bytes:
    rng = np.random.default_rng(0)
    whole = png_bytes(Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)))
    return whole[: len(whole) // 2]


BAD_UPLOADS = {
    "text": (("notes.txt", b"this is not an image\n" * 10, "text/plain"), 415, "notes.txt: not an image"),
    "zero-byte": (("empty.png", b"", "image/png"), 400, "empty.png: empty file"),
    "truncated": (("cut.png", _truncated_png(), "image/png"), 400, "cut.png: truncated image"),
    "20000x20000": (("huge.png", huge_png(), "image/png"), 413, "huge.png: image of 400 megapixels is too large"),
}


@pytest.mark.parametrize("case", sorted(BAD_UPLOADS))
def test_bad_upload_is_refused_with_a_message_and_the_server_keeps_serving(client, runs, case):
    upload, status, message = BAD_UPLOADS[case]
    r = post(client, upload)
    assert r.status_code == status and message in r.json()["error"]
    # A bad file among good ones: the request is refused as a whole, naming the bad file.
    r = post(client, ("ok.png", class_image(runs["data"]), "image/png"), upload)
    assert r.status_code == status and message in r.json()["error"]
    assert_good(client, runs["data"])


def test_requests_without_images_or_not_multipart_are_refused(client, runs):
    r = client.post("/api/analyse", data={"note": "no file"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = client.post("/api/analyse", files=[("note", (None, b"text only"))])
    assert r.status_code == 400 and "no image in the request" in r.json()["error"]
    r = client.post("/api/analyse", content=b"\x89PNG...", headers={"content-type": "image/png"})
    assert r.status_code == 400 and "multipart/form-data" in r.json()["error"]
    r = client.post("/api/analyse", content=b"--x\r\ngarbage", headers={"content-type": "multipart/form-data; boundary=x"})
    assert r.status_code == 400
    r = post(client, *[(f"{i}.png", class_image(runs["data"]), "image/png") for i in range(17)])
    assert r.status_code == 413 and "at most 16" in r.json()["error"]
    assert client.get("/api/analyse").status_code == 405
    assert_good(client, runs["data"])


def test_image_over_the_pixel_cap_is_refused_from_its_header(runs):
    app = create_app([runs["run"]], max_pixels=100 * 100)
    with TestClient(app) as c:
        r = post(c, ("wide.png", huge_png(2000, 10), "image/png"), ("a.png", class_image(runs["data"]), "image/png"))
        assert r.status_code == 413 and "wide.png: image of 2,000 x 10 pixels (0.02 megapixels) is too large" in r.json()["error"]
        assert post(c, ("a.png", class_image(runs["data"]), "image/png")).status_code == 200


def test_upload_over_the_byte_cap_is_refused(runs):
    app = create_app([runs["run"]], max_upload_bytes=10_000)
    with TestClient(app) as c:
        big = png_bytes(Image.fromarray(np.random.default_rng(0).integers(0, 255, (128, 128, 3), dtype=np.uint8)))
        assert len(big) > 4 * 10_000  # past 4x the cap: refused from Content-Length, without reading on
        for upload in (big, big[:15_000]):
            r = post(c, ("big.png", upload, "image/png"))
            assert r.status_code == 413 and "at most 0.01 MB per request" in r.json()["error"]
        assert post(c, ("a.png", class_image(runs["data"]), "image/png")).status_code == 200


def test_no_model_loaded_is_a_message_and_the_page_still_serves():
    with TestClient(create_app()) as c:
        page = c.get("/")
        assert page.status_code == 200 and "<title>anivision</title>" in page.text
        info = c.get("/api/info").json()
        assert info["models"]["classifiers"] == [] and "no model loaded" in info["no_model_message"]
        r = post(c, ("a.png", png_bytes(Image.new("RGB", (40, 40))), "image/png"))
        assert r.status_code == 409 and "no model loaded" in r.json()["error"] and "--run" in r.json()["error"]


def test_faces_are_cropped_from_an_illustration(runs):
    class TwoFaces:
        def detect(self, grey: np.ndarray) -> list[Box]:
            assert grey.shape == (200, 320)
            return [Box(20, 30, 60, 60, 2.0), Box(200, 60, 80, 80, 3.0), Box(5, 5, 10, 10, 9.0)]  # the last: too small

    models = load_models([runs["run"]])
    with TestClient(create_app(analyzer=Analyzer(models, top_k=3, detector=TwoFaces()))) as c:
        canvas = Image.new("RGB", (320, 200), (255, 255, 255))
        r = post(c, ("scene.png", png_bytes(canvas), "image/png"))
    assert r.status_code == 200, r.text
    faces = r.json()["images"][0]["faces"]
    assert [f["box"] for f in faces] == [[200, 60, 80, 80], [20, 30, 60, 60]]  # best score first
    assert [decoded(f["crop"]).size for f in faces] == [(120, 120), (90, 90)]  # square, 25 % margin each side
    assert all(len(f["classifiers"][0]["top"]) == 3 for f in faces)


def test_offline_page_no_docs_and_nothing_written_outside_the_temp_folder(runs):
    before = {p: sorted(x.name for x in runs[p].rglob("*")) for p in ("run", "gallery", "retrieval", "style")}
    app = create_app([runs["run"]], runs["gallery"], runs["retrieval"])
    workdir = app.state.workdir
    with TestClient(app) as c:
        assert workdir.is_dir() and list(workdir.rglob("*.npz"))  # the retrieval gallery's index lives there
        page = c.get("/")
        for url in ("/docs", "/redoc", "/openapi.json"):
            assert c.get(url).status_code == 404
        assert "default-src 'none'" in page.headers["content-security-policy"]
        assert "http://" not in page.text and "https://" not in page.text and "//cdn" not in page.text
        assert_good(c, runs["data"])
        post(c, ("huge.png", huge_png(), "image/png"))
    assert not workdir.exists()
    assert {p: sorted(x.name for x in runs[p].rglob("*")) for p in before} == before


def test_wrong_folder_kinds_are_one_line_errors(runs, tmp_path):
    from anivision.errors import AnivisionError

    with pytest.raises(AnivisionError, match="--run .*gallery folder, expected a classifier"):
        create_app([runs["gallery"]])
    with pytest.raises(AnivisionError, match="--gallery .*classifier folder, expected a gallery"):
        create_app(gallery=runs["run"])
    with pytest.raises(AnivisionError, match="no such run folder"):
        create_app([tmp_path / "missing"])
    assert main(["-q", "serve", "--run", str(tmp_path / "missing"), "--port", "0"]) == 2


def test_serve_on_a_busy_port_is_a_one_line_error(capsys):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        assert main(["-q", "serve", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"--port {port}: cannot listen on 127.0.0.1:{port}" in err and "pick another --port" in err
    assert main(["-q", "serve", "--port", "70000"]) == 2 and "--port must be 0-65535" in capsys.readouterr().err
