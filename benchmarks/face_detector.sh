#!/usr/bin/env bash
# The learned face detector: train it, package its weights, and measure it against the LBP
# cascade on the face-boxes validation split (RESULTS.md, "Learned face detector").
# CPU only: the backbone is frozen, so training is ~4 backbone passes per image plus a small head.
#
#   bash benchmarks/face_detector.sh            # from the repository root
set -euo pipefail
BOXES=${BOXES:-../shared/data/face-boxes}
RUN=${RUN:-runs/face-detector}
THREADS=${THREADS:-2}

# 1. Train (defaults: 4 augmented views per image at 288 px, 8 epochs; rerun to resume).
anivision faces train --boxes "$BOXES" --out "$RUN" --split train --threads "$THREADS"

# 2. Ship it: float16 copy inside the package (what `--detector learned` loads).
python -c "import sys; from anivision.tasks.faces.predictor import export_weights, packaged_weights_path; print(export_weights(sys.argv[1], packaged_weights_path()))" "$RUN"

# 3. Accuracy on the validation split, colour and greyscale, learned vs cascade.
anivision faces evaluate "$RUN" --split val
anivision faces evaluate "$RUN" --split val --greyscale
anivision faces evaluate --detector lbp --boxes "$BOXES" --split val --out "$RUN/eval-lbp-val"
anivision faces evaluate --detector lbp --boxes "$BOXES" --split val --greyscale --out "$RUN/eval-lbp-val-grey"

# 4. Speed per 640 px illustration on one CPU thread, alternating the two detectors.
python benchmarks/face_detector_speed.py --boxes "$BOXES" --detector "$RUN"
