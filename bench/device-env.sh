# Sourced by the device scripts (bench/h100.sh, bench/minilm-rounds.sh): the lent NVIDIA machine
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
