#!/usr/bin/env bash
# MiniLM on a lent NVIDIA machine, mia and sentence-transformers alternating for ROUNDS rounds
# (PyTorch eager's times move between calls, so each side is timed several times in one call):
# per round mia on CPU and GPU with tensor cores on (`MIA_TENSOR_CORES=1`), mia on the GPU with
# f32 tiles only, then PyTorch on CUDA and CPU. Carry .gl and .devbin as for bench/h100.sh.
#     bash bench/minilm-rounds.sh MODEL_DIR REFERENCE_JSON [ROUNDS]
# Results (JSON per run, the log, the tilings autotune chose) go to $OUT/minilm-rounds.tgz
# (one file: the device tool returns few), $OUT else /tmp/mia-bench.
set -uo pipefail
cd "$(dirname "$0")/.."
model="$1" reference="$2" rounds="${3:-3}"
# shellcheck source=bench/device-env.sh
source bench/device-env.sh
args=(--filter minilm --minilm "$model" --minilm-reference "$reference")
main() {
    local status=0
    for r in $(seq "$rounds"); do
        echo "== round $r: mia, tensor cores"
        MIA_TENSOR_CORES=1 MIA_CACHE_DIR="$RES/cache-tc" .devbin/mia-bench --device all "${args[@]}" \
            --json "$RES/mia-tc-$r.json" || status=1
        echo "== round $r: mia, f32 tiles"
        MIA_TENSOR_CORES=0 MIA_CACHE_DIR="$RES/cache-f32" .devbin/mia-bench --device gpu "${args[@]}" \
            --json "$RES/mia-f32-$r.json" || status=1
        echo "== round $r: PyTorch"
        PYTHONUNBUFFERED=1 python3 bench/torch_bench.py --minilm "$model" --minilm-reference "$reference" \
            --json "$RES/torch-$r.json" 2>&1 | grep -v "Loading weights" || status=1
    done
    return $status
}
run_packed minilm-rounds main
