#!/usr/bin/env bash
# Builds the libFuzzer targets of tests/fuzz in a clang build folder and runs each for a while.
#
#   bash tests/fuzz/fuzz.sh [--seconds N] [--jobs N] [--seed S] BUILD_DIR [TARGET...]
#
# BUILD_DIR is configured with clang++ and SEG_FUZZ=ON (CPU only, no tests or benchmarks) when it
# is not yet, then fuzz_all is built. Each target (all of fuzz_targets.txt by default) runs for N
# seconds (default 5) with N jobs (default 1), starting from its committed seeds
# (tests/fuzz/corpus/NAME) and from what earlier runs kept in BUILD_DIR/corpus/NAME, where new
# inputs go. A crash, sanitizer report, leak or uncaught exception fails the run; the input that
# caused it is kept as BUILD_DIR/artifacts/NAME-crash-* and reproduces with
# `BUILD_DIR/tests/fuzz/fuzz_NAME FILE`. Exits 77 (skipped) when clang++, its libFuzzer runtime
# or its OpenMP (Debian: clang-14, libclang-rt-14-dev, libomp-14-dev) is missing.
set -euo pipefail

seconds=5
jobs=1
seed=0  # 0: libFuzzer picks one; the test suite's smoke run fixes it, so CI explores the same inputs
while [[ $# -gt 0 ]]; do
  case "$1" in
    --seconds) seconds="$2"; shift 2 ;;
    --jobs) jobs="$2"; shift 2 ;;
    --seed) seed="$2"; shift 2 ;;
    -*) echo "fuzz.sh: unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [[ $# -lt 1 ]]; then
  echo "usage: $0 [--seconds N] [--jobs N] [--seed S] BUILD_DIR [TARGET...]" >&2
  exit 2
fi
build="$(mkdir -p "$1" && cd "$1" && pwd)"
shift
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"

cxx="$(command -v clang++-14 || command -v clang++ || true)"
cc="$(command -v clang-14 || command -v clang || true)"
if [[ -z "$cxx" || -z "$cc" ]]; then
  echo "fuzz.sh: skipped: no clang++ (Debian: apt-get install clang-14 libclang-rt-14-dev)"
  exit 77
fi
probe="$build/probe"
mkdir -p "$probe"
echo 'extern "C" int LLVMFuzzerTestOneInput(const unsigned char*, unsigned long) { return 0; }' \
  > "$probe/probe.cpp"
if ! "$cxx" -fsanitize=fuzzer,address,undefined -fopenmp "$probe/probe.cpp" -o "$probe/probe" \
     > "$probe/log.txt" 2>&1; then
  echo "fuzz.sh: skipped: $cxx cannot link libFuzzer with OpenMP" \
       "(Debian: apt-get install libclang-rt-14-dev libomp-14-dev)"
  cat "$probe/log.txt"
  exit 77
fi

if [[ ! -f "$build/CMakeCache.txt" ]]; then
  cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="$cxx" -DCMAKE_C_COMPILER="$cc" \
    -DCMAKE_BUILD_TYPE=Fuzz -DCMAKE_CXX_FLAGS_FUZZ="-O1 -gline-tables-only" \
    -DSEG_FUZZ=ON -DSEG_CUDA=OFF -DSEG_BUILD_TESTS=OFF -DSEG_BUILD_BENCHMARKS=OFF > "$build/configure.log" \
    || { cat "$build/configure.log"; exit 1; }
fi
cmake --build "$build" --target fuzz_all -j"$(nproc)" > "$build/build.log" 2>&1 \
  || { tail -n 50 "$build/build.log"; exit 1; }

targets=("$@")
if [[ ${#targets[@]} -eq 0 ]]; then
  mapfile -t targets < "$build/fuzz_targets.txt"
fi
status=0
for t in "${targets[@]}"; do
  exe="$build/tests/fuzz/fuzz_$t"
  [[ -x "$exe" ]] || { echo "fuzz.sh: no target '$t' (known: $(tr '\n' ' ' < "$build/fuzz_targets.txt"))" >&2; exit 2; }
  mkdir -p "$build/corpus/$t" "$build/artifacts"
  args=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
        -artifact_prefix="$build/artifacts/$t-")
  [[ -f "$here/$t.dict" ]] && args+=(-dict="$here/$t.dict")
  [[ "$jobs" -gt 1 ]] && args+=(-fork="$jobs")
  [[ "$seed" -ne 0 ]] && args+=(-seed="$seed")
  echo "fuzz.sh: $t for ${seconds} s"
  if ! "$exe" "${args[@]}" "$build/corpus/$t" "$here/corpus/$t" > "$build/$t.log" 2>&1; then
    status=1
    echo "fuzz.sh: $t FAILED (log: $build/$t.log)"
    tail -n 60 "$build/$t.log"
  else
    # The run count ("Done N runs", or a -fork run's last "#N: cov: ..." line).
    grep -E "^Done|^#[0-9]+: cov" "$build/$t.log" | tail -n 1 | sed "s/^/  /" || true
  fi
done
exit $status
