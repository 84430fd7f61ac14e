#!/usr/bin/env bash
# Install NVIDIA's NVRTC (the CUDA runtime compiler, no GPU needed) from PyPI into a folder,
# and print the directory holding libnvrtc.so.13 on the last line of stdout.
#
# Usage: ci/install-nvrtc.sh [DEST]     (default DEST: target/nvrtc)
# Then:  export KVBENCH_NVRTC_LIB="$(ci/install-nvrtc.sh | tail -n1)"
# kvbench's NVRTC compile test (workloads/tests/cuda_kernels_compile.rs) reads that variable.
set -euo pipefail

version="13.0.88"
dest="${1:-target/nvrtc}"
mkdir -p "$dest"
dest="$(cd "$dest" && pwd)"

if ! find "$dest" -name 'libnvrtc.so.13' -print -quit | grep -q .; then
    python3 -m pip install --quiet --disable-pip-version-check --no-deps \
        --target "$dest" "nvidia-cuda-nvrtc==${version}" >&2
fi

lib="$(find "$dest" -name 'libnvrtc.so.13' -print -quit)"
if [ -z "$lib" ]; then
    echo "install-nvrtc: nvidia-cuda-nvrtc==${version} installed but libnvrtc.so.13 not found under $dest" >&2
    exit 1
fi
dirname "$lib"
