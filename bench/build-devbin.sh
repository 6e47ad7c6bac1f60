#!/usr/bin/env bash
# Prepares what bench/h100.sh needs on the device machine, which has neither cargo nor network:
# .devbin/mia-bench (stripped release build of this tree) and .gl/ (the Vulkan loader and its
# GL/EGL companions as .deb files, unpacked there). Both are kept out of git.
set -euo pipefail
cd "$(dirname "$0")/.."
for d in /.gl/ /.devbin/; do
    grep -qxF "$d" .git/info/exclude 2>/dev/null || echo "$d" >>.git/info/exclude
done
cargo build --release -p mia-bench
mkdir -p .devbin
target="${CARGO_TARGET_DIR:-target}"
cp "$target/release/mia-bench" .devbin/mia-bench
strip .devbin/mia-bench
if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
    mkdir -p .gl /tmp/amd64/partial
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    # shellcheck disable=SC2086
    apt-get $o update -qq
    # shellcheck disable=SC2086
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi
ls -la .devbin .gl
