"""``anivision data check``: find what is wrong with an image dataset before training on it.

:func:`check_dataset` reads every image once and reports

* counts per class and per split;
* corrupt files (unreadable, zero bytes, truncated, not an image);
* exact duplicates (same sha1 of the bytes) and near-duplicates (same picture resized,
  re-compressed or lightly cropped; see :mod:`anivision.data.hashing`);
* label conflicts: copies of one picture filed under different classes;
* leakage: copies of one picture in different parts of a split (train / val / test), which
  inflate test scores;
* tiny images, the share of greyscale images, non-image files, empty class folders, and
  split rows whose file is missing, changed since the split was made, or not in the split.

:func:`write_check_report` writes the result as ``check.json`` and a readable ``check.md``.

The work is split in three modules: :mod:`.collect` lists the files (folders, manifest, split
file) and decodes and hashes each one, :mod:`.dataset` groups them into duplicates,
near-duplicates, label conflicts and leakage, and :mod:`.report` writes the report.
"""

from __future__ import annotations

from anivision.data.checks.dataset import DEFAULT_MIN_SIZE, check_dataset
from anivision.data.checks.report import has_blocking_problems, render_markdown, write_check_report

__all__ = ["DEFAULT_MIN_SIZE", "check_dataset", "has_blocking_problems", "render_markdown", "write_check_report"]
