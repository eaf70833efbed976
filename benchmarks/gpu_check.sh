#!/usr/bin/env bash
# The GPU check: on a machine with an NVIDIA GPU, builds the project, runs every `gpu` test, runs
# some of them under compute-sanitizer (memcheck and racecheck), runs the kernel benchmarks beside
# PyTorch, and prints one table.
#
#   bash benchmarks/gpu_check.sh [all|build|test|apps|bench|sanitize|cputest]   (default: all)
#
# Phases: build; test (every `gpu` test); apps (train_unet, train_deeplab and evaluate on a small
# synthetic Cityscapes with train.device=cuda, or $APPS_DEVICE; a run interrupted and resumed); bench (the kernel lab beside
# PyTorch); sanitize (compute-sanitizer); cputest (the CPU suite of the CUDA build). `all` runs
# them in that order, the GPU-only ones first, so that a short lease spends its time on what no
# other machine can check.
#
# It finds nvcc on the PATH or in /usr/local/cuda/bin, and cuDNN and NCCL beside the CUDA toolkit or
# in Python wheels (nvidia-cudnn-*, nvidia-nccl-*) of the python3 that holds PyTorch. On a machine
# without package access, the Debian packages the build needs can be brought along: run
# scripts/fetch_gpu_deps.sh where apt works; it fills .gpu-deps/, which this script unpacks with
# dpkg -x into a private prefix. Environment: BUILD (build folder, default build-gpu), SEG_PYTHON
# (the python with torch, default python3), JOBS (build parallelism, default nproc).
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BUILD=${BUILD:-$ROOT/build-gpu}
PHASE=${1:-all}
JOBS=${JOBS:-$(nproc)}
export SEG_PYTHON=${SEG_PYTHON:-python3}
LOG=$BUILD/gpu-check-logs
mkdir -p "$LOG"
SUMMARY=$LOG/summary.txt
: > "$SUMMARY"

step() {  # step NAME COMMAND...: runs, logs, and records the result and duration
  local name=$1
  shift
  local start=$(date +%s)
  local logfile="$LOG/$(echo "$name" | tr ' /:' '___').log"
  echo "== $name" >&2
  "$@" > "$logfile" 2>&1
  local rc=$?
  local secs=$(( $(date +%s) - start ))
  local result=ok
  [[ $rc -ne 0 ]] && result="FAILED (rc $rc, see $logfile)"
  printf "%-44s %-40s %5ss\n" "$name" "$result" "$secs" >> "$SUMMARY"
  tail -n 25 "$logfile" >&2
  return $rc
}

# ---- dependencies -------------------------------------------------------------------------
PREFIX=""
if compgen -G "$ROOT/.gpu-deps/*.deb" > /dev/null; then
  PREFIX=/tmp/seg-gpu-deps
  mkdir -p "$PREFIX"
  for deb in "$ROOT"/.gpu-deps/*.deb; do dpkg -x "$deb" "$PREFIX"; done
  export LD_LIBRARY_PATH="$PREFIX/usr/lib/x86_64-linux-gnu:$PREFIX/usr/lib/x86_64-linux-gnu/openblas-openmp${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi

NVCC=$(command -v nvcc || true)
[[ -z "$NVCC" && -x /usr/local/cuda/bin/nvcc ]] && NVCC=/usr/local/cuda/bin/nvcc
if [[ -z "$NVCC" ]]; then
  echo "gpu_check: no nvcc found (PATH, /usr/local/cuda/bin)" >&2
  exit 1
fi
CUDA_HOME=$(cd "$(dirname "$NVCC")/.." && pwd)

wheel_dir() {  # wheel_dir MODULE: the folder of a Python wheel package (e.g. nvidia.cudnn), if any
  "$SEG_PYTHON" -c "import importlib, os; m = importlib.import_module('$1'); print(os.path.dirname(m.__file__) if getattr(m, '__file__', None) else list(m.__path__)[0])" 2>/dev/null
}
CUDNN_ROOT=${CUDNN_ROOT:-}
if [[ -z "$CUDNN_ROOT" && ! -f "$CUDA_HOME/include/cudnn.h" && ! -f /usr/include/cudnn.h ]]; then
  CUDNN_ROOT=$(wheel_dir nvidia.cudnn)
fi
NCCL_ROOT=${NCCL_ROOT:-}
if [[ -z "$NCCL_ROOT" && ! -f "$CUDA_HOME/include/nccl.h" && ! -f /usr/include/nccl.h ]]; then
  NCCL_ROOT=$(wheel_dir nvidia.nccl)
fi
# cuBLAS: beside the toolkit, or in the CUDA 13 wheels (nvidia/cu13) when the toolkit has only nvcc.
CUBLAS_ROOT=${CUBLAS_ROOT:-}
CUBLAS_ARGS=()
if [[ -z "$CUBLAS_ROOT" ]] && ! compgen -G "$CUDA_HOME/lib64/libcublas.so*" > /dev/null &&
  ! compgen -G "$CUDA_HOME/targets/*/lib/libcublas.so*" > /dev/null; then
  for module in nvidia.cu13 nvidia.cublas; do
    dir=$(wheel_dir "$module")
    if [[ -n "$dir" ]] && compgen -G "$dir/lib/libcublas.so.*" > /dev/null; then
      CUBLAS_ROOT=$dir
      break
    fi
  done
fi
for root in "$CUDNN_ROOT" "$NCCL_ROOT" "$CUBLAS_ROOT"; do
  [[ -n "$root" && -d "$root/lib" ]] && export LD_LIBRARY_PATH="$root/lib:${LD_LIBRARY_PATH:-}"
  # Wheels ship only the versioned library; the linker wants the plain name.
  if [[ -n "$root" && -d "$root/lib" ]]; then
    for lib in "$root"/lib/lib*.so.*; do
      [[ -e "$lib" ]] || continue
      plain="${lib%%.so.*}.so"
      [[ -e "$plain" ]] || ln -s "$(basename "$lib")" "$plain" 2>/dev/null || true
    done
  fi
done

if [[ -n "$CUBLAS_ROOT" ]]; then
  CUBLAS_ARGS=(-DCUDA_cublas_LIBRARY="$CUBLAS_ROOT/lib/libcublas.so" -DCUDA_cublasLt_LIBRARY="$CUBLAS_ROOT/lib/libcublasLt.so"
    -DCMAKE_CXX_FLAGS="-isystem $CUBLAS_ROOT/include" -DCMAKE_CUDA_FLAGS="-isystem $CUBLAS_ROOT/include")
fi

DEVICE=$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null | head -n 1)
{
  echo "GPU check: ${DEVICE:-unknown device}"
  echo "nvcc: $("$NVCC" --version | tail -n 1)"
  echo "cuDNN: ${CUDNN_ROOT:-beside the toolkit}; NCCL: ${NCCL_ROOT:-beside the toolkit}; cuBLAS: ${CUBLAS_ROOT:-beside the toolkit}"
  echo "torch: $("$SEG_PYTHON" -c 'import torch; print(torch.__version__)' 2>/dev/null || echo 'not found')"
  echo
} | tee "$LOG/header.txt" >&2

# ---- phases -----------------------------------------------------------------------------
do_build() {
  step "configure" cmake -S "$ROOT" -B "$BUILD" -DSEG_CUDA=ON -DCMAKE_CUDA_COMPILER="$NVCC" \
    ${CUDNN_ROOT:+-DCUDNN_ROOT="$CUDNN_ROOT"} ${PREFIX:+-DSEG_DEPS_PREFIX="$PREFIX"} "${CUBLAS_ARGS[@]}" \
    -DSEG_PYTHON3="$(command -v "$SEG_PYTHON")" -DSEG_WERROR=OFF &&  # another compiler, other warnings
    step "build" cmake --build "$BUILD" -j "$JOBS"
}

do_test() {
  step "gpu tests (ctest -L gpu)" ctest --test-dir "$BUILD" -L gpu --output-on-failure
  # Batch norm's own kernels (eval backward, large tensors) through every batch-norm parity case.
  step "parity: batch norm through our own kernels" env SEG_BN_OWN_KERNELS=1 SEG_PARITY_OPS=batch_norm2d \
    "$BUILD/tests/test_cuda_parity"
}

do_apps() {
  local work=$BUILD/gpu-check-apps
  rm -rf "$work"
  local apps=$BUILD/apps
  local dev=(--set train.device="${APPS_DEVICE:-cuda}" --set data.workers=4)
  local unet_epochs=${APPS_UNET_EPOCHS:-3}
  # SIGINT after a few seconds (the run saves its checkpoint and exits with 130), then --resume.
  interrupted() { "$@"; local rc=$?; [[ $rc -eq 0 || $rc -eq 130 ]]; }
  step "apps: synthetic Cityscapes" "$apps/make_synthetic_cityscapes" --out "$work/cs" --width 512 \
    --height 256 --train 16 --val 4 --no-sequences &&
    step "apps: train_unet" "$apps/train_unet" --config "$ROOT/configs/demo.json" \
      --data "$work/cs" --run "$work/unet" "${dev[@]}" --set train.epochs="$unet_epochs" &&
    step "apps: evaluate" "$apps/evaluate" --config "$ROOT/configs/demo.json" \
      --checkpoint "$work/unet/best.safetensors" --data "$work/cs" --out "$work/pred" "${dev[@]}" &&
    step "apps: train_deeplab, SIGINT after 20 s" interrupted timeout --preserve-status -s INT 20 \
      "$apps/train_deeplab" --config "$ROOT/configs/demo_deeplab.json" --data "$work/cs" \
      --run "$work/deeplab" "${dev[@]}" --set train.iterations=40 &&
    step "apps: train_deeplab --resume" "$apps/train_deeplab" --data "$work/cs" \
      --run "$work/deeplab" --resume
}

do_cputest() {
  step "cpu tests (ctest -L cpu)" ctest --test-dir "$BUILD" -L cpu --output-on-failure -j 8
}

do_sanitize() {
  if ! command -v compute-sanitizer > /dev/null; then
    echo "compute-sanitizer not found: skipped" >> "$SUMMARY"
    return 0
  fi
  local cs="compute-sanitizer --error-exitcode 99"
  step "memcheck test_cuda_elementwise" $cs --tool memcheck "$BUILD/tests/test_cuda_elementwise"
  step "memcheck test_cuda_metrics" $cs --tool memcheck "$BUILD/tests/test_cuda_metrics"
  step "memcheck parity: upsample, cross entropy, pools" env \
    SEG_PARITY_OPS=upsample_bilinear2d,cross_entropy,max_pool2d,adaptive_avg_pool2d,triplet_margin_loss \
    $cs --tool memcheck "$BUILD/tests/test_cuda_parity"
  step "memcheck parity: GEMM, conv, batch norm, ASPP" env \
    SEG_PARITY_OPS=matmul,linear,conv2d,conv_transpose2d,aspp_projection,batch_norm2d \
    $cs --tool memcheck "$BUILD/tests/test_cuda_parity"
  step "racecheck test_cuda_metrics" $cs --tool racecheck "$BUILD/tests/test_cuda_metrics"
  step "racecheck parity: softmax, cross entropy, sum" env SEG_PARITY_OPS=softmax,log_softmax,cross_entropy,sum \
    $cs --tool racecheck "$BUILD/tests/test_cuda_parity"
}

do_bench() {
  local rows=$LOG/table_rows.txt
  : > "$rows"
  for bench in "$BUILD"/benchmarks/cuda/bench_*; do
    [[ -x "$bench" ]] || continue
    local name=$(basename "$bench")
    step "benchmark $name" "$bench"
    grep -h '^TABLE|' "$LOG/benchmark_${name}.log" >> "$rows" || true
  done
}

case "$PHASE" in
  build) do_build ;;
  test) do_test ;;
  apps) do_apps ;;
  bench) do_bench ;;
  sanitize) do_sanitize ;;
  cputest) do_cputest ;;
  all) do_build && { do_test; do_apps; do_bench; do_sanitize; do_cputest; } ;;
  *) echo "usage: $0 [all|build|test|apps|bench|sanitize|cputest]" >&2; exit 2 ;;
esac

# ---- the table ---------------------------------------------------------------------------
echo
cat "$LOG/header.txt"
printf "%-44s %-40s %6s\n" "step" "result" "time"
cat "$SUMMARY"
if [[ -s "$LOG/table_rows.txt" ]]; then
  echo
  printf "%-18s %-44s %10s %14s %6s %10s %7s\n" "benchmark" "case" "ours ms" "rate" "%peak" "torch ms" "ratio"
  awk -F'|' '{ printf "%-18s %-44s %10s %14s %5s%% %10s %7s\n", $2, $3, $4, $5, $6, ($7 > 0 ? $7 : "-"), ($8 > 0 ? $8 "x" : "-") }' \
    "$LOG/table_rows.txt"
  echo "(ratio = PyTorch time / our time: above 1, we are faster)"
fi
grep -q FAILED "$SUMMARY" && exit 1
exit 0
