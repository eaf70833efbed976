// CUDA kernels of the basic families: fill, copy/cast, arange, random, unary, binary, sum, argmax.
//
// Design notes
// - Semantics are kernels/cpu/elementwise.cpp's, element for element: strided N-d views (stride 0
//   broadcasts), dtype conversions as the CPU's (C++ static_cast between arithmetic types, with
//   x86's results where a float is out of an integer's range; bf16/f16 through the bit-exact
//   round-to-nearest-even of kernels/common/half.h, via f64 as the CPU goes), random numbers from
//   the same (seed, call, index) -> value mapping (kernels/common/philox.h, and the fma-explicit
//   value helpers of kernels/common/elementwise.h), argmax's first-max and NaN rules, relu'(0) = 0.
// - Strided ops first coalesce their dims as the CPU's StridedLoop does (drop size-1 dims, merge
//   dims that are contiguous in every operand), then run one "row" kernel: the innermost dim is a
//   row; a thread takes 4 consecutive elements of one row, finds the row's offsets once (outer
//   dims decomposed with precomputed magic-number divisors, FastDiv), and uses 16-byte-class vector
//   loads and stores when every operand's row is contiguous (stride 1) or broadcast (stride 0) and
//   aligned. A contiguous tensor is one row, so the contiguous fast path is the same kernel.
// - Index math is 32-bit when the element count and every operand's offset range fit in int32
//   (the common case: cheap divisions), else 64-bit (FastDiv over uint64 with __umul64hi); tensors
//   of more than 2^31 elements (8x64x1024x2048 activations) take the 64-bit path.
// - A copy between same-dtype tensors where the destination's contiguous dim is not the source's
//   (a transpose or permute) goes through 32x32 shared-memory tiles: both the reads and the writes
//   are coalesced. A contiguous same-dtype copy is a cudaMemcpyAsync on the stream.
// - sum: deterministic (a fixed tree that depends only on the shapes, never on timing or the GPU
//   model; no atomics). f32 accumulates in f64, as on the CPU: a per-thread f64 running sum of a
//   few thousand f32 values and an f64 tree are exact to ~1e-16 relative, so the f32 result is the
//   CPU's to the last bit except in rare rounding ties, and f64 traffic costs nothing here (the
//   kernel is bound by memory: one f64 add per 4-byte load, far under H100's f64 rate). Integers
//   accumulate in int64 (exact, order-free). Two layouts:
//   * inner: the innermost dim of x is reduced (sum over w, (n,c,h,w) -> (1,c,1,1), sum of all):
//     a team (a warp for short reductions, a block for long ones) per output walks the reduced
//     elements row by row with vector loads;
//   * outer: the innermost dim of x is kept ((n,d) -> (1,d), sum over the batch): threadIdx.x runs
//     over consecutive outputs (coalesced), threadIdx.y splits the reduction, a shared-memory tree
//     combines them.
//   When there are too few outputs to fill the GPU, the reduction of each output is split into a
//   fixed number of chunks (from the shapes only) written to scratch as partial sums, and a second
//   kernel adds each output's partials with a fixed warp tree.
// - argmax: a thread per output scans the reduced dim in order (the CPU's loop) when outputs are
//   many; for long reductions with a short inner stride a warp per output scans strided subsets and
//   combines (value, index) pairs with a total order (NaN largest, then larger value, then smaller
//   index), which gives the CPU's answer in any combination order.
// - Every launch is on env.stream, checked, with grids computed from the sizes (ceil-div, clamped;
//   grid-stride loops). Nothing synchronises; scratch memory comes from ScratchBuffer.
#include <algorithm>
#include <climits>
#include <cstdint>
#include <cstring>
#include <stdexcept>
#include <string>
#include <type_traits>

#include "kernels/common/elementwise.h"
#include "kernels/common/half.h"
#include "kernels/common/registry.h"
#include "kernels/cuda/cuda_check.h"
#include "kernels/cuda/cuda_env.h"

namespace seg::cuda {
namespace {

constexpr int kThreads = 256;     // threads per block of every kernel here
constexpr int kBlocksPerSm = 32;  // grid cap for grid-stride loops: several full waves
constexpr int kVec = 4;           // elements per thread per step of the row kernels

[[noreturn]] void unsupported(const char* kernel, DType dtype) {
  throw std::invalid_argument(std::string(kernel) + ": dtype " + dtype_name(dtype) +
                              " is not supported on CUDA");
}

SEG_HD int64_t ceil_div(int64_t a, int64_t b) {
  return (a + b - 1) / b;
}

// Blocks for a grid-stride loop over `work` items, `per_block` per block and pass.
unsigned int blocks_for(const CudaKernelEnv& env, int64_t work, int64_t per_block) {
  const int64_t needed = ceil_div(std::max<int64_t>(work, 1), per_block);
  const int64_t cap = static_cast<int64_t>(std::max(env.sm_count, 1)) * kBlocksPerSm;
  return static_cast<unsigned int>(std::clamp<int64_t>(needed, 1, cap));
}

bool aligned_to(const void* p, size_t bytes) {
  return reinterpret_cast<uintptr_t>(p) % bytes == 0;
}

// ---------------------------------------------------------------------------------------------
// Storage types and the CPU's conversions

struct Bf16 {
  uint16_t bits;
};
struct F16 {
  uint16_t bits;
};

template <class T>
constexpr bool kArith = std::is_arithmetic_v<T>;

// What x86's cvttsd2si gives for a float -> integer static_cast: truncation toward zero in range,
// the "integer indefinite" value (INT_MIN) outside it and for NaN; u8 takes the low byte of the
// 32-bit conversion (GCC converts through int32). Out-of-range conversions are undefined in C++,
// so this only pins down what the CPU build happens to do.
template <class D>
__device__ __forceinline__ D trunc_like_cpu(double v) {
  if constexpr (std::is_same_v<D, int64_t>) {
    return (v >= -9223372036854775808.0 && v < 9223372036854775808.0) ? static_cast<int64_t>(v)
                                                                      : INT64_MIN;
  } else {
    const int32_t i =
        (v >= -2147483648.0 && v < 2147483648.0) ? static_cast<int32_t>(v) : INT32_MIN;
    return static_cast<D>(i);  // i32, or u8's low byte
  }
}

// cpu::load_f64 and cpu::store_from_f64 (kernels/cpu/cpu_util.h).
template <class T>
__device__ __forceinline__ double load_f64(T v) {
  if constexpr (std::is_same_v<T, Bf16>) {
    return static_cast<double>(bf16_to_f32(v.bits));
  } else if constexpr (std::is_same_v<T, F16>) {
    return static_cast<double>(f16_to_f32(v.bits));
  } else {
    return static_cast<double>(v);
  }
}
template <class D>
__device__ __forceinline__ D store_from_f64(double v) {
  if constexpr (std::is_same_v<D, Bf16>) {
    return Bf16{f32_to_bf16(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<D, F16>) {
    return F16{f32_to_f16(static_cast<float>(v))};
  } else if constexpr (std::is_integral_v<D>) {
    return trunc_like_cpu<D>(v);
  } else {
    return static_cast<D>(v);
  }
}

// The CPU's copy_typed: static_cast between arithmetic types, through f64 otherwise.
template <class S, class D>
__device__ __forceinline__ D convert(S s) {
  if constexpr (std::is_same_v<S, D>) {
    return s;
  } else if constexpr (kArith<S> && kArith<D>) {
    if constexpr (std::is_floating_point_v<S> && std::is_integral_v<D>) {
      return trunc_like_cpu<D>(static_cast<double>(s));  // exact: every float is a double
    } else {
      return static_cast<D>(s);
    }
  } else {
    return store_from_f64<D>(load_f64(s));
  }
}

// Host versions for scalars (fill's value): the host compiler is the CPU backend's.
template <class D>
D host_store_from_f64(double v) {
  if constexpr (std::is_same_v<D, Bf16>) {
    return Bf16{f32_to_bf16(static_cast<float>(v))};
  } else if constexpr (std::is_same_v<D, F16>) {
    return F16{f32_to_f16(static_cast<float>(v))};
  } else {
    return static_cast<D>(v);
  }
}

// Runs body with T bound to the storage type of `dtype`.
#define SEG_CUDA_DISPATCH_ALL(dtype, kernel, T, ...) \
  switch (dtype) {                                   \
    case DType::f32: {                               \
      using T = float;                               \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    case DType::f64: {                               \
      using T = double;                              \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    case DType::bf16: {                              \
      using T = Bf16;                                \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    case DType::f16: {                               \
      using T = F16;                                 \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    case DType::i32: {                               \
      using T = int32_t;                             \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    case DType::i64: {                               \
      using T = int64_t;                             \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    case DType::u8: {                                \
      using T = uint8_t;                             \
      __VA_ARGS__;                                   \
      break;                                         \
    }                                                \
    default: unsupported(kernel, dtype);             \
  }

// An unsigned word of `bytes` bytes, for copies and fills that move bits.
template <int kBytes>
using Word = std::conditional_t<
    kBytes == 1, uint8_t,
    std::conditional_t<kBytes == 2, uint16_t, std::conditional_t<kBytes == 4, uint32_t, uint64_t>>>;

#define SEG_CUDA_DISPATCH_WORD(bytes, W, ...) \
  switch (bytes) {                            \
    case 1: {                                 \
      using W = Word<1>;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 2: {                                 \
      using W = Word<2>;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    case 4: {                                 \
      using W = Word<4>;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
    default: {                                \
      using W = Word<8>;                      \
      __VA_ARGS__;                            \
      break;                                  \
    }                                         \
  }

template <class T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

// ---------------------------------------------------------------------------------------------
// Index math

// Division by a fixed divisor with a multiply-high and a shift (Granlund-Montgomery; PyTorch's
// IntDivider). uint32_t: divisor in [1, 2^31], dividend < 2^31. uint64_t: divisor in [1, 2^63],
// dividend < 2^63. Both bounds hold here: counts and offsets are checked against INT32_MAX before
// the 32-bit path is taken, and no tensor has 2^63 elements.
template <class U>
struct FastDiv;

template <>
struct FastDiv<uint32_t> {
  uint32_t magic = 1;
  uint32_t shift = 0;
  FastDiv() = default;
  explicit FastDiv(uint32_t d) {
    while ((uint64_t{1} << shift) < d) ++shift;
    magic = static_cast<uint32_t>(((uint64_t{1} << 32) * ((uint64_t{1} << shift) - d)) / d + 1);
  }
  SEG_HD uint32_t div(uint32_t n) const {
#if defined(__CUDA_ARCH__)
    const uint32_t t = __umulhi(n, magic);
#else
    const uint32_t t = static_cast<uint32_t>((static_cast<uint64_t>(n) * magic) >> 32);
#endif
    return (t + n) >> shift;
  }
};

template <>
struct FastDiv<uint64_t> {
  uint64_t magic = 1;
  uint32_t shift = 0;
  FastDiv() = default;
  explicit FastDiv(uint64_t d) {
    while (shift < 63 && (uint64_t{1} << shift) < d) ++shift;
    const unsigned __int128 one = 1;
    magic = static_cast<uint64_t>(((one << 64) * ((one << shift) - d)) / d + 1);
  }
  SEG_HD uint64_t div(uint64_t n) const {
#if defined(__CUDA_ARCH__)
    const uint64_t t = __umul64hi(n, magic);
#else
    const uint64_t t = static_cast<uint64_t>((static_cast<unsigned __int128>(n) * magic) >> 64);
#endif
    return (t + n) >> shift;
  }
};

// Sizes and strides of N operands over one iteration space, outermost dim first.
template <int N>
struct Dims {
  int ndim = 0;
  int64_t sizes[kMaxDims] = {};
  int64_t strides[N][kMaxDims] = {};

  int64_t numel() const {
    int64_t n = 1;
    for (int d = 0; d < ndim; ++d) n *= sizes[d];
    return n;
  }
  // Whether linear indices and every operand's offsets fit the 32-bit path.
  bool fits_int32() const {
    if (numel() > INT32_MAX) return false;
    for (int k = 0; k < N; ++k) {
      int64_t span = 0;
      for (int d = 0; d < ndim; ++d) {
        span += (sizes[d] - 1) * (strides[k][d] < 0 ? -strides[k][d] : strides[k][d]);
      }
      if (span > INT32_MAX) return false;
    }
    return true;
  }
};

// Drops size-1 dims and merges dims contiguous with their inner neighbour in every operand (the
// CPU's StridedLoop). At least one dim remains (a single element: size 1, strides 1).
template <int N>
Dims<N> coalesce(int ndim, const int64_t* sizes, const int64_t* const (&strides)[N]) {
  Dims<N> d;
  for (int i = 0; i < ndim; ++i) {
    if (sizes[i] == 1) continue;
    if (d.ndim > 0) {
      bool merge = true;
      for (int k = 0; k < N; ++k) {
        if (d.strides[k][d.ndim - 1] != strides[k][i] * sizes[i]) merge = false;
      }
      if (merge) {
        d.sizes[d.ndim - 1] *= sizes[i];
        for (int k = 0; k < N; ++k) d.strides[k][d.ndim - 1] = strides[k][i];
        continue;
      }
    }
    d.sizes[d.ndim] = sizes[i];
    for (int k = 0; k < N; ++k) d.strides[k][d.ndim] = strides[k][i];
    ++d.ndim;
  }
  if (d.ndim == 0) {
    d.ndim = 1;
    d.sizes[0] = 1;
    for (int k = 0; k < N; ++k) d.strides[k][0] = 1;
  }
  return d;
}

// Linear index over some dims -> the offset of each operand. Dims stored innermost first; the
// outermost needs no division (the index is in range).
template <int N, class Index>
struct OffsetCalc {
  using Off = std::make_signed_t<Index>;
  int ndim = 0;
  Index sizes[kMaxDims] = {};
  FastDiv<Index> divs[kMaxDims];
  Off strides[N][kMaxDims] = {};

  __device__ __forceinline__ void get(Index linear, Off (&off)[N]) const {
#pragma unroll
    for (int k = 0; k < N; ++k) off[k] = 0;
#pragma unroll
    for (int d = 0; d < kMaxDims; ++d) {
      if (d == ndim) break;
      Index idx = linear;
      if (d < ndim - 1) {
        const Index q = divs[d].div(linear);
        idx = linear - q * sizes[d];
        linear = q;
      }
#pragma unroll
      for (int k = 0; k < N; ++k) off[k] += static_cast<Off>(idx) * strides[k][d];
    }
  }
};

// The calculator of dims [begin, end) of `d` (outermost first there).
template <class Index, int N>
OffsetCalc<N, Index> make_offset_calc(const Dims<N>& d, int begin, int end) {
  OffsetCalc<N, Index> c;
  c.ndim = end - begin;
  for (int j = 0; j < c.ndim; ++j) {
    const int src = end - 1 - j;
    c.sizes[j] = static_cast<Index>(d.sizes[src]);
    c.divs[j] = FastDiv<Index>(static_cast<Index>(d.sizes[src]));
    for (int k = 0; k < N; ++k)
      c.strides[k][j] = static_cast<std::make_signed_t<Index>>(d.strides[k][src]);
  }
  return c;
}

// ---------------------------------------------------------------------------------------------
// The row kernel: out = f(in0, in1) elementwise over coalesced strided dims (fill, copy, binary)

template <class W>
struct FillFn {
  static constexpr int kInputs = 0;
  using Out = W;
  using In0 = W;
  using In1 = W;
  W value;
  __device__ __forceinline__ Out operator()(In0, In1) const { return value; }
};

template <class S, class D>
struct CastFn {
  static constexpr int kInputs = 1;
  using Out = D;
  using In0 = S;
  using In1 = S;
  __device__ __forceinline__ Out operator()(In0 s, In1) const { return convert<S, D>(s); }
};

template <class T, BinaryOp kOp>
struct BinaryFn {
  static constexpr int kInputs = 2;
  using Out = T;
  using In0 = T;
  using In1 = T;
  __device__ __forceinline__ Out operator()(In0 a, In1 b) const {
    return binary_apply<T>(kOp, a, b);
  }
};

template <int N, class Index>
struct RowPlan {
  OffsetCalc<N, Index> outer;  // row index -> row offsets (all dims but the innermost)
  Index row_len = 0;           // innermost dim
  Index units_per_row = 0;     // ceil(row_len / kVec)
  FastDiv<Index> units_div;
  Index total_units = 0;                    // rows * units_per_row (<= numel)
  std::make_signed_t<Index> inner[N] = {};  // innermost strides
  bool vec = false;  // rows contiguous or broadcast, aligned: vector loads and stores
};

// kVec values of operand `p` at row offset `off`, elements i0 .. i0 + kVec - 1 of the row: one
// vector load (stride 1, aligned) or one broadcast load (stride 0).
template <class T, class Off>
__device__ __forceinline__ void load_row_vec(const T* p, Off off, Off stride, Off i0,
                                             T (&v)[kVec]) {
  if (stride == 0) {
    const T x = p[off];
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = x;
  } else {
    const Pack<T, kVec> x = *reinterpret_cast<const Pack<T, kVec>*>(p + off + i0);
#pragma unroll
    for (int j = 0; j < kVec; ++j) v[j] = x.v[j];
  }
}

template <class F, class Index>
__global__ void __launch_bounds__(kThreads)
    rows_kernel(const F f, const RowPlan<F::kInputs + 1, Index> plan, typename F::Out* out,
                const typename F::In0* in0, const typename F::In1* in1) {
  using Off = std::make_signed_t<Index>;
  using Out = typename F::Out;
  using A = typename F::In0;
  using B = typename F::In1;
  constexpr int N = F::kInputs + 1;
  const Index step = static_cast<Index>(gridDim.x) * blockDim.x;
  for (Index u = static_cast<Index>(blockIdx.x) * blockDim.x + threadIdx.x; u < plan.total_units;
       u += step) {
    const Index row = plan.units_div.div(u);
    const Index i0 = (u - row * plan.units_per_row) * kVec;
    Off off[N];
    plan.outer.get(row, off);
    A a[kVec] = {};
    B b[kVec] = {};
    if (plan.vec && i0 + kVec <= plan.row_len) {
      if constexpr (N > 1) load_row_vec(in0, off[1], plan.inner[1], static_cast<Off>(i0), a);
      if constexpr (N > 2) load_row_vec(in1, off[2], plan.inner[2], static_cast<Off>(i0), b);
      Pack<Out, kVec> r;
#pragma unroll
      for (int j = 0; j < kVec; ++j) r.v[j] = f(a[j], b[j]);
      *reinterpret_cast<Pack<Out, kVec>*>(out + off[0] + static_cast<Off>(i0)) = r;
    } else {
      const Index left = plan.row_len - i0;
      const int n = left < static_cast<Index>(kVec) ? static_cast<int>(left) : kVec;
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (j < n) {
          const Off i = static_cast<Off>(i0 + j);
          if constexpr (N > 1) a[j] = in0[off[1] + i * plan.inner[1]];
          if constexpr (N > 2) b[j] = in1[off[2] + i * plan.inner[2]];
        }
      }
#pragma unroll
      for (int j = 0; j < kVec; ++j) {
        if (j < n) out[off[0] + static_cast<Off>(i0 + j) * plan.inner[0]] = f(a[j], b[j]);
      }
    }
  }
}

template <class F, class Index, int N>
void launch_rows_as(const CudaKernelEnv& env, const F& f, const Dims<N>& d, void* out,
                    const void* in0, const void* in1) {
  RowPlan<N, Index> p;
  const int nd = d.ndim;
  const int64_t len = d.sizes[nd - 1];
  const int64_t rows = d.numel() / len;
  const int64_t units_per_row = ceil_div(len, kVec);
  p.outer = make_offset_calc<Index>(d, 0, nd - 1);
  p.row_len = static_cast<Index>(len);
  p.units_per_row = static_cast<Index>(units_per_row);
  p.units_div = FastDiv<Index>(static_cast<Index>(units_per_row));
  p.total_units = static_cast<Index>(rows * units_per_row);
  for (int k = 0; k < N; ++k)
    p.inner[k] = static_cast<std::make_signed_t<Index>>(d.strides[k][nd - 1]);
  // Vector path: the output's rows are contiguous; every input's rows are contiguous or
  // broadcast; a contiguous row starts on a vector boundary (aligned base, outer strides multiples
  // of kVec) and vectors never straddle rows (one row, or rows a multiple of kVec long).
  const void* ptrs[3] = {out, in0, in1};
  const size_t elem[3] = {sizeof(typename F::Out), sizeof(typename F::In0),
                          sizeof(typename F::In1)};
  bool vec = d.strides[0][nd - 1] == 1 && (rows == 1 || len % kVec == 0);
  for (int k = 0; k < N && vec; ++k) {
    const int64_t s = d.strides[k][nd - 1];
    if (s == 0) continue;
    if (s != 1 || !aligned_to(ptrs[k], elem[k] * kVec)) vec = false;
    for (int dd = 0; dd < nd - 1; ++dd) {
      if (d.strides[k][dd] % kVec != 0) vec = false;
    }
  }
  p.vec = vec;
  const unsigned int blocks = blocks_for(env, static_cast<int64_t>(p.total_units), kThreads);
  rows_kernel<F, Index><<<blocks, kThreads, 0, env.stream>>>(
      f, p, static_cast<typename F::Out*>(out), static_cast<const typename F::In0*>(in0),
      static_cast<const typename F::In1*>(in1));
  SEG_CUDA_LAUNCH_CHECK();
}

// out (operand 0 of d) = f(in0, in1) over d's iteration space.
template <class F, int N>
void launch_rows(const CudaKernelEnv& env, const F& f, const Dims<N>& d, void* out, const void* in0,
                 const void* in1) {
  static_assert(N == F::kInputs + 1, "operand count");
  if (d.numel() == 0) return;
  if (d.fits_int32()) {
    launch_rows_as<F, uint32_t>(env, f, d, out, in0, in1);
  } else {
    launch_rows_as<F, uint64_t>(env, f, d, out, in0, in1);
  }
}

// ---------------------------------------------------------------------------------------------
// fill

void fill(const ExecContext& ctx, const View& out, double value) {
  if (out.numel() == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  const int64_t* strides[1] = {out.strides};
  const Dims<1> d = coalesce<1>(out.ndim, out.sizes, strides);
  SEG_CUDA_DISPATCH_ALL(out.dtype, "fill", T, {
    // The value is converted once, on the host, as the CPU converts it; the kernel moves bits.
    const T v = host_store_from_f64<T>(value);
    using W = Word<sizeof(T)>;
    W bits;
    static_assert(sizeof(W) == sizeof(T));
    std::memcpy(&bits, &v, sizeof(T));
    launch_rows(env, FillFn<W>{bits}, d, out.data, nullptr, nullptr);
  });
}

// ---------------------------------------------------------------------------------------------
// copy

// Same-dtype copy where the destination's contiguous dim (i) is not the source's (j): 32x32 tiles
// through shared memory, read along j and written along i. Other dims are a batch.
struct TransposePlan {
  int64_t size_i = 0, size_j = 0;
  int64_t src_stride_i = 0, dst_stride_j = 0;  // dst_stride_i == src_stride_j == 1
  int64_t tiles_i = 0, tiles_j = 0, num_tiles = 0;
  FastDiv<uint64_t> tiles_i_div, tiles_j_div;
  OffsetCalc<2, uint64_t> batch;  // operand 0: dst, 1: src
};

constexpr int kTile = 32;
constexpr int kTileRows = 8;  // block (32, 8): each thread moves 4 elements of a tile

template <class W>
__global__ void __launch_bounds__(kTile* kTileRows)
    transpose_copy_kernel(const TransposePlan p, W* __restrict__ dst, const W* __restrict__ src) {
  __shared__ W tile[kTile][kTile + 1];
  const int tx = threadIdx.x, ty = threadIdx.y;
  for (uint64_t t = blockIdx.x; t < static_cast<uint64_t>(p.num_tiles); t += gridDim.x) {
    const uint64_t q = p.tiles_i_div.div(t);
    const int64_t ti = static_cast<int64_t>(t - q * static_cast<uint64_t>(p.tiles_i));
    const uint64_t b = p.tiles_j_div.div(q);
    const int64_t tj = static_cast<int64_t>(q - b * static_cast<uint64_t>(p.tiles_j));
    int64_t off[2];
    p.batch.get(b, off);
    const int64_t i0 = ti * kTile, j0 = tj * kTile;
#pragma unroll
    for (int k = 0; k < kTile; k += kTileRows) {
      const int64_t i = i0 + ty + k, j = j0 + tx;
      if (i < p.size_i && j < p.size_j) tile[ty + k][tx] = src[off[1] + i * p.src_stride_i + j];
    }
    __syncthreads();
#pragma unroll
    for (int k = 0; k < kTile; k += kTileRows) {
      const int64_t j = j0 + ty + k, i = i0 + tx;
      if (i < p.size_i && j < p.size_j) dst[off[0] + j * p.dst_stride_j + i] = tile[tx][ty + k];
    }
    __syncthreads();
  }
}

// The tiled path applies when some dim is contiguous in dst and another in src, both long enough
// for tiles to pay.
bool plan_transpose(const Dims<2>& d, TransposePlan& p) {
  constexpr int64_t kMinSide = 8;
  int di = -1, dj = -1;
  for (int k = 0; k < d.ndim; ++k) {
    if (d.strides[0][k] == 1 && di < 0) di = k;
    if (d.strides[1][k] == 1 && dj < 0) dj = k;
  }
  if (di < 0 || dj < 0 || di == dj) return false;
  if (d.sizes[di] < kMinSide || d.sizes[dj] < kMinSide) return false;
  p.size_i = d.sizes[di];
  p.size_j = d.sizes[dj];
  p.src_stride_i = d.strides[1][di];
  p.dst_stride_j = d.strides[0][dj];
  p.tiles_i = ceil_div(p.size_i, kTile);
  p.tiles_j = ceil_div(p.size_j, kTile);
  Dims<2> rest;
  for (int k = 0; k < d.ndim; ++k) {
    if (k == di || k == dj) continue;
    rest.sizes[rest.ndim] = d.sizes[k];
    rest.strides[0][rest.ndim] = d.strides[0][k];
    rest.strides[1][rest.ndim] = d.strides[1][k];
    ++rest.ndim;
  }
  const int64_t batch = rest.numel();
  p.num_tiles = p.tiles_i * p.tiles_j * batch;
  p.tiles_i_div = FastDiv<uint64_t>(static_cast<uint64_t>(p.tiles_i));
  p.tiles_j_div = FastDiv<uint64_t>(static_cast<uint64_t>(p.tiles_j));
  p.batch = make_offset_calc<uint64_t>(rest, 0, rest.ndim);
  return true;
}

template <class S, class D>
void copy_convert(const CudaKernelEnv& env, const Dims<2>& d, void* dst, const void* src) {
  launch_rows(env, CastFn<S, D>{}, d, dst, src, nullptr);
}

template <class S>
void copy_from(const CudaKernelEnv& env, DType dst_dtype, const Dims<2>& d, void* dst,
               const void* src) {
  SEG_CUDA_DISPATCH_ALL(dst_dtype, "copy", D, { copy_convert<S, D>(env, d, dst, src); });
}

void copy(const ExecContext& ctx, const View& src, const View& dst) {
  if (dst.numel() == 0) return;
  if (src.ndim != dst.ndim)
    throw std::invalid_argument("copy: source and destination ranks differ");
  for (int k = 0; k < dst.ndim; ++k) {
    if (src.sizes[k] != dst.sizes[k])
      throw std::invalid_argument("copy: source and destination sizes differ");
  }
  const CudaKernelEnv& env = env_of(ctx);
  const int64_t* strides[2] = {dst.strides, src.strides};
  const Dims<2> d = coalesce<2>(dst.ndim, dst.sizes, strides);
  if (src.dtype != dst.dtype) {
    SEG_CUDA_DISPATCH_ALL(src.dtype, "copy", S,
                          { copy_from<S>(env, dst.dtype, d, dst.data, src.data); });
    return;
  }
  const size_t elem = dtype_size(dst.dtype);
  if (d.ndim == 1 && d.strides[0][0] == 1 && d.strides[1][0] == 1) {
    SEG_CUDA_CHECK(cudaMemcpyAsync(dst.data, src.data, static_cast<size_t>(d.sizes[0]) * elem,
                                   cudaMemcpyDeviceToDevice, env.stream));
    return;
  }
  TransposePlan tp;
  if (plan_transpose(d, tp)) {
    SEG_CUDA_DISPATCH_WORD(static_cast<int>(elem), W, {
      const unsigned int blocks = blocks_for(env, tp.num_tiles, 1);
      transpose_copy_kernel<W><<<blocks, dim3(kTile, kTileRows), 0, env.stream>>>(
          tp, static_cast<W*>(dst.data), static_cast<const W*>(src.data));
      SEG_CUDA_LAUNCH_CHECK();
    });
    return;
  }
  SEG_CUDA_DISPATCH_WORD(static_cast<int>(elem), W,
                         { launch_rows(env, CastFn<W, W>{}, d, dst.data, src.data, nullptr); });
}

// ---------------------------------------------------------------------------------------------
// arange

template <class T>
__global__ void __launch_bounds__(kThreads)
    arange_kernel(T* out, int64_t n, double start, double step) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < n;
       i += stride) {
    out[i] = store_from_f64<T>(arange_value(start, step, i));
  }
}

void arange(const ExecContext& ctx, const View& out, double start, double step) {
  const int64_t n = out.numel();
  if (n == 0) return;
  if (!out.is_contiguous()) throw std::invalid_argument("arange: output must be contiguous");
  const CudaKernelEnv& env = env_of(ctx);
  SEG_CUDA_DISPATCH_ALL(out.dtype, "arange", T, {
    arange_kernel<T>
        <<<blocks_for(env, n, kThreads), kThreads, 0, env.stream>>>(out.ptr<T>(), n, start, step);
    SEG_CUDA_LAUNCH_CHECK();
  });
}

// ---------------------------------------------------------------------------------------------
// random
//
// A thread computes one Philox block's worth of elements (4 for 32-bit draws, 2 for f64 uniform,
// 1 for f64 normal) with the shared helpers of kernels/common/elementwise.h, so element i has the
// value the CPU gives it.

template <class T>
__device__ __forceinline__ T store_random_f32(float v) {
  if constexpr (std::is_same_v<T, float>) {
    return v;
  } else {
    return store_from_f64<T>(static_cast<double>(v));  // bf16 / f16: round the f32 value (RNE)
  }
}

template <class T, RandomKind kKind>
__global__ void random_kernel(T* out, int64_t n, double a, double b, uint64_t seed, uint64_t call,
                              bool vec) {
  constexpr bool kF64 = std::is_same_v<T, double>;
  constexpr int G = (kF64 && kKind == RandomKind::uniform)  ? 2
                    : (kF64 && kKind == RandomKind::normal) ? 1
                                                            : 4;
  const int64_t groups = ceil_div(n, G);
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t g = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; g < groups;
       g += stride) {
    Pack<T, G> v;
    if constexpr (G == 4) {
      float f[4];
      random_group_f32(kKind, a, b, seed, call, static_cast<uint64_t>(g), f);
#pragma unroll
      for (int l = 0; l < 4; ++l) v.v[l] = store_random_f32<T>(f[l]);
    } else if constexpr (G == 2) {
      double f[2];
      random_group_uniform_f64(a, b, seed, call, static_cast<uint64_t>(g), f);
      v.v[0] = f[0];
      v.v[1] = f[1];
    } else {
      v.v[0] = random_normal_f64(a, b, philox_normal_f64(seed, call, static_cast<uint64_t>(g)));
    }
    const int64_t i0 = g * G;
    if (vec && i0 + G <= n) {
      *reinterpret_cast<Pack<T, G>*>(out + i0) = v;
    } else {
#pragma unroll
      for (int l = 0; l < G; ++l) {
        if (i0 + l < n) out[i0 + l] = v.v[l];
      }
    }
  }
}

template <class T>
void random_typed(const CudaKernelEnv& env, const View& out, RandomKind kind, double a, double b,
                  uint64_t seed, uint64_t call) {
  const int64_t n = out.numel();
  const bool f64 = std::is_same_v<T, double>;
  const int group = (f64 && kind == RandomKind::uniform)  ? 2
                    : (f64 && kind == RandomKind::normal) ? 1
                                                          : 4;
  const bool vec = aligned_to(out.data, sizeof(T) * group);
  const unsigned int blocks = blocks_for(env, ceil_div(n, group), kThreads);
  T* p = static_cast<T*>(out.data);
  switch (kind) {
    case RandomKind::uniform:
      random_kernel<T, RandomKind::uniform>
          <<<blocks, kThreads, 0, env.stream>>>(p, n, a, b, seed, call, vec);
      break;
    case RandomKind::normal:
      random_kernel<T, RandomKind::normal>
          <<<blocks, kThreads, 0, env.stream>>>(p, n, a, b, seed, call, vec);
      break;
    case RandomKind::bernoulli:
      random_kernel<T, RandomKind::bernoulli>
          <<<blocks, kThreads, 0, env.stream>>>(p, n, a, b, seed, call, vec);
      break;
  }
  SEG_CUDA_LAUNCH_CHECK();
}

void random_fill(const ExecContext& ctx, const View& out, RandomKind kind, double a, double b,
                 uint64_t seed, uint64_t call) {
  if (out.numel() == 0) return;
  if (!out.is_contiguous()) throw std::invalid_argument("random: output must be contiguous");
  const CudaKernelEnv& env = env_of(ctx);
  switch (out.dtype) {
    case DType::f32: random_typed<float>(env, out, kind, a, b, seed, call); break;
    case DType::f64: random_typed<double>(env, out, kind, a, b, seed, call); break;
    case DType::bf16: random_typed<Bf16>(env, out, kind, a, b, seed, call); break;
    case DType::f16: random_typed<F16>(env, out, kind, a, b, seed, call); break;
    default: unsupported("random", out.dtype);
  }
}

// ---------------------------------------------------------------------------------------------
// unary (contiguous; y may alias x, gx may alias gy: each element is read and written by one
// thread)

template <class F>
void dispatch_unary_op(UnaryOp op, F&& f) {
  switch (op) {
#define SEG_UNARY_CASE(name) \
  case UnaryOp::name: f(std::integral_constant<UnaryOp, UnaryOp::name>{}); break;
    SEG_UNARY_CASE(neg)
    SEG_UNARY_CASE(relu)
    SEG_UNARY_CASE(abs)
    SEG_UNARY_CASE(exp)
    SEG_UNARY_CASE(log)
    SEG_UNARY_CASE(sqrt)
    SEG_UNARY_CASE(tanh)
    SEG_UNARY_CASE(sigmoid)
    SEG_UNARY_CASE(add_scalar)
    SEG_UNARY_CASE(mul_scalar)
    SEG_UNARY_CASE(pow_scalar)
    SEG_UNARY_CASE(rsub_scalar)
#undef SEG_UNARY_CASE
  }
}

template <class T, UnaryOp kOp>
__global__ void unary_forward_kernel(const T* x, T* y, T alpha, int64_t n, bool vec) {
  constexpr int V = 16 / sizeof(T);
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t tail = 0;
  if (vec) {
    const int64_t units = n / V;
    for (int64_t u = tid; u < units; u += stride) {
      Pack<T, V> p = reinterpret_cast<const Pack<T, V>*>(x)[u];
#pragma unroll
      for (int j = 0; j < V; ++j) p.v[j] = unary_forward<T>(kOp, p.v[j], alpha);
      reinterpret_cast<Pack<T, V>*>(y)[u] = p;
    }
    tail = units * V;
  }
  for (int64_t i = tail + tid; i < n; i += stride) y[i] = unary_forward<T>(kOp, x[i], alpha);
}

template <class T, UnaryOp kOp>
__global__ void unary_backward_kernel(const T* x, const T* y, const T* gy, T* gx, T alpha,
                                      int64_t n, bool vec) {
  constexpr int V = 16 / sizeof(T);
  const int64_t tid = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  int64_t tail = 0;
  if (vec) {
    using P = Pack<T, V>;
    const int64_t units = n / V;
    for (int64_t u = tid; u < units; u += stride) {
      P px{}, py{};
      if (x) px = reinterpret_cast<const P*>(x)[u];
      if (y) py = reinterpret_cast<const P*>(y)[u];
      P g = reinterpret_cast<const P*>(gy)[u];
#pragma unroll
      for (int j = 0; j < V; ++j) g.v[j] = unary_backward<T>(kOp, px.v[j], py.v[j], g.v[j], alpha);
      reinterpret_cast<P*>(gx)[u] = g;
    }
    tail = units * V;
  }
  for (int64_t i = tail + tid; i < n; i += stride) {
    gx[i] = unary_backward<T>(kOp, x ? x[i] : T(0), y ? y[i] : T(0), gy[i], alpha);
  }
}

template <class T>
void unary_forward_typed(const CudaKernelEnv& env, UnaryOp op, double alpha, const View& x,
                         const View& y) {
  const int64_t n = x.numel();
  const bool vec = aligned_to(x.data, 16) && aligned_to(y.data, 16);
  const unsigned int blocks = blocks_for(env, ceil_div(n, vec ? 16 / sizeof(T) : 1), kThreads);
  const T a = static_cast<T>(alpha);  // as the CPU rounds the scalar
  dispatch_unary_op(op, [&](auto tag) {
    unary_forward_kernel<T, decltype(tag)::value>
        <<<blocks, kThreads, 0, env.stream>>>(x.ptr<const T>(), y.ptr<T>(), a, n, vec);
  });
  SEG_CUDA_LAUNCH_CHECK();
}

void unary_forward_cuda(const ExecContext& ctx, UnaryOp op, double alpha, const View& x,
                        const View& y) {
  const int64_t n = x.numel();
  if (y.numel() != n || y.dtype != x.dtype)
    throw std::invalid_argument("unary: x and y differ in size or dtype");
  if (!x.is_contiguous() || !y.is_contiguous())
    throw std::invalid_argument("unary: x and y must be contiguous");
  if (n == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32: unary_forward_typed<float>(env, op, alpha, x, y); break;
    case DType::f64: unary_forward_typed<double>(env, op, alpha, x, y); break;
    default: unsupported("unary", x.dtype);
  }
}

template <class T>
void unary_backward_typed(const CudaKernelEnv& env, UnaryOp op, double alpha, const View& x,
                          const View& y, const View& gy, const View& gx) {
  const int64_t n = gy.numel();
  const T* px = x.defined() ? x.ptr<const T>() : nullptr;
  const T* py = y.defined() ? y.ptr<const T>() : nullptr;
  const bool vec = aligned_to(px, 16) && aligned_to(py, 16) && aligned_to(gy.data, 16) &&
                   aligned_to(gx.data, 16);  // a null pointer is aligned
  const unsigned int blocks = blocks_for(env, ceil_div(n, vec ? 16 / sizeof(T) : 1), kThreads);
  const T a = static_cast<T>(alpha);
  dispatch_unary_op(op, [&](auto tag) {
    unary_backward_kernel<T, decltype(tag)::value>
        <<<blocks, kThreads, 0, env.stream>>>(px, py, gy.ptr<const T>(), gx.ptr<T>(), a, n, vec);
  });
  SEG_CUDA_LAUNCH_CHECK();
}

void unary_backward_cuda(const ExecContext& ctx, UnaryOp op, double alpha, const View& x,
                         const View& y, const View& gy, const View& gx) {
  const int64_t n = gy.numel();
  if (gx.numel() != n || gx.dtype != gy.dtype)
    throw std::invalid_argument("unary backward: gy and gx differ");
  for (const View* v : {&x, &y}) {
    if (v->defined() && (v->numel() != n || v->dtype != gy.dtype || !v->is_contiguous())) {
      throw std::invalid_argument(
          "unary backward: saved tensors must be contiguous and shaped like gy");
    }
  }
  if (!gy.is_contiguous() || !gx.is_contiguous())
    throw std::invalid_argument("unary backward: gy and gx must be contiguous");
  if (n == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  switch (gy.dtype) {
    case DType::f32: unary_backward_typed<float>(env, op, alpha, x, y, gy, gx); break;
    case DType::f64: unary_backward_typed<double>(env, op, alpha, x, y, gy, gx); break;
    default: unsupported("unary backward", gy.dtype);
  }
}

// ---------------------------------------------------------------------------------------------
// binary

template <class T>
void binary_typed(const CudaKernelEnv& env, BinaryOp op, const Dims<3>& d, const View& a,
                  const View& b, const View& out) {
  switch (op) {
    case BinaryOp::add:
      launch_rows(env, BinaryFn<T, BinaryOp::add>{}, d, out.data, a.data, b.data);
      break;
    case BinaryOp::sub:
      launch_rows(env, BinaryFn<T, BinaryOp::sub>{}, d, out.data, a.data, b.data);
      break;
    case BinaryOp::mul:
      launch_rows(env, BinaryFn<T, BinaryOp::mul>{}, d, out.data, a.data, b.data);
      break;
    case BinaryOp::div:
      launch_rows(env, BinaryFn<T, BinaryOp::div>{}, d, out.data, a.data, b.data);
      break;
  }
}

void binary_forward(const ExecContext& ctx, BinaryOp op, const View& a, const View& b,
                    const View& out) {
  if (a.dtype != out.dtype || b.dtype != out.dtype)
    throw std::invalid_argument("binary: operands differ in dtype");
  if (a.ndim != out.ndim || b.ndim != out.ndim)
    throw std::invalid_argument("binary: operands differ in rank");
  for (int k = 0; k < out.ndim; ++k) {
    if (a.sizes[k] != out.sizes[k] || b.sizes[k] != out.sizes[k]) {
      throw std::invalid_argument("binary: operands must have the output's sizes (expanded)");
    }
  }
  if (out.numel() == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  const int64_t* strides[3] = {out.strides, a.strides, b.strides};
  const Dims<3> d = coalesce<3>(out.ndim, out.sizes, strides);
  switch (out.dtype) {
    case DType::f32: binary_typed<float>(env, op, d, a, b, out); break;
    case DType::f64: binary_typed<double>(env, op, d, a, b, out); break;
    case DType::i32: binary_typed<int32_t>(env, op, d, a, b, out); break;
    case DType::i64: binary_typed<int64_t>(env, op, d, a, b, out); break;
    default: unsupported("binary", out.dtype);
  }
}

// ---------------------------------------------------------------------------------------------
// sum

template <class T>
using SumAcc = std::conditional_t<std::is_integral_v<T>, long long, double>;

template <class A>
__device__ __forceinline__ A warp_sum(A v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  return v;  // lane 0 holds the sum: ((l0 + l16) + (l8 + l24)) + ..., a fixed tree
}

// Splits of each output's reduction, from the shapes only (the summation order must not depend on
// the device): enough (output group, split) work items to fill any current GPU, each thread of a
// team still getting a useful run of loads.
constexpr int64_t kTargetItems = 1024;
constexpr int64_t kMinUnitsPerThread = 8;

struct Split {
  int64_t splits = 1, chunk = 0;
};
Split choose_split(int64_t work, int64_t team_threads, int64_t groups) {
  Split s;
  int64_t n = ceil_div(kTargetItems, std::max<int64_t>(groups, 1));
  n = std::min(n, std::max<int64_t>(1, work / (team_threads * kMinUnitsPerThread)));
  n = std::clamp<int64_t>(n, 1, 65536);
  s.chunk = ceil_div(work, n);
  s.splits = ceil_div(work, s.chunk);
  return s;
}

// Inner layout: x's innermost dim is reduced.
template <class Index>
struct SumInnerPlan {
  OffsetCalc<1, Index> kept;  // output index -> x offset
  OffsetCalc<1, Index> rows;  // reduced row (reduced dims but the innermost) -> x offset
  Index n_out = 0;
  Index units = 0;  // per output: reduced rows * units_per_row
  Index units_per_row = 0;
  FastDiv<Index> units_div;
  std::make_signed_t<Index> inner_stride = 0;  // of the innermost reduced dim (V == 1)
  Index chunk = 0;                             // units per split
  int64_t splits = 1;
  int64_t items = 0;  // output groups * splits
};

template <class T, class A>
__device__ __forceinline__ void sum_write(T* y, A* partial, int64_t o, int64_t s, int64_t splits,
                                          A v) {
  if (splits == 1) {
    y[o] = static_cast<T>(v);
  } else {
    partial[o * splits + s] = v;
  }
}

// A team of kTeam threads (a warp or the block) per output; V elements per load (vector when the
// reduced rows are contiguous and aligned).
template <class T, class Index, int V, int kTeam>
__global__ void __launch_bounds__(kThreads)
    sum_inner_kernel(const T* __restrict__ x, T* __restrict__ y, SumAcc<T>* __restrict__ partial,
                     const SumInnerPlan<Index> p) {
  using A = SumAcc<T>;
  using Off = std::make_signed_t<Index>;
  constexpr int kTeams = kThreads / kTeam;
  __shared__ A warp_totals[kThreads / 32];
  const int team = threadIdx.x / kTeam, lane = threadIdx.x % kTeam;
  for (int64_t item = blockIdx.x; item < p.items; item += gridDim.x) {
    const int64_t group = item / p.splits, s = item - group * p.splits;
    const int64_t o = group * kTeams + team;
    A acc = 0;
    if (o < static_cast<int64_t>(p.n_out)) {
      Off base[1];
      p.kept.get(static_cast<Index>(o), base);
      const Index begin = static_cast<Index>(s) * p.chunk;
      const Index end = p.units - begin < p.chunk ? p.units : begin + p.chunk;
      Index cached_row = ~Index(0);
      Off row_off = 0;
      for (Index u = begin + lane; u < end; u += kTeam) {
        const Index row = p.units_div.div(u);
        const Index k = u - row * p.units_per_row;
        if (row != cached_row) {
          Off r[1];
          p.rows.get(row, r);
          row_off = r[0];
          cached_row = row;
        }
        const Off off = base[0] + row_off;
        if constexpr (V > 1) {
          const Pack<T, V> v =
              *reinterpret_cast<const Pack<T, V>*>(x + off + static_cast<Off>(k) * V);
#pragma unroll
          for (int j = 0; j < V; ++j) acc += static_cast<A>(v.v[j]);
        } else {
          acc += static_cast<A>(x[off + static_cast<Off>(k) * p.inner_stride]);
        }
      }
    }
    acc = warp_sum(acc);
    if constexpr (kTeam == 32) {
      if (lane == 0 && o < static_cast<int64_t>(p.n_out))
        sum_write(y, partial, o, s, p.splits, acc);
    } else {
      if (threadIdx.x % 32 == 0) warp_totals[threadIdx.x / 32] = acc;
      __syncthreads();
      if (threadIdx.x < 32) {
        A t = threadIdx.x < kThreads / 32 ? warp_totals[threadIdx.x] : A(0);
        t = warp_sum(t);
        if (threadIdx.x == 0 && o < static_cast<int64_t>(p.n_out))
          sum_write(y, partial, o, s, p.splits, t);
      }
      __syncthreads();  // warp_totals is reused by the next item
    }
  }
}

// Outer layout: x's innermost dim is kept. Block (kBX outputs) x (kThreads / kBX reduction lanes).
template <class Index>
struct SumOuterPlan {
  OffsetCalc<1, Index> kept;  // output index -> x offset
  OffsetCalc<1, Index> red;   // reduction index -> x offset
  Index n_out = 0, n_red = 0, chunk = 0;
  int64_t splits = 1, items = 0;
};

template <class T, class Index, int kBX>
__global__ void __launch_bounds__(kThreads)
    sum_outer_kernel(const T* __restrict__ x, T* __restrict__ y, SumAcc<T>* __restrict__ partial,
                     const SumOuterPlan<Index> p) {
  using A = SumAcc<T>;
  using Off = std::make_signed_t<Index>;
  constexpr int kBY = kThreads / kBX;
  __shared__ A tree[kBY][kBX];
  const int tx = threadIdx.x % kBX, ty = threadIdx.x / kBX;
  for (int64_t item = blockIdx.x; item < p.items; item += gridDim.x) {
    const int64_t group = item / p.splits, s = item - group * p.splits;
    const int64_t o = group * kBX + tx;
    A acc = 0;
    if (o < static_cast<int64_t>(p.n_out)) {
      Off base[1];
      p.kept.get(static_cast<Index>(o), base);
      const Index begin = static_cast<Index>(s) * p.chunk;
      const Index end = p.n_red - begin < p.chunk ? p.n_red : begin + p.chunk;
#pragma unroll 4
      for (Index r = begin + ty; r < end; r += kBY) {
        Off ro[1];
        p.red.get(r, ro);
        acc += static_cast<A>(x[base[0] + ro[0]]);
      }
    }
    tree[ty][tx] = acc;
    __syncthreads();
#pragma unroll
    for (int h = kBY / 2; h > 0; h >>= 1) {
      if (ty < h) tree[ty][tx] += tree[ty + h][tx];
      __syncthreads();
    }
    if (ty == 0 && o < static_cast<int64_t>(p.n_out))
      sum_write(y, partial, o, s, p.splits, tree[0][tx]);
    __syncthreads();  // tree is reused by the next item
  }
}

// y[o] = sum of the `splits` partials of output o, a warp per output in a fixed tree.
template <class T>
__global__ void __launch_bounds__(kThreads)
    sum_finalize_kernel(const SumAcc<T>* __restrict__ partial, T* __restrict__ y, int64_t n_out,
                        int64_t splits) {
  using A = SumAcc<T>;
  constexpr int kWarps = kThreads / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t o = static_cast<int64_t>(blockIdx.x) * kWarps + warp; o < n_out;
       o += static_cast<int64_t>(gridDim.x) * kWarps) {
    A acc = 0;
    for (int64_t s = lane; s < splits; s += 32) acc += partial[o * splits + s];
    acc = warp_sum(acc);
    if (lane == 0) y[o] = static_cast<T>(acc);
  }
}

template <class T>
void sum_finalize(const CudaKernelEnv& env, const SumAcc<T>* partial, T* y, int64_t n_out,
                  int64_t splits) {
  sum_finalize_kernel<T><<<blocks_for(env, n_out, kThreads / 32), kThreads, 0, env.stream>>>(
      partial, y, n_out, splits);
  SEG_CUDA_LAUNCH_CHECK();
}

// x's kept and reduced dims (size-1 dims dropped), each coalesced.
struct SumLayout {
  Dims<1> kept, red;
  int64_t n_out = 1, n_red = 1;
};

template <class T, class Index>
void sum_inner(const CudaKernelEnv& env, const SumLayout& L, const View& x, const View& y) {
  using A = SumAcc<T>;
  const Dims<1>& red = L.red;
  const int nr = red.ndim;
  const int64_t row_len = red.sizes[nr - 1];
  const int64_t inner_stride = red.strides[0][nr - 1];
  const int64_t n_rows = L.n_red / row_len;
  constexpr int kV = 16 / sizeof(T);
  // Vector loads: contiguous aligned rows of a multiple of kV, every row and output starting on a
  // vector boundary.
  bool vec = inner_stride == 1 && row_len % kV == 0 && aligned_to(x.data, 16);
  for (int k = 0; k < nr - 1; ++k) vec = vec && red.strides[0][k] % kV == 0;
  for (int k = 0; k < L.kept.ndim; ++k) vec = vec && L.kept.strides[0][k] % kV == 0;
  const int64_t v = vec ? kV : 1;

  SumInnerPlan<Index> p;
  p.kept = make_offset_calc<Index>(L.kept, 0, L.kept.ndim);
  p.rows = make_offset_calc<Index>(red, 0, nr - 1);
  p.n_out = static_cast<Index>(L.n_out);
  const int64_t units_per_row = row_len / v;
  p.units_per_row = static_cast<Index>(units_per_row);
  p.units_div = FastDiv<Index>(static_cast<Index>(units_per_row));
  p.units = static_cast<Index>(n_rows * units_per_row);
  p.inner_stride = static_cast<std::make_signed_t<Index>>(inner_stride);
  const int64_t units = n_rows * units_per_row;
  // A block per output for long reductions, a warp per output for short ones.
  const bool block_team = units >= 2048;
  const int64_t team = block_team ? kThreads : 32;
  const int64_t groups = ceil_div(L.n_out, kThreads / team);
  const Split split = choose_split(units, team, groups);
  p.chunk = static_cast<Index>(split.chunk);
  p.splits = split.splits;
  p.items = groups * split.splits;

  ScratchBuffer partial(
      env, split.splits > 1 ? static_cast<size_t>(L.n_out * split.splits) * sizeof(A) : 0);
  const unsigned int blocks = blocks_for(env, p.items, 1);
  const T* px = x.ptr<const T>();
  T* py = y.ptr<T>();
  A* pp = partial.as<A>();
  if (vec) {
    if (block_team) {
      sum_inner_kernel<T, Index, kV, kThreads><<<blocks, kThreads, 0, env.stream>>>(px, py, pp, p);
    } else {
      sum_inner_kernel<T, Index, kV, 32><<<blocks, kThreads, 0, env.stream>>>(px, py, pp, p);
    }
  } else {
    if (block_team) {
      sum_inner_kernel<T, Index, 1, kThreads><<<blocks, kThreads, 0, env.stream>>>(px, py, pp, p);
    } else {
      sum_inner_kernel<T, Index, 1, 32><<<blocks, kThreads, 0, env.stream>>>(px, py, pp, p);
    }
  }
  SEG_CUDA_LAUNCH_CHECK();
  if (split.splits > 1) sum_finalize<T>(env, pp, py, L.n_out, split.splits);
}

template <class T, class Index>
void sum_outer(const CudaKernelEnv& env, const SumLayout& L, const View& x, const View& y) {
  using A = SumAcc<T>;
  SumOuterPlan<Index> p;
  p.kept = make_offset_calc<Index>(L.kept, 0, L.kept.ndim);
  p.red = make_offset_calc<Index>(L.red, 0, L.red.ndim);
  p.n_out = static_cast<Index>(L.n_out);
  p.n_red = static_cast<Index>(L.n_red);
  // Narrow kept rows (fewer than 32 consecutive outputs) use 8 outputs x 32 reduction lanes.
  const bool wide = L.kept.sizes[L.kept.ndim - 1] >= 32;
  const int64_t bx = wide ? 32 : 8;
  const int64_t groups = ceil_div(L.n_out, bx);
  const Split split = choose_split(L.n_red, kThreads / bx, groups);
  p.chunk = static_cast<Index>(split.chunk);
  p.splits = split.splits;
  p.items = groups * split.splits;

  ScratchBuffer partial(
      env, split.splits > 1 ? static_cast<size_t>(L.n_out * split.splits) * sizeof(A) : 0);
  const unsigned int blocks = blocks_for(env, p.items, 1);
  const T* px = x.ptr<const T>();
  T* py = y.ptr<T>();
  A* pp = partial.as<A>();
  if (wide) {
    sum_outer_kernel<T, Index, 32><<<blocks, kThreads, 0, env.stream>>>(px, py, pp, p);
  } else {
    sum_outer_kernel<T, Index, 8><<<blocks, kThreads, 0, env.stream>>>(px, py, pp, p);
  }
  SEG_CUDA_LAUNCH_CHECK();
  if (split.splits > 1) sum_finalize<T>(env, pp, py, L.n_out, split.splits);
}

template <class T>
void sum_typed(const CudaKernelEnv& env, const SumLayout& L, int kept_dims, const View& x,
               const View& y) {
  // 32-bit indexing when every index and offset of x fits.
  int64_t span = 0;
  for (const Dims<1>* g : {&L.kept, &L.red}) {
    for (int k = 0; k < g->ndim; ++k) {
      span += (g->sizes[k] - 1) * (g->strides[0][k] < 0 ? -g->strides[0][k] : g->strides[0][k]);
    }
  }
  const bool small = L.n_out * L.n_red <= INT32_MAX && span <= INT32_MAX;
  // The innermost dim of x (smallest stride) decides the layout.
  const bool outer =
      kept_dims > 0 && L.kept.strides[0][L.kept.ndim - 1] < L.red.strides[0][L.red.ndim - 1];
  if (outer) {
    small ? sum_outer<T, uint32_t>(env, L, x, y) : sum_outer<T, uint64_t>(env, L, x, y);
  } else {
    small ? sum_inner<T, uint32_t>(env, L, x, y) : sum_inner<T, uint64_t>(env, L, x, y);
  }
}

void sum(const ExecContext& ctx, const View& x, const View& y) {
  if (x.dtype != y.dtype || x.ndim != y.ndim)
    throw std::invalid_argument("sum: x and y differ in dtype or rank");
  for (int d = 0; d < x.ndim; ++d) {
    if (y.sizes[d] != x.sizes[d] && y.sizes[d] != 1)
      throw std::invalid_argument("sum: y is not x's keepdim shape");
  }
  if (!y.is_contiguous()) throw std::invalid_argument("sum: y must be contiguous");
  switch (x.dtype) {
    case DType::f32:
    case DType::f64:
    case DType::i32:
    case DType::i64: break;
    default: unsupported("sum", x.dtype);
  }
  if (y.numel() == 0) return;
  const CudaKernelEnv& env = env_of(ctx);
  // Kept dims (outer) and reduced dims, each in x's order, size-1 dims dropped (the CPU's split).
  SumLayout L;
  int64_t ks[kMaxDims] = {}, kst[kMaxDims] = {}, rs[kMaxDims] = {}, rst[kMaxDims] = {};
  int nk = 0, nr = 0;
  for (int d = 0; d < x.ndim; ++d) {
    if (x.sizes[d] == 1) continue;
    if (y.sizes[d] == x.sizes[d]) {
      ks[nk] = x.sizes[d];
      kst[nk++] = x.strides[d];
    } else {
      rs[nr] = x.sizes[d];
      rst[nr++] = x.strides[d];
    }
  }
  const int64_t* kstr[1] = {kst};
  const int64_t* rstr[1] = {rst};
  L.kept = coalesce<1>(nk, ks, kstr);
  L.red = coalesce<1>(nr, rs, rstr);
  L.n_out = L.kept.numel();
  L.n_red = L.red.numel();
  if (nr == 0) {  // nothing to reduce: y = x
    copy(ctx, x, y);
    return;
  }
  if (L.n_red == 0) {  // an empty reduction: zeros
    fill(ctx, y, 0.0);
    return;
  }
  if (nk == 0) L.kept.strides[0][0] = 0;  // one output at offset 0
  switch (x.dtype) {
    case DType::f32: sum_typed<float>(env, L, nk, x, y); break;
    case DType::f64: sum_typed<double>(env, L, nk, x, y); break;
    case DType::i32: sum_typed<int32_t>(env, L, nk, x, y); break;
    case DType::i64: sum_typed<int64_t>(env, L, nk, x, y); break;
    default: unsupported("sum", x.dtype);
  }
}

// ---------------------------------------------------------------------------------------------
// argmax

template <class T>
__device__ __forceinline__ bool is_nan(T v) {
  if constexpr (std::is_floating_point_v<T>) {
    return v != v;
  } else {
    return false;
  }
}

// Whether candidate (bv, bi) beats (av, ai): NaN is largest (the first NaN wins), then the larger
// value, then the smaller index. A total order, so any combination order finds the CPU's answer.
template <class T>
__device__ __forceinline__ bool argmax_beats(T bv, int64_t bi, T av, int64_t ai) {
  const bool an = is_nan(av), bn = is_nan(bv);
  if (an || bn) return an && bn ? bi < ai : bn;
  if (bv > av) return true;
  if (bv < av) return false;
  return bi < ai;
}

// A thread per output (o, i), scanning j in order as the CPU does.
template <class T>
__global__ void __launch_bounds__(kThreads)
    argmax_thread_kernel(const T* __restrict__ x, int32_t* __restrict__ out, int64_t total,
                         int64_t n, int64_t inner, const FastDiv<uint64_t> inner_div) {
  const int64_t stride = static_cast<int64_t>(gridDim.x) * blockDim.x;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; t < total;
       t += stride) {
    const int64_t o = static_cast<int64_t>(inner_div.div(static_cast<uint64_t>(t)));
    const int64_t i = t - o * inner;
    const T* p = x + o * n * inner + i;
    int64_t best = 0;
    T best_v = p[0];
    for (int64_t j = 1; j < n; ++j) {
      const T v = p[j * inner];
      if (!(v <= best_v) && !is_nan(best_v)) {  // larger, or NaN (the first NaN wins)
        best_v = v;
        best = j;
      }
    }
    out[t] = static_cast<int32_t>(best);
  }
}

// A warp per output: lanes scan j = lane, lane + 32, ... in order, then combine.
template <class T>
__global__ void __launch_bounds__(kThreads)
    argmax_warp_kernel(const T* __restrict__ x, int32_t* __restrict__ out, int64_t total, int64_t n,
                       int64_t inner, const FastDiv<uint64_t> inner_div) {
  using V = std::conditional_t<(sizeof(T) < 4), int, T>;  // shuffles move 32 or 64 bits
  constexpr int kWarps = kThreads / 32;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  for (int64_t t = static_cast<int64_t>(blockIdx.x) * kWarps + warp; t < total;
       t += static_cast<int64_t>(gridDim.x) * kWarps) {
    const int64_t o = static_cast<int64_t>(inner_div.div(static_cast<uint64_t>(t)));
    const int64_t i = t - o * inner;
    const T* p = x + o * n * inner + i;
    V best_v = p[0];  // element 0 is every lane's first candidate
    int64_t best = 0;
    for (int64_t j = lane; j < n; j += 32) {
      const V v = p[j * inner];
      if (argmax_beats(v, j, best_v, best)) {
        best_v = v;
        best = j;
      }
    }
#pragma unroll
    for (int s = 16; s > 0; s >>= 1) {
      const V ov = __shfl_down_sync(0xffffffffu, best_v, s);
      const int64_t oi = __shfl_down_sync(0xffffffffu, best, s);
      if (argmax_beats(ov, oi, best_v, best)) {
        best_v = ov;
        best = oi;
      }
    }
    if (lane == 0) out[t] = static_cast<int32_t>(best);
  }
}

template <class T>
void argmax_typed(const CudaKernelEnv& env, const View& x, int64_t outer, int64_t n, int64_t inner,
                  const View& out) {
  const int64_t total = outer * inner;
  const FastDiv<uint64_t> inner_div(static_cast<uint64_t>(inner));
  // Long reductions over a short inner stride: a warp per output; else a thread per output (the
  // threads of a warp read consecutive i: coalesced when inner is long).
  if (n >= 64 && inner < 32) {
    argmax_warp_kernel<T><<<blocks_for(env, total, kThreads / 32), kThreads, 0, env.stream>>>(
        x.ptr<const T>(), out.ptr<int32_t>(), total, n, inner, inner_div);
  } else {
    argmax_thread_kernel<T><<<blocks_for(env, total, kThreads), kThreads, 0, env.stream>>>(
        x.ptr<const T>(), out.ptr<int32_t>(), total, n, inner, inner_div);
  }
  SEG_CUDA_LAUNCH_CHECK();
}

void argmax(const ExecContext& ctx, const View& x, int64_t outer, int64_t n, int64_t inner,
            const View& out) {
  if (outer * inner == 0) return;
  if (n <= 0) throw std::invalid_argument("argmax: empty reduction");
  if (!x.is_contiguous() || x.numel() != outer * n * inner)
    throw std::invalid_argument("argmax: x must be contiguous (outer, n, inner)");
  if (out.dtype != DType::i32 || !out.is_contiguous() || out.numel() != outer * inner) {
    throw std::invalid_argument("argmax: out must be contiguous i32 (outer, inner)");
  }
  const CudaKernelEnv& env = env_of(ctx);
  switch (x.dtype) {
    case DType::f32: argmax_typed<float>(env, x, outer, n, inner, out); break;
    case DType::f64: argmax_typed<double>(env, x, outer, n, inner, out); break;
    case DType::i32: argmax_typed<int32_t>(env, x, outer, n, inner, out); break;
    case DType::u8: argmax_typed<uint8_t>(env, x, outer, n, inner, out); break;
    default: unsupported("argmax", x.dtype);
  }
}

const FillKernels kFill{&fill};
const CopyKernels kCopy{&copy};
const ArangeKernels kArange{&arange};
const RandomKernels kRandom{&random_fill};
const UnaryKernels kUnary{&unary_forward_cuda, &unary_backward_cuda};
const BinaryKernels kBinary{&binary_forward};
const ReduceKernels kReduce{&sum};
const ArgmaxKernels kArgmax{&argmax};

}  // namespace

void register_elementwise_kernels(KernelRegistry& r) {
  constexpr DeviceType cuda = DeviceType::cuda;
  r.set<OpId::fill>(cuda, &kFill);
  r.set<OpId::copy>(cuda, &kCopy);
  r.set<OpId::arange>(cuda, &kArange);
  r.set<OpId::random>(cuda, &kRandom);
  r.set<OpId::neg>(cuda, &kUnary);
  r.set<OpId::relu>(cuda, &kUnary);
  r.set<OpId::abs>(cuda, &kUnary);
  r.set<OpId::exp>(cuda, &kUnary);
  r.set<OpId::log>(cuda, &kUnary);
  r.set<OpId::sqrt>(cuda, &kUnary);
  r.set<OpId::tanh>(cuda, &kUnary);
  r.set<OpId::sigmoid>(cuda, &kUnary);
  r.set<OpId::add_scalar>(cuda, &kUnary);
  r.set<OpId::mul_scalar>(cuda, &kUnary);
  r.set<OpId::pow_scalar>(cuda, &kUnary);
  r.set<OpId::rsub_scalar>(cuda, &kUnary);
  r.set<OpId::add>(cuda, &kBinary);
  r.set<OpId::sub>(cuda, &kBinary);
  r.set<OpId::mul>(cuda, &kBinary);
  r.set<OpId::div>(cuda, &kBinary);
  r.set<OpId::sum>(cuda, &kReduce);
  r.set<OpId::mean>(cuda, &kReduce);
  r.set<OpId::argmax>(cuda, &kArgmax);
}

}  // namespace seg::cuda
