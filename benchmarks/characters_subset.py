"""Write a CSV manifest (path,label) of the first N images of each class of a class-per-folder set.

Used to run the benchmark matrix on a CPU-sized subset of ../shared/data/characters:
  python benchmarks/characters_subset.py ../shared/data/characters 100 runs/characters-100.csv
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

from anivision.data.folder import scan_class_folders


def main(root: str, n: int, out: str) -> None:
    images = scan_class_folders(root)
    rows = []
    for c, name in enumerate(images.classes):
        rows += [(str(Path(p).resolve()), name) for p, y in zip(images.paths, images.labels) if y == c][:n]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "label"])
        w.writerows(rows)
    print(f"{len(rows)} images of {len(images.classes)} classes -> {out}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
