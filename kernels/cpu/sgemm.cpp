// Our own f32 GEMM (see sgemm.h): register-blocked micro-kernels in the Goto/BLIS loop order.
//
// Design notes
// - Loops: for each column block of NC, for each depth block of KC (B's (KC, NC) panel packed once,
//   where it needs packing), for each row block of MC (A's block packed once, where it needs
//   packing), for each NR-wide sliver of B, for each MR-tall sliver of A: the micro-kernel
//   computes an (MR, NR) tile of C in registers over the KC depth and adds it to C. B's sliver
//   (KC * NR floats) stays in L1 while A's slivers stream through it from L2. Column blocks of
//   672 keep the (MC, NC) block of C and B's (KC, NC) panel in L2 (measured 10-25% faster than
//   3072 at 64-128 rows, where C is rewritten once per depth block).
// - The micro-kernel broadcasts A and vectorises along n: acc[r][:] += a[r][p] * b[p][:]. A's
//   sliver is given as MR row pointers, so A stored (m, k) with short rows and A given by row
//   pointers are read in place (rows past m point at a zero row); A stored (k, m), and A whose
//   rows are far apart, are packed into (MR, kc) row slivers. B is packed into (kc, NR) slivers
//   when it is a matrix; B given by row pointers is read in place when A has few rows (the kernel
//   loads row p of the sliver from rows[p] + j), else packed (aligned loads, amortised over many
//   slivers of A). Transposing packs go 8x8 blocks at a time through registers. Partial tiles are
//   stored with masks.
// - Tiles: AVX-512 8 x 48 or 12 x 32 (24 zmm accumulators each), whichever wastes fewer padded
//   rows and columns on the shape (n = 64 fills two 32-wide slivers but 1.33 48-wide ones);
//   AVX2 6 x 16 (12 ymm accumulators), the classic Haswell shape. Chosen at run time from the CPU's
//   features; the AVX-512 functions are compiled with a target attribute, so the rest of the
//   build keeps its x86-64-v3 flags and runs on AVX2-only machines.
// - The first depth block stores beta * C + alpha * tile (beta == 0: C is not read, so stale NaNs
//   in C cannot leak), later depth blocks add alpha * tile to C. Depth blocks are balanced
//   (ceil(k / ceil(k / KC)) deep) so that no block is a thin remainder.
// - Threads: C is split into ranges of whole slivers (kRangesPerThread per thread, handed out
//   dynamically): along n when B is read in place or each range gets enough columns, else along
//   m. Along
//   n each thread packs what it needs into its own thread_local buffers (kept between calls: fresh
//   pages would cost a page fault each); along m with B packed, the threads pack each (k, nc)
//   panel of B together into one shared buffer and then share out the row ranges against it (one
//   barrier per column block: on a shared machine each barrier may wait out another process's
//   time slice). Each
//   element of C is summed in the same order (depth blocks in order, products in order within a
//   block) whatever the thread count, so results do not depend on it. Inside an OpenMP parallel
//   region the GEMM runs on the calling thread.
#include "kernels/cpu/sgemm.h"

#include <cblas.h>
#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <exception>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define SEG_SGEMM_X86 1
#endif

namespace seg::cpu {
namespace {

// Problems below this many multiply-adds run on one thread (an OpenMP fork costs a few
// microseconds; 2^18 multiply-adds take about that long on one core).
constexpr int64_t kParallelMinMacs = int64_t{1} << 18;
// Ranges of C per thread, handed out dynamically: enough that a thread which loses its core for a
// time slice (a shared machine) does not hold the others up for long, few enough that operands
// read per range stay cheap.
constexpr int64_t kRangesPerThread = 4;
// The shared B panel of an along-m split holds at most this many floats (4 MiB).
constexpr int64_t kSharedPanelFloats = int64_t{1} << 20;
// A split along n gives each range at least this many columns (else it splits along m): every
// range reads all of A, which costs ~1/40 of 512 columns' multiply-adds per row of A.
constexpr int64_t kMinColumnsPerRange = 512;
// A stored (m, k) with a row stride of at least this many floats is packed (see a_packed).
constexpr int64_t kPackAMinLd = 1024;
// B given by row pointers is read in place when m is at most this (see b_rows_in_place).
constexpr int64_t kInPlaceBMaxRows = 64;

struct Problem {
  int64_t m, n, k;
  float alpha;
  GemmOperand a, b;
  float beta;
  float* c;
  int64_t ldc;
  const float* row_bias = nullptr;
};

// Offset within B's row of column j (row pointers with segments; see GemmOperand).
inline int64_t b_offset(const GemmOperand& b, int64_t j) {
  return b.segment > 0 ? j + (j / b.segment) * b.gap : j;
}

// Packing buffers of the calling thread, 64-byte aligned, grown as needed and kept; buffer 2 is
// a row of zeros (A's rows past m).
float* thread_buffer(int which, int64_t floats) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[3];
  Buffer& buf = buffers[which];
  if (buf.size < floats) {
    std::free(buf.data);
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    buf.data = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (buf.data == nullptr) throw std::bad_alloc();
    buf.size = floats;
    if (which == 2) std::fill(buf.data, buf.data + floats, 0.0f);
  }
  return buf.data;
}

// ---- packing ----

#ifdef SEG_SGEMM_X86
// Transposes the 8x8 block held in r[0..7] (r[i] = row i) in place (r[j] = column j).
inline void transpose8x8(__m256 r[8]) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// Lane masks for _mm256_maskload_ps / _mm256_maskstore_ps: kLaneMask + 8 - n enables the first n.
alignas(32) constexpr int32_t kLaneMask[16] = {-1, -1, -1, -1, -1, -1, -1, -1,
                                               0,  0,  0,  0,  0,  0,  0,  0};
inline __m256i lane_mask(int64_t n) {
  return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(kLaneMask + 8 - n));
}
#endif

// A stored (k, m): rows [i0, i0 + mc) and depth [p0, p0 + kc) of op(A) as slivers of MR rows, each
// (MR, kc) row-major; rows past mc are zero.
template <int MR>
void pack_a_transposed(const Problem& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc,
                       float* dst) {
  const float* a = g.a.data;
  const int64_t lda = g.a.ld;
  for (int64_t s = 0; s < mc; s += MR) {
    float* d = dst + s * kc;
    const int64_t rows = std::min<int64_t>(MR, mc - s);
    for (int64_t rb = 0; rb < rows; rb += 8) {  // A(i, p) = a[p * lda + i], 8 rows at a time
      const int64_t nr = std::min<int64_t>(8, rows - rb);
      int64_t p = 0;
#ifdef SEG_SGEMM_X86
      const __m256i mask = lane_mask(nr);
      for (; p + 8 <= kc; p += 8) {
        __m256 v[8];
        for (int q = 0; q < 8; ++q) {
          v[q] = _mm256_maskload_ps(a + (p0 + p + q) * lda + i0 + s + rb, mask);
        }
        transpose8x8(v);
        for (int64_t r = 0; r < nr; ++r) _mm256_storeu_ps(d + (rb + r) * kc + p, v[r]);
      }
#endif
      for (; p < kc; ++p) {
        const float* src = a + (p0 + p) * lda + i0 + s + rb;
        for (int64_t r = 0; r < nr; ++r) d[(rb + r) * kc + p] = src[r];
      }
    }
    std::fill(d + rows * kc, d + MR * kc, 0.0f);
  }
}

// Whether A's blocks are packed: always when A is stored (k, m) (a transpose), and when its rows
// are far apart (a long depth): a sliver's rows then fall on separate pages and on few cache sets,
// and a contiguous copy, made once per block and read by every sliver of B, costs less.
bool a_packed(const Problem& g) {
  return g.a.trans || (g.a.rows == nullptr && g.a.ld >= kPackAMinLd);
}

// A stored (m, k): rows [i0, i0 + mc), depth [p0, p0 + kc) copied into slivers of MR rows, each
// (MR, kc) row-major; rows past mc are zero.
template <int MR>
void pack_a_rows(const Problem& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t s = 0; s < mc; s += MR) {
    float* d = dst + s * kc;
    const int64_t rows = std::min<int64_t>(MR, mc - s);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = g.a.data + (i0 + s + r) * g.a.ld + p0;
      std::copy(src, src + kc, d + r * kc);
    }
    std::fill(d + rows * kc, d + MR * kc, 0.0f);
  }
}

// Row r of A's sliver at rows [i, i + rows), depth from p0: in place, or in the packed block.
template <int MR>
void a_sliver(const Problem& g, int64_t i, int64_t rows, int64_t p0, const float* packed,
              int64_t kc, const float* zeros, const float* out[MR]) {
  for (int r = 0; r < MR; ++r) {
    if (a_packed(g)) {
      out[r] = packed + r * kc;
    } else if (r >= rows) {
      out[r] = zeros;
    } else if (g.a.rows != nullptr) {
      out[r] = g.a.rows[i + r] + p0;
    } else {
      out[r] = g.a.data + (i + r) * g.a.ld + p0;
    }
  }
}

// Columns [j, j + cols) (cols <= NR) and depth [p0, p0 + kc) of op(B) as one (kc, NR) sliver,
// columns past cols zero.
template <int NR>
void pack_b_sliver(const Problem& g, int64_t p0, int64_t kc, int64_t j, int64_t cols, float* d) {
  if (g.b.rows != nullptr && g.b.segment > 0 && j % g.b.segment + cols > g.b.segment) {
    // The sliver's columns cross from one segment into the next: copy piece by piece.
    for (int64_t p = 0; p < kc; ++p) {
      const float* row = g.b.rows[p0 + p];
      float* dp = d + p * NR;
      for (int64_t u = 0; u < cols;) {
        const int64_t col = j + u, run = std::min(cols - u, g.b.segment - col % g.b.segment);
        std::copy(row + b_offset(g.b, col), row + b_offset(g.b, col) + run, dp + u);
        u += run;
      }
      std::fill(dp + cols, dp + NR, 0.0f);
    }
    return;
  }
  if (g.b.rows != nullptr || !g.b.trans) {  // row p of the sliver is contiguous in the source
    for (int64_t p = 0; p < kc; ++p) {
      const float* src = g.b.rows != nullptr ? g.b.rows[p0 + p] + b_offset(g.b, j)
                                             : g.b.data + (p0 + p) * g.b.ld + j;
      float* dp = d + p * NR;
      if (cols == NR) {  // a fixed-size copy: vector moves, not a library call
        for (int64_t jj = 0; jj < NR; ++jj) dp[jj] = src[jj];
        continue;
      }
      std::copy(src, src + cols, dp);
      std::fill(dp + cols, dp + NR, 0.0f);
    }
    return;
  }
  // B(p, j) = b[j * ldb + p]: a transpose, 8 columns by 8 depths at a time
  const float* b = g.b.data;
  const int64_t ldb = g.b.ld;
  int64_t p = 0;
#ifdef SEG_SGEMM_X86
  for (; p + 8 <= kc; p += 8) {
    for (int64_t jb = 0; jb < NR; jb += 8) {
      __m256 v[8];
      for (int q = 0; q < 8; ++q) {
        v[q] =
            jb + q < cols ? _mm256_loadu_ps(b + (j + jb + q) * ldb + p0 + p) : _mm256_setzero_ps();
      }
      transpose8x8(v);
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(d + (p + q) * NR + jb, v[q]);
    }
  }
#endif
  for (; p < kc; ++p) {
    for (int64_t jj = 0; jj < NR; ++jj) {
      d[p * NR + jj] = jj < cols ? b[(j + jj) * ldb + p0 + p] : 0.0f;
    }
  }
}

// Whether B given by row pointers is read in place rather than packed: when A has few rows, so
// that each B sliver serves few micro-kernel calls and packing it would cost a good share of
// them. With more rows, packing pays: packed slivers are aligned, in-place rows usually are not
// (every vector load then spans two cache lines).
bool b_rows_in_place(const Problem& g) {
  return g.b.rows != nullptr && g.m <= kInPlaceBMaxRows;
}

// Whether B's sliver at columns [j, j + cols) is read in place (whole slivers within a segment).
template <int NR>
bool b_in_place(const Problem& g, int64_t j, int64_t cols) {
  return b_rows_in_place(g) && cols == NR &&
         (g.b.segment == 0 || j % g.b.segment + NR <= g.b.segment);
}

// Prefetches columns [j, j + width) of rows[0, kc) into L2: the next sliver of a B read in place,
// whose rows are kc separate streams that the hardware prefetchers do not follow.
inline void prefetch_rows(const float* const* rows, int64_t kc, int64_t j, int64_t width) {
#ifdef SEG_SGEMM_X86
  for (int64_t p = 0; p < kc; ++p) {
    const char* row = reinterpret_cast<const char*>(rows[p] + j);
    for (int64_t off = 0; off < width * static_cast<int64_t>(sizeof(float)); off += 64) {
      _mm_prefetch(row + off, _MM_HINT_T1);
    }
  }
#else
  (void)rows, (void)kc, (void)j, (void)width;
#endif
}

// ---- micro-kernels ----
// C (mr <= MR rows, nr <= NR columns, row stride ldc) = beta * C + alpha * A_sliver x B_sliver,
// A_sliver row r at a[r][0, kc); B_sliver packed (kc, NR) at b, or, when b_rows is set, row p at
// b_rows[p] + b_col. beta == 0 does not read C. With bias, bias[r] is added to row r.

using MicroKernel = void (*)(int64_t kc, const float* const* a, const float* b,
                             const float* const* b_rows, int64_t b_col, float* c, int64_t ldc,
                             int mr, int nr, float alpha, float beta, const float* bias);

#ifdef SEG_SGEMM_X86

// acc[r][:] += a[r][p] * b[p][:] for one depth p.
template <int MR, int V>
__attribute__((target("avx512f,fma"), always_inline)) inline void fma_step_avx512(
    __m512 (&acc)[MR][V], const __m512 (&bv)[V], const float* const (&ar)[MR], int64_t p) {
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    const __m512 av = _mm512_set1_ps(ar[r][p]);
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
  }
}

template <int MR, int V>
__attribute__((target("avx2,fma"), always_inline)) inline void fma_step_avx2(
    __m256 (&acc)[MR][V], const __m256 (&bv)[V], const float* const (&ar)[MR], int64_t p) {
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    const __m256 av = _mm256_broadcast_ss(ar[r] + p);
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
  }
}

template <int MR, int NR>
__attribute__((target("avx512f,fma"))) void micro_avx512(int64_t kc, const float* const* a,
                                                         const float* b, const float* const* b_rows,
                                                         int64_t b_col, float* c, int64_t ldc,
                                                         int mr, int nr, float alpha, float beta,
                                                         const float* bias) {
  constexpr int V = NR / 16;
  const float* ar[MR];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) ar[r] = a[r];
  // C's tile is read and written after the loop: start fetching it now.
  for (int r = 0; r < mr; ++r) {
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v)
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 16 * v), _MM_HINT_T0);
  }
  __m512 acc[MR][V];
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  if (b_rows == nullptr) {
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
      __m512 bv[V];
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) bv[v] = _mm512_load_ps(b + p * NR + 16 * v);
      fma_step_avx512<MR, V>(acc, bv, ar, p);
    }
  } else {
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
      const float* bp = b_rows[p] + b_col;
      __m512 bv[V];
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) bv[v] = _mm512_loadu_ps(bp + 16 * v);
      fma_step_avx512<MR, V>(acc, bv, ar, p);
    }
  }
  __mmask16 mask[V];
#pragma GCC unroll 3
  for (int v = 0; v < V; ++v) {
    const int cols = std::clamp(nr - 16 * v, 0, 16);
    mask[v] = static_cast<__mmask16>((1u << cols) - 1u);
  }
  const __m512 bb = _mm512_set1_ps(beta), aa = _mm512_set1_ps(alpha);
#pragma GCC unroll 12
  for (int r = 0; r < MR; ++r) {
    if (r >= mr) break;
    float* cr = c + r * ldc;
    const __m512 br = _mm512_set1_ps(bias ? bias[r] : 0.0f);
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      __m512 out = alpha == 1.0f ? acc[r][v] : _mm512_mul_ps(aa, acc[r][v]);
      if (bias) out = _mm512_add_ps(out, br);
      if (beta != 0.0f) {
        const __m512 old = _mm512_maskz_loadu_ps(mask[v], cr + 16 * v);
        out = beta == 1.0f ? _mm512_add_ps(out, old) : _mm512_fmadd_ps(bb, old, out);
      }
      _mm512_mask_storeu_ps(cr + 16 * v, mask[v], out);
    }
  }
}

template <int MR, int NR>
__attribute__((target("avx2,fma"))) void micro_avx2(int64_t kc, const float* const* a,
                                                    const float* b, const float* const* b_rows,
                                                    int64_t b_col, float* c, int64_t ldc, int mr,
                                                    int nr, float alpha, float beta,
                                                    const float* bias) {
  constexpr int V = NR / 8;
  const float* ar[MR];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) ar[r] = a[r];
  for (int r = 0; r < mr; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v)
      _mm_prefetch(reinterpret_cast<const char*>(c + r * ldc + 8 * v), _MM_HINT_T0);
  }
  __m256 acc[MR][V];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  if (b_rows == nullptr) {
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
      __m256 bv[V];
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) bv[v] = _mm256_load_ps(b + p * NR + 8 * v);
      fma_step_avx2<MR, V>(acc, bv, ar, p);
    }
  } else {
#pragma GCC unroll 4
    for (int64_t p = 0; p < kc; ++p) {
      const float* bp = b_rows[p] + b_col;
      __m256 bv[V];
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) bv[v] = _mm256_loadu_ps(bp + 8 * v);
      fma_step_avx2<MR, V>(acc, bv, ar, p);
    }
  }
  __m256i mask[V];
#pragma GCC unroll 2
  for (int v = 0; v < V; ++v) mask[v] = lane_mask(std::clamp(nr - 8 * v, 0, 8));
  const bool full = nr == NR;
  const __m256 bb = _mm256_set1_ps(beta), aa = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    if (r >= mr) break;
    float* cr = c + r * ldc;
    const __m256 br = _mm256_set1_ps(bias ? bias[r] : 0.0f);
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m256 out = alpha == 1.0f ? acc[r][v] : _mm256_mul_ps(aa, acc[r][v]);
      if (bias) out = _mm256_add_ps(out, br);
      if (full) {
        if (beta != 0.0f) {
          const __m256 old = _mm256_loadu_ps(cr + 8 * v);
          out = beta == 1.0f ? _mm256_add_ps(out, old) : _mm256_fmadd_ps(bb, old, out);
        }
        _mm256_storeu_ps(cr + 8 * v, out);
      } else {
        if (beta != 0.0f) {
          const __m256 old = _mm256_maskload_ps(cr + 8 * v, mask[v]);
          out = beta == 1.0f ? _mm256_add_ps(out, old) : _mm256_fmadd_ps(bb, old, out);
        }
        _mm256_maskstore_ps(cr + 8 * v, mask[v], out);
      }
    }
  }
}

#endif  // SEG_SGEMM_X86

// ---- the blocked loops ----

struct Blocking {
  int64_t kc, mc, nc;
};

// Depth blocks: balanced, ceil(k / ceil(k / KC)) deep, so that no block is a thin remainder.
struct DepthBlocks {
  int64_t count, size;
  DepthBlocks(int64_t k, int64_t kc) : count((k + kc - 1) / kc), size((k + count - 1) / count) {}
};

// Packs the slivers [s0, s1) of B's column block at jc (nc wide) over depth [p0, p0 + kc) into
// panel (sliver s at panel + s * NR * kc); slivers read in place are skipped.
template <int NR>
void pack_b_block(const Problem& g, int64_t p0, int64_t kc, int64_t jc, int64_t nc, int64_t s0,
                  int64_t s1, float* panel) {
  for (int64_t sl = s0; sl < s1; ++sl) {
    const int64_t jr = sl * NR, cols = std::min<int64_t>(NR, nc - jr);
    if (!b_in_place<NR>(g, jc + jr, cols)) {
      pack_b_sliver<NR>(g, p0, kc, jc + jr, cols, panel + jr * kc);
    }
  }
}

// The tiles of C rows [ic, ic + mc) x columns [jc, jc + nc) over depth [p0, p0 + kc), B from
// panel (packed) or in place, A packed into abuf first when stored transposed.
template <int MR, int NR>
void block_tiles(const Problem& g, MicroKernel micro, int64_t jc, int64_t nc, int64_t ic,
                 int64_t mc, int64_t p0, int64_t kc, float beta, const float* panel, float* abuf,
                 const float* zeros) {
  const float* bias = p0 == 0 ? g.row_bias : nullptr;  // added with the first depth block
  if (g.a.trans) {
    pack_a_transposed<MR>(g, ic, mc, p0, kc, abuf);
  } else if (a_packed(g)) {
    pack_a_rows<MR>(g, ic, mc, p0, kc, abuf);
  }
  for (int64_t jr = 0; jr < nc; jr += NR) {
    const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
    const bool b_direct = b_in_place<NR>(g, jc + jr, nr);
    if (b_rows_in_place(g) && jr + NR < nc) {
      prefetch_rows(g.b.rows + p0, kc, b_offset(g.b, jc + jr + NR), NR);
    }
    for (int64_t ir = 0; ir < mc; ir += MR) {
      const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
      const float* a[MR];
      a_sliver<MR>(g, ic + ir, mr, p0, abuf + ir * kc, kc, zeros, a);
      micro(kc, a, panel + jr * kc, b_direct ? g.b.rows + p0 : nullptr,
            b_direct ? b_offset(g.b, jc + jr) : 0, g.c + (ic + ir) * g.ldc + jc + jr, g.ldc, mr, nr,
            g.alpha, beta, bias ? bias + ic + ir : nullptr);
    }
  }
}

// C rows [m0, m1), columns [n0, n1) on the calling thread.
template <int MR, int NR>
void gemm_range(const Problem& g, const Blocking& bl, MicroKernel micro, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) {
  const DepthBlocks db(g.k, bl.kc);
  const int64_t nc_max = std::min(bl.nc, (n1 - n0 + NR - 1) / NR * NR);
  const int64_t mc_max = std::min(bl.mc, (m1 - m0 + MR - 1) / MR * MR);
  float* panel = thread_buffer(0, db.size * nc_max);                         // slivers (kc, NR)
  float* abuf = a_packed(g) ? thread_buffer(1, db.size * mc_max) : nullptr;  // slivers (MR, kc)
  const float* zeros = thread_buffer(2, db.size);
  for (int64_t jc = n0; jc < n1; jc += bl.nc) {
    const int64_t nc = std::min(bl.nc, n1 - jc), slivers = (nc + NR - 1) / NR;
    if (b_rows_in_place(g)) {
      // B read in place (only a partial last sliver is packed, cheaply, per block): the depth
      // loop goes inside the row blocks, so each (mc, nc) block of C stays in cache across it.
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        for (int64_t kb = 0; kb < db.count; ++kb) {
          const int64_t p0 = kb * db.size, kc = std::min(db.size, g.k - p0);
          pack_b_block<NR>(g, p0, kc, jc, nc, 0, slivers, panel);
          block_tiles<MR, NR>(g, micro, jc, nc, ic, std::min(bl.mc, m1 - ic), p0, kc,
                              kb == 0 ? g.beta : 1.0f, panel, abuf, zeros);
        }
      }
    } else {
      // B packed once per depth block and reused by every row block.
      for (int64_t kb = 0; kb < db.count; ++kb) {
        const int64_t p0 = kb * db.size, kc = std::min(db.size, g.k - p0);
        pack_b_block<NR>(g, p0, kc, jc, nc, 0, slivers, panel);
        for (int64_t ic = m0; ic < m1; ic += bl.mc) {
          block_tiles<MR, NR>(g, micro, jc, nc, ic, std::min(bl.mc, m1 - ic), p0, kc,
                              kb == 0 ? g.beta : 1.0f, panel, abuf, zeros);
        }
      }
    }
  }
}

// Split along m with B packed: for each block of columns, the threads pack B's whole (k, nc)
// panel together, once, into the calling thread's buffer, then share out the row ranges
// (dynamically) against it. Independent row ranges would each pack all of B; packing depth block
// by depth block would cost two barriers per block, and on a shared machine every barrier can
// wait out a time slice of the other thread. Column blocks are narrowed so that the panel stays
// within kSharedPanelFloats (in the last-level cache).
template <int MR, int NR>
void gemm_shared_b(const Problem& g, const Blocking& bl, MicroKernel micro, int threads) {
  const DepthBlocks db(g.k, bl.kc);
  const int64_t nc_block =
      std::clamp<int64_t>(kSharedPanelFloats / std::max<int64_t>(g.k, 1) / NR * NR, NR, bl.nc);
  const int64_t nc_max = std::min(nc_block, (g.n + NR - 1) / NR * NR);
  const int64_t m_slivers = (g.m + MR - 1) / MR;
  const int64_t ranges = std::min<int64_t>(m_slivers, int64_t{threads} * kRangesPerThread);
  const int64_t range_rows = (m_slivers + ranges - 1) / ranges * MR;
  // (k, nc) panel: depth block kb's slivers at panel + kb * size * nc_max
  float* panel = thread_buffer(0, db.count * db.size * nc_max);
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    float* abuf = nullptr;
    const float* zeros = nullptr;
    try {
      abuf = a_packed(g) ? thread_buffer(1, db.size * std::min(bl.mc, range_rows)) : nullptr;
      zeros = thread_buffer(2, db.size);
    } catch (...) {
#pragma omp critical(seg_sgemm_error)
      error = std::current_exception();
    }
#pragma omp barrier
    if (!error) {
      for (int64_t jc = 0; jc < g.n; jc += nc_block) {
        const int64_t nc = std::min(nc_block, g.n - jc), slivers = (nc + NR - 1) / NR;
#pragma omp for schedule(static) collapse(2)
        for (int64_t kb = 0; kb < db.count; ++kb) {
          for (int64_t sl = 0; sl < slivers; ++sl) {
            const int64_t p0 = kb * db.size, kc = std::min(db.size, g.k - p0);
            pack_b_block<NR>(g, p0, kc, jc, nc, sl, sl + 1, panel + kb * db.size * nc_max);
          }
        }
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < ranges; ++t) {
          const int64_t s0 = m_slivers * t / ranges, s1 = m_slivers * (t + 1) / ranges;
          const int64_t lo = std::min(g.m, s0 * MR), hi = std::min(g.m, s1 * MR);
          for (int64_t ic = lo; ic < hi; ic += bl.mc) {
            for (int64_t kb = 0; kb < db.count; ++kb) {
              const int64_t p0 = kb * db.size, kc = std::min(db.size, g.k - p0);
              block_tiles<MR, NR>(g, micro, jc, nc, ic, std::min(bl.mc, hi - ic), p0, kc,
                                  kb == 0 ? g.beta : 1.0f, panel + kb * db.size * nc_max, abuf,
                                  zeros);
            }
          }
        }
      }
    }
  }
  if (error) std::rethrow_exception(error);
}

// Splits C into ranges of whole slivers (see the design notes) and runs gemm_range on each, the
// ranges handed out to the threads dynamically; along m with B packed, gemm_shared_b.
template <int MR, int NR>
void gemm_parallel(const Problem& g, const Blocking& bl, MicroKernel micro) {
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (g.m * g.n * g.k < kParallelMinMacs) threads = 1;
  const int64_t n_slivers = (g.n + NR - 1) / NR, m_slivers = (g.m + MR - 1) / MR;
  // Along n every range reads (and may pack) all of A: cheap when each range has many columns to
  // spend it on. Along m with B packed, the threads share each packed panel of B (nothing is read
  // twice), at the cost of two barriers per panel. Along m with B read in place (A has few rows),
  // every range would read all of B.
  const bool n_ok = n_slivers >= 2 * threads, m_ok = m_slivers >= 2 * threads;
  const int64_t n_ranges = std::min<int64_t>(n_slivers, int64_t{threads} * kRangesPerThread);
  const bool along_n =
      n_ok && (!m_ok || b_rows_in_place(g) || g.n >= kMinColumnsPerRange * n_ranges);
  if (!n_ok && !m_ok) threads = 1;
  if (threads == 1) {
    gemm_range<MR, NR>(g, bl, micro, 0, g.m, 0, g.n);
    return;
  }
  if (!along_n && !b_rows_in_place(g)) {
    gemm_shared_b<MR, NR>(g, bl, micro, threads);
    return;
  }
  const int64_t slivers = along_n ? n_slivers : m_slivers, width = along_n ? NR : MR;
  const int64_t extent = along_n ? g.n : g.m;
  const int64_t ranges = std::min<int64_t>(slivers, int64_t{threads} * kRangesPerThread);
  std::exception_ptr error;
#pragma omp parallel for schedule(dynamic) num_threads(threads)
  for (int64_t t = 0; t < ranges; ++t) {
    const int64_t s0 = slivers * t / ranges, s1 = slivers * (t + 1) / ranges;
    const int64_t lo = std::min(extent, s0 * width), hi = std::min(extent, s1 * width);
    if (lo >= hi) continue;
    try {
      if (along_n) {
        gemm_range<MR, NR>(g, bl, micro, 0, g.m, lo, hi);
      } else {
        gemm_range<MR, NR>(g, bl, micro, lo, hi, 0, g.n);
      }
    } catch (...) {
#pragma omp critical(seg_sgemm_error)
      error = std::current_exception();
    }
  }
  if (error) std::rethrow_exception(error);
}

// Share of a tile grid's multiply-adds that are real (not padding) for an (m, n) problem.
double tile_fill(int64_t m, int64_t n, int64_t mr, int64_t nr) {
  const double mt = static_cast<double>((m + mr - 1) / mr * mr);
  const double nt = static_cast<double>((n + nr - 1) / nr * nr);
  return static_cast<double>(m) / mt * static_cast<double>(n) / nt;
}

// C = beta * C (exact zeros for beta == 0), plus the row bias.
void scale_c(const Problem& g) {
  for (int64_t i = 0; i < g.m; ++i) {
    float* row = g.c + i * g.ldc;
    if (g.beta == 0.0f) {
      std::fill(row, row + g.n, 0.0f);
    } else if (g.beta != 1.0f) {
      for (int64_t j = 0; j < g.n; ++j) row[j] *= g.beta;
    }
    if (g.row_bias != nullptr) {
      for (int64_t j = 0; j < g.n; ++j) row[j] += g.row_bias[i];
    }
  }
}

// OpenBLAS, for machines without AVX2; operands given by row pointers are copied into matrices.
void blas_sgemm(const Problem& g) {
  std::unique_ptr<float[]> a_dense, b_dense;
  const float* a = g.a.data;
  const float* b = g.b.data;
  int64_t lda = g.a.ld, ldb = g.b.ld;
  if (g.a.rows != nullptr) {
    a_dense.reset(new float[static_cast<size_t>(g.m * g.k)]);
    for (int64_t i = 0; i < g.m; ++i) std::copy(g.a.rows[i], g.a.rows[i] + g.k, &a_dense[i * g.k]);
    a = a_dense.get();
    lda = g.k;
  }
  if (g.b.rows != nullptr) {
    b_dense.reset(new float[static_cast<size_t>(g.k * g.n)]);
    for (int64_t p = 0; p < g.k; ++p) {
      for (int64_t j = 0; j < g.n; ++j) b_dense[p * g.n + j] = g.b.rows[p][b_offset(g.b, j)];
    }
    b = b_dense.get();
    ldb = g.n;
  }
  cblas_sgemm(CblasRowMajor, g.a.trans ? CblasTrans : CblasNoTrans,
              g.b.trans ? CblasTrans : CblasNoTrans, static_cast<int>(g.m), static_cast<int>(g.n),
              static_cast<int>(g.k), g.alpha, a, static_cast<int>(lda), b, static_cast<int>(ldb),
              g.beta, g.c, static_cast<int>(g.ldc));
  if (g.row_bias != nullptr) {
    for (int64_t i = 0; i < g.m; ++i) {
      for (int64_t j = 0; j < g.n; ++j) g.c[i * g.ldc + j] += g.row_bias[i];
    }
  }
}

void run(GemmIsa isa, const Problem& g) {
  if (g.m <= 0 || g.n <= 0) return;
  if (g.k <= 0 || g.alpha == 0.0f) {
    scale_c(g);
    return;
  }
  switch (isa) {
#ifdef SEG_SGEMM_X86
    case GemmIsa::avx512:
      if (tile_fill(g.m, g.n, 12, 32) > 1.02 * tile_fill(g.m, g.n, 8, 48)) {
        gemm_parallel<12, 32>(g, Blocking{192, 192, 672}, micro_avx512<12, 32>);
      } else {
        gemm_parallel<8, 48>(g, Blocking{192, 192, 672}, micro_avx512<8, 48>);
      }
      return;
    case GemmIsa::avx2: gemm_parallel<6, 16>(g, Blocking{256, 144, 672}, micro_avx2<6, 16>); return;
#endif
    default: blas_sgemm(g); return;
  }
}

GemmIsa detect_isa() {
#ifdef SEG_SGEMM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return GemmIsa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmIsa::avx2;
#endif
  return GemmIsa::blas;
}

void check_operand(const GemmOperand& op, const char* name) {
  if (op.rows != nullptr && op.trans) {
    throw std::invalid_argument(std::string("sgemm: operand ") + name +
                                " given by row pointers cannot also be transposed");
  }
}

}  // namespace

GemmIsa best_gemm_isa() {
  static const GemmIsa isa = detect_isa();  // a property of the processor, read once
  return isa;
}

const char* gemm_isa_name(GemmIsa isa) {
  switch (isa) {
    case GemmIsa::avx512: return "avx512";
    case GemmIsa::avx2: return "avx2";
    case GemmIsa::blas: return "blas";
  }
  return "?";
}

bool gemm_isa_supported(GemmIsa isa) {
  const GemmIsa best = best_gemm_isa();
  switch (isa) {
    case GemmIsa::avx512: return best == GemmIsa::avx512;
    case GemmIsa::avx2: return best == GemmIsa::avx512 || best == GemmIsa::avx2;
    case GemmIsa::blas: return true;
  }
  return false;
}

void sgemm_ex_with(GemmIsa isa, int64_t m, int64_t n, int64_t k, float alpha, const GemmOperand& a,
                   const GemmOperand& b, float beta, float* c, int64_t ldc, const float* row_bias) {
  if (!gemm_isa_supported(isa)) {
    throw std::invalid_argument(std::string("sgemm: this processor cannot run the ") +
                                gemm_isa_name(isa) + " kernels");
  }
  check_operand(a, "A");
  check_operand(b, "B");
  if (b.segment < 0 || b.gap < 0 || (b.segment > 0 && b.rows == nullptr && k > 0)) {
    throw std::invalid_argument("sgemm: B's segments need row pointers and sizes >= 0");
  }
  run(isa, Problem{m, n, k, alpha, a, b, beta, c, ldc, row_bias});
}

void sgemm_ex(int64_t m, int64_t n, int64_t k, float alpha, const GemmOperand& a,
              const GemmOperand& b, float beta, float* c, int64_t ldc, const float* row_bias) {
  sgemm_ex_with(best_gemm_isa(), m, n, k, alpha, a, b, beta, c, ldc, row_bias);
}

void sgemm_with(GemmIsa isa, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                float* c, int64_t ldc) {
  sgemm_ex_with(isa, m, n, k, alpha, GemmOperand::matrix(a, lda, trans_a),
                GemmOperand::matrix(b, ldb, trans_b), beta, c, ldc);
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_with(best_gemm_isa(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace seg::cpu
