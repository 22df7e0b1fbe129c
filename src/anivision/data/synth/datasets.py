"""Writing the emotion, character and style data sets (``anivision synth``).

Each image has its own :class:`numpy.random.Generator`, seeded from ``(seed, task, class,
image)`` through :class:`numpy.random.SeedSequence`, so any subset of a data set (or a
parallel run) reproduces exactly the same files.
"""

from __future__ import annotations

import io
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from PIL import Image

from anivision.data.synth.expressions import sample_expression
from anivision.data.synth.factors import EMOTIONS, GENERATOR_VERSION, TASKS, FaceParams
from anivision.data.synth.render import render_face
from anivision.data.synth.sampling import _vary_identity, _vary_style, sample_identity, sample_nuisance, sample_style
from anivision.errors import AnivisionError
from anivision.progress import progress_bar

MIN_SIZE = 16
MAX_SIZE = 1024

# Task codes and stream codes in the seed sequence. Fixed integers (never hash(), which is
# salted per process) so the same seed gives the same images in every run.
_TASK_CODE = {"emotion": 1, "character": 2, "style": 3}
_STREAM_IMAGE, _STREAM_ROLE, _STREAM_WORK = 0, 1, 2

# Class folder names this generator writes (emotions, role_NN, work_NN).
_CLASS_RE = re.compile(r"^[A-Za-z0-9_\-]+$")


def _rng(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, *key]))


def _names(prefix: str, n: int) -> list[str]:
    width = max(2, len(str(n - 1)))
    return [f"{prefix}_{k:0{width}d}" for k in range(n)]


@dataclass(frozen=True)
class _Job:
    """One image to draw: where it goes and the keys its parameters are derived from."""

    rel_dir: str
    name: str
    keys: tuple[int, ...]


def _params(task: str, seed: int, keys: tuple[int, ...]) -> tuple[FaceParams, np.random.Generator]:
    """Parameters and render generator of one image, from its keys alone."""
    code = _TASK_CODE[task]
    if task == "emotion":
        c, i = keys
        rng = _rng(seed, code, _STREAM_IMAGE, c, i)
        identity, style = sample_identity(rng), sample_style(rng)
        expression = sample_expression(EMOTIONS[c], rng)
    elif task == "character":
        c, i = keys
        base = sample_identity(_rng(seed, code, _STREAM_ROLE, c))
        rng = _rng(seed, code, _STREAM_IMAGE, c, i)
        identity, style = _vary_identity(base, rng), sample_style(rng)
        expression = sample_expression(EMOTIONS[int(rng.integers(len(EMOTIONS)))], rng)
    else:
        w, r, i = keys
        work = sample_style(_rng(seed, code, _STREAM_WORK, w))
        base = sample_identity(_rng(seed, code, _STREAM_ROLE, w, r))
        rng = _rng(seed, code, _STREAM_IMAGE, w, r, i)
        identity, style = _vary_identity(base, rng), _vary_style(work, rng)
        expression = sample_expression(EMOTIONS[int(rng.integers(len(EMOTIONS)))], rng)
    return FaceParams(expression, identity, style, sample_nuisance(rng)), rng


def _jobs(task: str, n_per_class: int, n_classes: int, n_works: int, roles_per_work: int) -> Iterator[_Job]:
    if task == "emotion":
        for c, name in enumerate(EMOTIONS):
            for i in range(n_per_class):
                yield _Job(name, f"{name}_{i:05d}.jpg", (c, i))
    elif task == "character":
        for c, name in enumerate(_names("role", n_classes)):
            for i in range(n_per_class):
                yield _Job(name, f"{name}_{i:05d}.jpg", (c, i))
    else:
        roles = _names("role", roles_per_work)
        for w, work in enumerate(_names("work", n_works)):
            for r, role in enumerate(roles):
                for i in range(n_per_class):
                    yield _Job(f"{work}/{role}", f"{role}_{i:05d}.jpg", (w, r, i))


def _encode_jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    # Every encoder option fixed, so bytes depend only on pixels and quality.
    img.save(buf, format="JPEG", quality=quality, subsampling=2, optimize=False, progressive=False)
    return buf.getvalue()


def _previous_files(out: Path) -> dict[str, list[str]]:
    """Class folder (relative to ``out``) -> the file names a previous run's synth.json records.

    The record's ``counts`` fix the names exactly: ``<folder name>_<i:05d>.jpg`` for ``i`` below
    the count. A missing or unreadable record lists nothing.
    """
    meta = out / "synth.json"
    if not meta.is_file() or meta.is_symlink():
        return {}
    try:
        counts = json.loads(meta.read_text(encoding="utf-8")).get("counts", {})
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(counts, dict):
        return {}
    listed: dict[str, list[str]] = {}
    for rel, n in counts.items():
        rel_path = Path(str(rel))
        if rel_path.is_absolute() or ".." in rel_path.parts or not rel_path.parts or not isinstance(n, int):
            continue
        if not _CLASS_RE.match(rel_path.name):
            continue
        listed[rel_path.as_posix()] = [f"{rel_path.name}_{i:05d}.jpg" for i in range(max(0, n))]
    return listed


def _check_no_escape(out: Path, rel_paths: list[str]) -> None:
    """Refuse a class folder (or a file in it) that is a symlink leading outside ``out``."""
    root, seen = out.resolve(), set()
    for rel in rel_paths:
        path = out
        for part in Path(rel).parts:
            path = path / part
            if path in seen:
                continue
            seen.add(path)
            if path.is_symlink() and not path.resolve().is_relative_to(root):
                raise AnivisionError(f"{path} is a symlink to {path.resolve()}, outside the output folder {out}; "
                                     "synth does not write or delete through it")


def _remove_previous(out: Path, listed: dict[str, list[str]]) -> None:
    """Delete exactly the images a previous run recorded in its synth.json, so a rerun gives the same tree.

    Anything else the user put in those folders is left alone; symlinks are never followed.
    """
    for rel, names in listed.items():
        folder = out / rel
        if folder.is_symlink() or not folder.is_dir():
            continue
        for name in names:
            f = folder / name
            if f.is_symlink() or f.is_file():
                f.unlink()  # a symlink is removed itself, its target never touched
        for d in (folder, folder.parent):
            if d != out and d.is_dir() and not d.is_symlink() and not any(d.iterdir()):
                d.rmdir()


def _check(task: str, out: Path, n_per_class: int, size: int, seed: int, n_classes: int | None,
           n_works: int, roles_per_work: int) -> None:
    if task not in TASKS:
        raise AnivisionError(f"unknown synth task {task!r}; expected one of {', '.join(TASKS)}")
    if n_per_class < 1:
        raise AnivisionError(f"--n-per-class must be at least 1, got {n_per_class}")
    if not MIN_SIZE <= size <= MAX_SIZE:
        raise AnivisionError(f"--size must be between {MIN_SIZE} and {MAX_SIZE} pixels, got {size}")
    if seed < 0:
        raise AnivisionError(f"seed must be a non-negative integer, got {seed}")
    if n_classes is not None and task != "character":
        raise AnivisionError(f"n-classes applies to the character task only, not {task!r}")
    if n_classes is not None and n_classes < 1:
        raise AnivisionError(f"--n-classes must be at least 1, got {n_classes}")
    if task == "style" and (n_works < 1 or roles_per_work < 1):
        raise AnivisionError(f"n-works and roles-per-work must be at least 1, got {n_works} and {roles_per_work}")
    if out.exists() and not out.is_dir():
        raise AnivisionError(f"output path {out} exists and is not a folder")


def generate(
    task: str,
    out: str | Path,
    n_per_class: int = 60,
    size: int = 128,
    seed: int = 0,
    *,
    n_classes: int | None = None,
    n_works: int = 8,
    roles_per_work: int = 4,
    progress: bool = True,
) -> dict:
    """Write a synthetic data set of cartoon faces.

    Layouts: ``emotion`` → ``out/<Emotion>/``; ``character`` → ``out/role_NN/``; ``style`` →
    ``out/work_NN/role_NN/``. Files are ``<class>_<index:05d>.jpg`` (for style, the class is the
    role). ``out/synth.json`` records the task, seed, size, counts and generator version.
    The same arguments give byte-identical files; rerunning into a folder that holds an
    earlier output first removes the images that output listed.

    Args:
        task: ``"emotion"``, ``"character"`` or ``"style"``.
        out: output folder (created if missing).
        n_per_class: images per class (per role for style).
        size: image width and height in pixels, 16-1024.
        seed: non-negative seed of the whole data set.
        n_classes: number of roles for ``character`` (default 8); not allowed otherwise.
        n_works: number of works (rendering styles) for ``style``.
        roles_per_work: identities per work for ``style``.
        progress: show a tqdm progress bar.

    Returns:
        Summary dict: ``task``, ``out``, ``seed``, ``size``, ``n_per_class``, ``n_images``,
        ``counts`` (class folder relative to ``out`` → images), ``version``, and
        ``n_classes`` / ``n_works`` + ``roles_per_work`` where they apply.

    Raises:
        AnivisionError: for bad arguments or an output path that is a file.
    """
    out = Path(out)
    _check(task, out, n_per_class, size, seed, n_classes, n_works, roles_per_work)
    n_classes = 8 if n_classes is None else n_classes
    out.mkdir(parents=True, exist_ok=True)
    jobs = list(_jobs(task, n_per_class, n_classes, n_works, roles_per_work))
    listed = _previous_files(out)
    targets = {f"{rel}/{name}" for rel, names in listed.items() for name in names}
    targets.update(f"{job.rel_dir}/{job.name}" for job in jobs)
    _check_no_escape(out, sorted(targets) + ["synth.json"])
    _remove_previous(out, listed)

    counts: dict[str, int] = {}
    for job in progress_bar(jobs, progress, desc=f"synth {task}", unit="img"):
        folder = out / job.rel_dir
        if job.rel_dir not in counts:
            folder.mkdir(parents=True, exist_ok=True)
            counts[job.rel_dir] = 0
        params, rng = _params(task, seed, job.keys)
        img = render_face(params, size, rng)
        (folder / job.name).write_bytes(_encode_jpeg(img, params.nuisance.jpeg_quality))
        counts[job.rel_dir] += 1

    meta: dict = {"task": task, "seed": seed, "size": size, "n_per_class": n_per_class}
    if task == "character":
        meta["n_classes"] = n_classes
    if task == "style":
        meta.update(n_works=n_works, roles_per_work=roles_per_work)
    meta.update(n_images=len(jobs), counts=counts, version=GENERATOR_VERSION)
    # No paths or times in the file, so two runs give identical bytes wherever they write.
    (out / "synth.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return {**meta, "out": str(out)}
