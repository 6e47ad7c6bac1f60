# Sourced by the device scripts (bench/h100.sh, bench/minilm-rounds.sh, ...): the lent NVIDIA machine
# has the driver but no Vulkan loader, so the carried one (.gl/, from bench/build-devbin.sh) is
# unpacked, and the binary carried xz-compressed (.devbin/mia-bench.xz, to fit the carry limit)
# is unpacked next to it.
if [ ! -x .devbin/mia-bench ] && [ -f .devbin/mia-bench.xz ]; then
    xz -d -k .devbin/mia-bench.xz && chmod +x .devbin/mia-bench
fi
if [ ! -x .devbin/mia-bench ]; then
    echo "$0: .devbin/mia-bench is missing: run bench/build-devbin.sh here and carry .devbin" >&2
    exit 2
fi
if ! ldconfig -p | grep -q libvulkan.so.1; then
    for f in .gl/*.deb; do dpkg -x "$f" /; done
    ldconfig
fi
export XDG_RUNTIME_DIR=/tmp/xdg
mkdir -p "$XDG_RUNTIME_DIR" && chmod 700 "$XDG_RUNTIME_DIR"
export WGPU_BACKEND=vulkan
nvidia_icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
if [ -f "$nvidia_icd" ] && ! ls /usr/share/vulkan/icd.d/nvidia* /etc/vulkan/icd.d/nvidia* >/dev/null 2>&1; then
    export VK_DRIVER_FILES="$nvidia_icd"
fi
OUT="${OUT:-/tmp/mia-bench}"

# Runs CMD (a function of the calling script, writing its files into $RES = $OUT/NAME) with
# its output shown and kept in $RES/NAME.log, then packs $RES into $OUT/NAME.tgz (one file:
# the device tool returns few) and exits with CMD's status.
#     run_packed NAME CMD [ARG ...]
run_packed() {
    local name="$1"
    shift
    RES="$OUT/$name"
    mkdir -p "$RES"
    "$@" 2>&1 | tee "$RES/$name.log"
    local status="${PIPESTATUS[0]}"
    tar czf "$OUT/$name.tgz" -C "$OUT" "$name" && rm -r "$RES"
    exit "$status"
}
