#!/usr/bin/env bash
# mia's benchmark suite on a lent NVIDIA machine (H100 or H200; no cargo, no network): the
# carried mia-bench binary on CPU and GPU (Vulkan), the PyTorch comparison of the same cases on
# CUDA, and the merged report (report.md, chart.svg, merged.json).
#
# Here, first: `bash bench/build-devbin.sh` (puts the stripped release binary in .devbin/ and the
# Vulkan loader's .deb files in .gl/). Then on the device machine, from the repository root,
# carrying .gl and .devbin:
#     bash bench/h100.sh [extra mia-bench arguments, e.g. --filter softmax]
# With MIA_MINILM_DIR set (the unzipped all-MiniLM-L6-v2 model.zip) both sides also run the
# whole-model case, checked first against MIA_MINILM_REFERENCE (default
# ../shared/minilm/reference.json).
# Results go to $OUT (the device tool's folder that comes back), else /tmp/mia-bench.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-/tmp/mia-bench}"
mkdir -p "$OUT"
LOG="$OUT/run.log"

# shellcheck source=bench/device-env.sh
source bench/device-env.sh

{
    echo "== machine"
    date -u +%Y-%m-%dT%H:%M:%SZ
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm,temperature.gpu --format=csv
    echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2), $(nproc) threads"
    python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'
} 2>&1 | tee "$LOG"

status=0
minilm=()
if [ -n "${MIA_MINILM_DIR:-}" ]; then
    minilm=(--minilm "$MIA_MINILM_DIR" --minilm-reference "${MIA_MINILM_REFERENCE:-../shared/minilm/reference.json}")
fi
echo "== mia-bench --device all $*" | tee -a "$LOG"
.devbin/mia-bench --device all --json "$OUT/mia.json" "${minilm[@]}" "$@" 2>&1 | tee -a "$LOG" || status=1
if [ ! -f "$OUT/mia.json" ]; then
    echo "h100.sh: mia-bench wrote no JSON; stopping" | tee -a "$LOG"
    exit 1
fi
echo "== torch_bench.py" | tee -a "$LOG"
PYTHONUNBUFFERED=1 python3 bench/torch_bench.py --mia "$OUT/mia.json" --json "$OUT/torch.json" "${minilm[@]}" 2>&1 \
    | tee -a "$LOG" || status=1
echo "== report" | tee -a "$LOG"
if [ -f "$OUT/torch.json" ]; then
    .devbin/mia-bench report --mia "$OUT/mia.json" --torch "$OUT/torch.json" --out "$OUT" 2>&1 | tee -a "$LOG" || status=1
else
    .devbin/mia-bench report --mia "$OUT/mia.json" --out "$OUT" 2>&1 | tee -a "$LOG" || status=1
fi
exit $status
