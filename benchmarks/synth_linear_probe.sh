#!/usr/bin/env bash
# Linear-probe accuracy of offline ImageNet tf_efficientnet_lite0 features on each synthetic task.
# Usage: bash benchmarks/synth_linear_probe.sh [WORK_DIR]
set -euo pipefail
W="${1:-/tmp/anivision-synth-bench}"
mkdir -p "$W"
anivision -q synth --task emotion   --out "$W/emotion"   --n-per-class 100 --seed 0
anivision -q synth --task character --out "$W/character" --n-per-class 100 --n-classes 8 --seed 0
anivision -q synth --task style     --out "$W/style"     --n-per-class 25 --n-works 8 --roles-per-work 4 --seed 0
for t in emotion character style; do
  # style: classes are the works (roles are nested folders inside each work)
  anivision -q train --data "$W/$t" --strategy linear_probe --img-size 128 --epochs 20 \
      --cache-dir "$W/cache" --out "$W/run-$t"
done
