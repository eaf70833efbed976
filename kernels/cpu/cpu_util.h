// Helpers shared by the CPU kernels: dtype dispatch, 16-bit float storage types, OpenMP loops and
// strided iteration.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>

#include "kernels/common/half.h"
#include "kernels/common/types.h"

namespace seg::cpu {

// 16-bit float storage types: arithmetic happens in f32 after conversion.
struct bf16_t {
  uint16_t bits;
};
struct f16_t {
  uint16_t bits;
};

template <class T>
inline double load_f64(T v) {
  return static_cast<double>(v);
}
template <>
inline double load_f64(bf16_t v) {
  return bf16_to_f32(v.bits);
}
template <>
inline double load_f64(f16_t v) {
  return f16_to_f32(v.bits);
}

template <class T>
inline T store_from_f64(double v) {
  return static_cast<T>(v);
}
template <>
inline bf16_t store_from_f64<bf16_t>(double v) {
  return bf16_t{f32_to_bf16(static_cast<float>(v))};
}
template <>
inline f16_t store_from_f64<f16_t>(double v) {
  return f16_t{f32_to_f16(static_cast<float>(v))};
}

[[noreturn]] inline void unsupported_dtype(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported on the CPU");
}

// Runs `body` with T bound to the C++ type of `dtype`.
#define SEG_CPU_DISPATCH_ALL(dtype, kernel, T, ...) \
  switch (dtype) {                                  \
    case ::seg::DType::f32: {                       \
      using T = float;                              \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
    case ::seg::DType::f64: {                       \
      using T = double;                             \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
    case ::seg::DType::bf16: {                      \
      using T = ::seg::cpu::bf16_t;                 \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
    case ::seg::DType::f16: {                       \
      using T = ::seg::cpu::f16_t;                  \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
    case ::seg::DType::i32: {                       \
      using T = int32_t;                            \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
    case ::seg::DType::i64: {                       \
      using T = int64_t;                            \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
    case ::seg::DType::u8: {                        \
      using T = uint8_t;                            \
      __VA_ARGS__;                                  \
      break;                                        \
    }                                               \
  }

// f32 and f64 only: the dtypes the CPU computes in.
#define SEG_CPU_DISPATCH_FLOAT(dtype, kernel, T, ...)      \
  switch (dtype) {                                         \
    case ::seg::DType::f32: {                              \
      using T = float;                                     \
      __VA_ARGS__;                                         \
      break;                                               \
    }                                                      \
    case ::seg::DType::f64: {                              \
      using T = double;                                    \
      __VA_ARGS__;                                         \
      break;                                               \
    }                                                      \
    default: ::seg::cpu::unsupported_dtype(kernel, dtype); \
  }

// Work below this many elements runs on one thread: the OpenMP fork costs more than it saves.
constexpr int64_t kParallelGrain = 32768;

// for (i in [0, n)) body(begin, end) over contiguous chunks of `grain`, in parallel when n is
// large. Chunks are handed out dynamically: on a shared machine a thread that loses its core for
// a time slice then delays only its current chunk, not a fixed half of the work. Which thread runs
// a chunk never changes what it computes.
template <class F>
inline void parallel_for(int64_t n, int64_t grain, F&& body) {
  if (n <= 0) return;
  if (n <= grain) {
    body(int64_t{0}, n);
    return;
  }
  int64_t chunks = (n + grain - 1) / grain;
#pragma omp parallel for schedule(dynamic)
  for (int64_t c = 0; c < chunks; ++c) {
    int64_t begin = c * grain;
    body(begin, std::min(n, begin + grain));
  }
}

// Iteration over N operands sharing sizes, each with its own strides. Dims of size 1 are dropped
// and dims that are contiguous with their inner neighbour in every operand are merged, so the inner
// loop is as long as possible.
template <int N>
struct StridedLoop {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};

  StridedLoop(int in_ndim, const int64_t* in_sizes, const int64_t* const (&in_strides)[N]) {
    for (int d = 0; d < in_ndim; ++d) {
      if (in_sizes[d] == 1) continue;
      if (ndim > 0) {
        bool merge = true;
        for (int k = 0; k < N; ++k) {
          if (strides[k][ndim - 1] != in_strides[k][d] * in_sizes[d]) merge = false;
        }
        if (merge) {
          sizes[ndim - 1] *= in_sizes[d];
          for (int k = 0; k < N; ++k) strides[k][ndim - 1] = in_strides[k][d];
          continue;
        }
      }
      sizes[ndim] = in_sizes[d];
      for (int k = 0; k < N; ++k) strides[k][ndim] = in_strides[k][d];
      ++ndim;
    }
    if (ndim == 0) {  // a single element
      ndim = 1;
      sizes[0] = 1;
      for (int k = 0; k < N; ++k) strides[k][0] = 1;
    }
  }

  int64_t inner_size() const { return sizes[ndim - 1]; }
  int64_t outer_count() const {
    int64_t n = 1;
    for (int d = 0; d < ndim - 1; ++d) n *= sizes[d];
    return n;
  }

  // body(offsets[N], inner_size, inner_strides[N]) for every outer index, in parallel chunks.
  template <class F>
  void run(F&& body) const {
    const int64_t inner = inner_size();
    if (inner == 0 || outer_count() == 0) return;  // an empty tensor: nothing to visit
    int64_t inner_strides[N];
    for (int k = 0; k < N; ++k) inner_strides[k] = strides[k][ndim - 1];
    const int64_t outer = outer_count();
    const int64_t grain = std::max<int64_t>(1, kParallelGrain / std::max<int64_t>(inner, 1));
    parallel_for(outer, grain, [&](int64_t begin, int64_t end) {
      int64_t idx[kMaxDims] = {};
      int64_t rem = begin;
      for (int d = ndim - 2; d >= 0; --d) {
        idx[d] = rem % sizes[d];
        rem /= sizes[d];
      }
      for (int64_t o = begin; o < end; ++o) {
        int64_t offsets[N];
        for (int k = 0; k < N; ++k) {
          offsets[k] = 0;
          for (int d = 0; d < ndim - 1; ++d) offsets[k] += idx[d] * strides[k][d];
        }
        body(offsets, inner, inner_strides);
        for (int d = ndim - 2; d >= 0; --d) {
          if (++idx[d] < sizes[d]) break;
          idx[d] = 0;
        }
      }
    });
  }
};

}  // namespace seg::cpu
