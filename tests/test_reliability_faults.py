"""Fault injection for the rest of the reliability campaign (issue 16): a failed run's split, the
decoded-image cache on a full disk or damaged, temporary files after errors and kills, Ctrl-C,
and huge images. Each test failed before its fix; tiny data, CPU, seconds each."""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision import files
from anivision.cli import main
from anivision.data import cache as cache_mod
from anivision.data import images as images_mod
from anivision.data.cache import decode_images, decode_into, default_decode_workers
from anivision.data.images import load_image, reduce_for
from anivision.errors import AnivisionError

from conftest import TINY_CNN, make_class_folders

SRC = Path(__file__).resolve().parents[1] / "src"


def _train(data: Path, out: Path, cache: Path) -> list[str]:
    return ["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
            "--batch-size", "8", "--epochs", "1", "--strategy", "full", "--cache-dir", str(cache), "--out", str(out)]


def _temp_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if files.TEMP_NAME.match(p.name) or p.name.endswith(".tmp"))


def _dead_pid() -> int:
    """The pid of a process that has exited (for a temp file 'left by a killed process')."""
    p = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True, check=True)
    return int(p.stdout)


# ------------------------------------------------------------------ 1. a failed run keeps no split


def test_failed_run_leaves_no_split_that_a_rerun_would_reuse(tmp_path: Path, capsys) -> None:
    data, out, cache = make_class_folders(tmp_path / "data", n_per_class=8, size=32), tmp_path / "run", tmp_path / "cache"
    good = {p: p.read_bytes() for p in data.rglob("*.png")}
    for p in good:  # every image unreadable: the run fails before its first epoch
        p.write_bytes(b"\x89PNG not really")
    assert main(_train(data, out, cache)) == 2
    assert "no readable training images" in capsys.readouterr().err
    assert not (out / "split.csv").exists()
    for p, b in good.items():  # the user fixes the data and reruns the same command
        p.write_bytes(b)
    assert main(_train(data, out, cache)) == 0, capsys.readouterr().err
    assert (out / "split.csv").exists() and (out / "metrics.json").exists()


# ------------------------------------------------------------------ 2. the decoded-image cache


def _paths(tmp_path: Path, n: int = 6) -> list[str]:
    return [str(p) for p in sorted(make_class_folders(tmp_path / "imgs", n_classes=2, n_per_class=n // 2, size=24).rglob("*.png"))]


def test_cache_refuses_to_start_on_a_full_disk(tmp_path: Path, monkeypatch) -> None:
    paths, cdir = _paths(tmp_path), tmp_path / "cache"
    need = cache_mod.cache_bytes(len(paths), 16)
    assert need >= len(paths) * 16 * 16 * 3
    monkeypatch.setattr(cache_mod.shutil, "disk_usage", lambda p: type("U", (), {"free": need - 1})())
    with pytest.raises(AnivisionError) as err:
        decode_images(paths, 16, cache_dir=cdir, progress=False)
    line = str(err.value)
    assert str(cdir / "images") in line and str(need) in line and str(need - 1) in line and "\n" not in line
    assert list((cdir / "images").iterdir()) == []


def test_cache_allocation_failure_is_one_line_and_leaves_no_temp(tmp_path: Path, monkeypatch) -> None:
    """The free-space check passed but the disk filled meanwhile: fallocate fails, not SIGBUS later."""
    if not hasattr(os, "posix_fallocate"):
        pytest.skip("no posix_fallocate on this OS")
    paths, cdir = _paths(tmp_path), tmp_path / "cache"

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(cache_mod.os, "posix_fallocate", full)
    with pytest.raises(AnivisionError, match="no space left"):
        decode_images(paths, 16, cache_dir=cdir, progress=False)
    assert list((cdir / "images").iterdir()) == []


def _garble(arr: Path) -> None:
    raw = bytearray(arr.read_bytes())
    raw[-300:-100] = bytes(200)  # right size, wrong pixels
    arr.write_bytes(bytes(raw))


DAMAGE = {
    "truncated npy": lambda arr, meta: arr.write_bytes(arr.read_bytes()[:-1000]),
    "npy header garbled": lambda arr, meta: arr.write_bytes(b"\x00" * 64 + arr.read_bytes()[64:]),
    "pixels garbled, same size": lambda arr, meta: _garble(arr),
    "meta not JSON": lambda arr, meta: meta.write_text('{"size": 16, "n"'),
    "meta edited": lambda arr, meta: meta.write_text(json.dumps({**json.loads(meta.read_text()), "valid": [False] * 6})),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_cache_is_rebuilt_with_a_warning_naming_it(tmp_path: Path, caplog, damage: str) -> None:
    paths, cdir = _paths(tmp_path), tmp_path / "cache"
    fresh = decode_images(paths, 16, cache_dir=cdir, progress=False)
    expected = np.array(fresh.pixels)
    arr = next((cdir / "images").glob("*.npy"))
    DAMAGE[damage](arr, arr.with_suffix(".json"))
    with caplog.at_level(logging.WARNING, logger="anivision.data.cache"):
        again = decode_images(paths, 16, cache_dir=cdir, progress=False)
    assert f"{arr}: damaged decoded-image cache" in caplog.text
    np.testing.assert_array_equal(np.asarray(again.pixels), expected)
    assert again.valid.all()
    # The rebuilt cache is whole again: the next start reads it without a warning.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="anivision.data.cache"):
        decode_images(paths, 16, cache_dir=cdir, progress=False)
    assert "damaged" not in caplog.text


# ------------------------------------------------------------------ 3. temporary files


def test_failed_atomic_write_removes_its_temp_file(tmp_path: Path, monkeypatch) -> None:
    def replace(src, dst):
        raise OSError(errno.EROFS, "Read-only file system", str(dst))

    monkeypatch.setattr(files.os, "replace", replace)
    for write in (lambda p: files.atomic_write_text(p, "x"), lambda p: files.atomic_write_csv(p, [{"a": 1.0}], ["a"])):
        with pytest.raises(OSError):
            write(tmp_path / "out.csv")
    assert list(tmp_path.iterdir()) == []


def test_cache_killed_mid_decode_leaves_a_temp_that_the_next_start_sweeps(tmp_path: Path) -> None:
    """A real kill -9 while the cache is filled, then the next start in the same cache folder."""
    paths, cdir = _paths(tmp_path), tmp_path / "cache"
    script = (
        "import os, signal, sys\n"
        "from anivision.data import cache\n"
        "real = cache.decode_file\n"
        "calls = []\n"
        "def dying(p, size):\n"
        "    calls.append(p)\n"
        "    if len(calls) == 3: os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return real(p, size)\n"
        "cache.decode_file = dying\n"
        f"cache.decode_images({paths!r}, 16, cache_dir={str(cdir)!r}, workers=1, progress=False)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode == -signal.SIGKILL, r.stderr
    left = _temp_files(cdir)
    assert len(left) == 1 and left[0].endswith(".tmp"), left
    live = cdir / "images" / f"other.npy.{os.getpid()}.tmp"  # a write in progress elsewhere is left alone
    live.write_bytes(b"x")
    decode_images(paths, 16, cache_dir=cdir, progress=False)
    assert _temp_files(cdir) == [live.name]


def test_run_start_sweeps_temp_files_of_dead_processes(tmp_path: Path) -> None:
    data, out, cache = make_class_folders(tmp_path / "data", n_per_class=8, size=32), tmp_path / "run", tmp_path / "cache"
    out.mkdir()
    pid = _dead_pid()
    for name in (f"metrics.json.{pid}.tmp", f".model.{pid}.tmp.onnx", f"split.csv.{pid}.tmp"):
        (out / name).write_text("half")
    (out / "checkpoint").mkdir()
    (out / "checkpoint" / f"state.json.{pid}.tmp").write_text("half")
    assert main(_train(data, out, cache)) == 0
    assert _temp_files(out) == []


def test_split_write_error_leaves_no_temp(tmp_path: Path, capsys) -> None:
    data = make_class_folders(tmp_path / "data", n_per_class=4, size=24)
    (tmp_path / "s.csv").mkdir()  # --out names a folder
    assert main(["-q", "split", str(data), "--out", str(tmp_path / "s.csv")]) == 2
    assert capsys.readouterr().err.strip() == f"error: {tmp_path / 's.csv'}: is a folder; expected a file"
    assert _temp_files(tmp_path) == []


# ------------------------------------------------------------------ 4. Ctrl-C


def test_ctrl_c_while_the_cli_imports_prints_one_line() -> None:
    """The console script imports torch before main() runs: Ctrl-C there is one line too."""
    script = (
        "import sys\n"
        "class Interrupt:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'torch': raise KeyboardInterrupt\n"
        "sys.meta_path.insert(0, Interrupt())\n"
        "sys.argv = ['anivision', 'train', '--help']\n"
        "from anivision.cli import main\n"  # what the console script does
        "sys.exit(main())\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.stderr == "interrupted\n" and r.returncode != 0


@pytest.mark.parametrize("argv,where,resumable", [
    (["train", "--data", "D", "--out", "O", "--weights", "none"], "anivision.commands.classify.train_classifier", True),
    (["split", "D", "--out", "s.csv"], "anivision.commands.classify.load_labeled", False),
    (["data", "check", "D"], "anivision.commands.data.check_dataset", False),
])
def test_ctrl_c_says_resume_only_for_commands_that_resume(tiny_data, tmp_path, monkeypatch, capsys, argv, where, resumable) -> None:
    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(where, interrupted)
    argv = [{"D": str(tiny_data), "O": str(tmp_path / "run"), "s.csv": str(tmp_path / "s.csv")}.get(a, a) for a in argv]
    assert main(["-q", *argv]) == 130
    err = capsys.readouterr().err
    assert err == ("interrupted (rerun the same command to resume)\n" if resumable else "interrupted\n")


# ------------------------------------------------------------------ 5. huge images


def test_large_jpeg_decodes_at_a_reduced_scale(tmp_path: Path, monkeypatch) -> None:
    p = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (800, 1200, 3), dtype=np.uint8)).save(p, quality=90)
    monkeypatch.setattr(images_mod, "LARGE_PIXELS", 100_000)  # 800 x 1200 counts as large here
    seen = []
    real_load = Image.Image.load

    def spy_load(self):
        seen.append(self.size)
        return real_load(self)

    monkeypatch.setattr(Image.Image, "load", spy_load)
    img = load_image(p, min_side=32)
    assert seen and max(w * h for w, h in seen) <= (1200 // 8) * (800 // 8) * 4  # draft: DCT-scaled, not full size
    assert min(img.size) >= 3 * 32
    assert load_image(p).size == (1200, 800)  # without a target size: full size, as before


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L", "P"])
def test_reduce_in_strips_gives_pil_reduce_pixels(mode: str) -> None:
    rng = np.random.default_rng(1)
    img = Image.fromarray(rng.integers(0, 255, (1003, 1337, 4), dtype=np.uint8), "RGBA")
    img = img.convert(mode) if mode != "P" else img.convert("RGB").quantize(64)
    factor = int(min(img.size) / (3 * 20))
    want = (img if mode != "P" else img.convert("RGB")).reduce(factor)
    got = reduce_for(img, 20)
    assert got.size == want.size
    np.testing.assert_array_equal(np.asarray(got), np.asarray(want))


def test_large_png_peak_memory_is_one_image_not_several(tmp_path: Path) -> None:
    """Real memory, in a fresh process: a 4000 x 4000 RGBA PNG (64 MB decoded) through the cache's
    decoder. Before, RGBA compositing and resizing held four full copies at once (~4x)."""
    p = tmp_path / "big.png"
    Image.new("RGBA", (4000, 4000), (200, 30, 30, 128)).save(p, compress_level=1)
    script = (
        "import resource, sys\n"
        "from anivision.data import images\n"
        "images.LARGE_PIXELS = 1_000_000\n"
        "from anivision.data.cache import decode_file\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"img, err = decode_file({str(p)!r}, 64)\n"
        "assert err is None and img.shape == (64, 64, 3), err\n"
        "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)\n"
    )
    r = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(SRC)})
    assert r.returncode == 0, r.stderr
    decoded = 4000 * 4000 * 4
    assert int(r.stdout) < 1.6 * decoded, f"peak grew by {int(r.stdout) / 2**20:.0f} MB for a {decoded / 2**20:.0f} MB image"


def test_decoding_threads_are_bounded(monkeypatch) -> None:
    monkeypatch.setattr(cache_mod.os, "cpu_count", lambda: 64)
    assert default_decode_workers() == 4
    active, peak, lock = [0], [0], threading.Lock()

    def decode(i: int):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)  # hold the thread so that others overlap (no assertion on time)
        with lock:
            active[0] -= 1
        return np.zeros((2, 2, 3), np.uint8), None

    decode_into(np.zeros((40, 2, 2, 3), np.uint8), list(range(40)), [str(i) for i in range(40)], decode, False, "t")
    assert 1 <= peak[0] <= 4


def test_one_large_image_is_decoded_at_a_time(tmp_path: Path, monkeypatch) -> None:
    paths = []
    for i in range(6):
        p = tmp_path / f"{i}.png"
        Image.new("RGB", (400, 300), (i * 40, 0, 0)).save(p)
        paths.append(str(p))
    monkeypatch.setattr(images_mod, "LARGE_PIXELS", 10_000)
    active, peak, lock = [0], [0], threading.Lock()
    real = images_mod.to_rgb

    def slow_to_rgb(img):  # runs while the decode holds the large-image slot
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
        time.sleep(0.01)
        with lock:
            active[0] -= 1
        return real(img)

    monkeypatch.setattr(images_mod, "to_rgb", slow_to_rgb)
    decoded = decode_images(paths, 16, cache_dir=None, workers=4, progress=False)
    assert decoded.valid.all() and peak[0] == 1
