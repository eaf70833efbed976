#!/usr/bin/env bash
# Installs the Debian packages the build needs, when missing. With --test, also those the tests
# and benchmarks need (Debian's python3-torch and python3-torchvision write the PyTorch reference
# tensors and export ImageNet ResNets; python3-pil is the loader benchmark's peer; clang-14 with its
# libFuzzer runtime and OpenMP builds the fuzz targets of tests/fuzz). Safe to run repeatedly: it
# asks apt-get only for what is not installed. The CUDA toolkit is not installed here: the build uses it when nvcc is found (see the
# README).
set -euo pipefail

packages=(cmake make g++ ccache pkg-config libopenblas-dev libopenblas-openmp-dev nlohmann-json3-dev libstb-dev doctest-dev)
if [[ "${1:-}" == "--test" ]]; then
  packages+=(python3 python3-numpy python3-torch python3-torchvision python3-pil clang-14
             libclang-rt-14-dev libomp-14-dev)
elif [[ $# -gt 0 ]]; then
  echo "usage: $0 [--test]" >&2
  exit 2
fi

missing=()
for p in "${packages[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "setup: all packages present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo_cmd=()
if [[ $(id -u) -ne 0 ]]; then
  sudo_cmd=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo_cmd[@]}" apt-get update -qq
"${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
