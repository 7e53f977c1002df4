#!/usr/bin/env bash
# Issue 21: the GPU figures in one prepared script.
#   1. ConvNeXt-XL (the paper's encoder, random weights: speed only) in bf16: images/s of the
#      encode stage against a bare model(x) loop on the same images, same run;
#   2. the default encoder (EfficientNet-Lite2, 4 rotations) images/s, stage against model(x);
#   3. the end-to-end benchmark at 10^5 galaxies (table with per-stage seconds and memory).
# Without a CUDA GPU it runs everything on the CPU at a tiny N (a small timm ConvNeXt in place of
# the XL one), so that the script itself is tested: `tests/test_benchmarks_speed.py`.
#
#   bash benchmarks/gpu_check.sh            # from the repository root or anywhere
#   N_E2E=20000 bash benchmarks/gpu_check.sh
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PY="${PYTHON:-python}"
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -c "import torch; print('GPU:', torch.cuda.get_device_name(), '| torch', torch.__version__)"
    DEVICE=cuda; CONVNEXT=convnext_xlarge.fb_in22k; N_ENC=2048; N_E2E="${N_E2E:-100000}"; REPEATS=3
    E2E_SET=()
else
    echo "no GPU: CPU at a tiny N (figures only show that the script runs)"
    DEVICE=cpu; CONVNEXT=convnext_atto; N_ENC=16; N_E2E="${N_E2E:-40}"; REPEATS=1
    E2E_SET=(--set reduce.dims=5 --set reduce.map_2d=false --set cluster.k=4 --set encode.input_size=64
             --set encode.rotations=1 --set measure.workers=1)
fi
echo "== 1. $CONVNEXT bf16: encode stage vs bare model(x) =="
"$PY" "$HERE/bench_encode.py" --n "$N_ENC" --encoders "$CONVNEXT" --random-init --device "$DEVICE" \
    --precision bf16 --batch-size 16 --chunk-size 1024 --repeats "$REPEATS"
echo "== 2. default encoder (efficientnet_lite2, 4 rotations): encode stage vs bare model(x) =="
"$PY" "$HERE/bench_encode.py" --n "$N_ENC" --encoders efficientnet_lite2 --device "$DEVICE" \
    --rotations 4 --repeats "$REPEATS"
echo "== 3. end to end, N = $N_E2E =="
"$PY" "$HERE/bench_end_to_end.py" --n "$N_E2E" "${E2E_SET[@]}"
