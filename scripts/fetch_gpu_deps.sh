#!/usr/bin/env bash
# Downloads (here, with apt) the Debian packages a GPU machine without package access needs to build
# the project, into .gpu-deps/ (ignored by git). benchmarks/gpu_check.sh unpacks them there with
# dpkg -x into a private prefix; nothing is installed system-wide.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p .gpu-deps
cd .gpu-deps
packages=(libopenblas-openmp-dev libopenblas0-openmp libgfortran5 nlohmann-json3-dev doctest-dev libstb-dev libstb0)
apt-get download "${packages[@]}" 2>/dev/null || { apt-get update -qq && apt-get download "${packages[@]}"; }
ls -la
