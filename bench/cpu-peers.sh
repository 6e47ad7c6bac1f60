#!/usr/bin/env bash
# The CPU kernels on a lent machine against PyTorch's (MKL/oneDNN SGEMM, SDPA) in one call, at
# the machine's thread count and at half of it (one thread per core where the vCPUs are
# hyper-thread pairs), plus mia's CPU switches (`MIA_CPU_PACK_A=1`, `MIA_CPU_AVX512=0`) at the
# full count. Carry .devbin as for bench/h100.sh.
#     bash bench/cpu-peers.sh [FILTER ...]        (default: matmul/ attention/)
# Results (mia and torch JSON per variant, merged reports, the log) go to $OUT/cpu-peers.tgz.
set -uo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=bench/device-env.sh
source bench/device-env.sh
filters=("$@")
[ ${#filters[@]} -gt 0 ] || filters=(matmul/ attention/)
all=$(nproc)
main() {
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|NUMA node\(|L1d|L2|L3|Flags" | cut -c1-200
    local status=0
    for f in "${filters[@]}"; do
        tag="${f//\//}"
        for t in "$all" $((all / 2)); do
            echo "== $f, $t threads: mia"
            RAYON_NUM_THREADS=$t .devbin/mia-bench --device cpu --filter "$f" --json "$RES/mia-$tag-$t.json" \
                || status=1
            echo "== $f, $t threads: PyTorch"
            python3 bench/torch_bench.py --mia "$RES/mia-$tag-$t.json" --cpu-threads "$t" \
                --json "$RES/torch-$tag-$t.json" || status=1
            .devbin/mia-bench report --mia "$RES/mia-$tag-$t.json" --torch "$RES/torch-$tag-$t.json" \
                --out "$RES/report-$tag-$t" >/dev/null || status=1
        done
        for sw in MIA_CPU_PACK_A=1 MIA_CPU_AVX512=0; do
            echo "== $f, $all threads: mia with $sw"
            env "$sw" .devbin/mia-bench --device cpu --filter "$f" --json "$RES/mia-$tag-$all-${sw%%=*}.json" \
                || status=1
        done
    done
    return $status
}
run_packed cpu-peers main
