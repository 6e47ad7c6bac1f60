#!/usr/bin/env bash
# The CPU of a lent machine, mia against PyTorch, in two parts (one call each, as the model
# reaches the machine in two carries):
#     bash bench/cpu-minilm.sh products
#         the products alone, mia and PyTorch's SGEMM, and mia with a switch (AB, by default
#         `MIA_CPU_TEAM=0`: each parallel phase a rayon fork-join on the pool instead of a
#         phase of the calling thread's team);
#     bash bench/cpu-minilm.sh model MODEL_DIR REFERENCE_JSON [ROUNDS]
#         MiniLM, mia and sentence-transformers alternating for ROUNDS rounds (the host's times
#         move by 20-40% between runs), each round also mia with the switch above.
#         mia's per-pass breakdown sets each product inside the model beside the same
#         product alone.
# AB=VAR=VALUE picks the switch (README lists them); its runs are tagged VAR=VALUE.
# Carry .devbin as for bench/h100.sh. Results (JSON per run, the log) go to
# $OUT/cpu-{products,model}.tgz, $OUT else /tmp/mia-bench.
set -uo pipefail
cd "$(dirname "$0")/.."
part="$1" model="${2:-}" reference="${3:-}" rounds="${4:-3}"
# shellcheck source=bench/device-env.sh
source bench/device-env.sh
ab="${AB:-MIA_CPU_TEAM=0}"
args=(--device cpu --filter minilm --minilm "$model" --minilm-reference "$reference")
mia() { # TAG [VAR=VALUE ...]
    local tag="$1"
    shift
    echo "== mia $tag"
    env "$@" .devbin/mia-bench "${args[@]}" --json "$RES/mia-$tag.json" >/dev/null || return 1
    python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["records"]:
    n = r["note"]
    print(r["case"], "min %.3f ms" % (r["min_s"] * 1e3), n[n.find("by pass"):n.find("; vs")])' "$RES/mia-$tag.json"
}
main() {
    lscpu | grep -E "Model name|^CPU\(s\)|Thread|Core|Socket|L2|L3" | cut -c1-120
    local status=0
    if [ "$part" = products ]; then
        .devbin/mia-bench --device cpu --filter matmul/ --json "$RES/mia.json" || status=1
        env "$ab" .devbin/mia-bench --device cpu --filter matmul/ --json "$RES/mia-$ab.json" || status=1
        python3 bench/torch_bench.py --mia "$RES/mia.json" --json "$RES/torch.json" || status=1
        .devbin/mia-bench report --mia "$RES/mia.json" --torch "$RES/torch.json" --out "$RES/report" \
            >/dev/null || status=1
        return $status
    fi
    for r in $(seq "$rounds"); do
        mia "$r" || status=1
        mia "$ab-$r" "$ab" || status=1
        echo "== PyTorch $r"
        PYTHONUNBUFFERED=1 python3 bench/torch_bench.py --minilm "$model" --minilm-reference "$reference" \
            --minilm-device cpu --json "$RES/torch-$r.json" 2>&1 | grep -v "Loading weights" || status=1
        python3 -c 'import json,sys
for r in json.load(open(sys.argv[1]))["records"]:
    print(r["case"], "median %.3f min %.3f ms" % (r["median_s"] * 1e3, r["min_s"] * 1e3))' \
            "$RES/torch-$r.json"
    done
    return $status
}
run_packed "cpu-$part" main
