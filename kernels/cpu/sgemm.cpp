// Our own f32 GEMM (see sgemm.h): packed operands and register-blocked micro-kernels, in the
// Goto/BLIS loop order.
//
// Design notes
// - Loops: for each column block of NC, for each depth block of KC (B's (KC, NC) panel packed
// once),
//   for each row block of MC (A's (MC, KC) block packed once), for each NR-wide sliver of B, for
//   each MR-tall sliver of A: the micro-kernel computes an (MR, NR) tile of C in registers over
//   the KC depth and adds it to C. B's sliver (KC * NR floats) stays in L1 while the row slivers
//   of A stream through it from L2.
// - The micro-kernel broadcasts A and vectorises along n: acc[r][:] += a[r][p] * b[p][:]. Packed A
//   slivers are (MR, kc) row-major (MR streams of kc contiguous values): packing the usual
//   row-major A is then a row copy, and the operand that needs a transpose while packing is the
//   one stored (k, m) or (n, k), which the callers choose to be the smaller one. Packed B slivers
//   are (kc, NR). Partial slivers are zero-padded; partial tiles are stored with masks.
// - AVX-512: MR 8 x NR 48 (24 zmm accumulators, 3 for B, 1 broadcast). AVX2: MR 6 x NR 16 (12 ymm
//   accumulators), the classic Haswell shape. Chosen at run time from the CPU's features; the
//   AVX-512 functions are compiled with a target attribute, so the rest of the build keeps its
//   x86-64-v3 flags and runs on AVX2-only machines.
// - A stored (m, k) is read in place (its rows are the slivers' rows); only partial slivers and
//   A stored (k, m) are packed. Transposing packs go 8x8 blocks at a time through registers.
// - The first depth block stores beta * C + alpha * tile (beta == 0: C is not read, so stale NaNs
//   in C cannot leak), later depth blocks add alpha * tile to C.
// - Depth blocks are balanced (ceil(k / ceil(k / KC)) deep) so that no block is a thin remainder.
// - Threads: C is split into one range of whole slivers per thread, along n when n has enough
//   slivers (and is the larger side), else along m; each thread packs what it needs into its own
//   thread_local buffers (kept between calls: fresh pages would cost a page fault each). Each
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

struct Problem {
  bool trans_a, trans_b;
  int64_t m, n, k;
  float alpha;
  const float* a;
  int64_t lda;
  const float* b;
  int64_t ldb;
  float beta;
  float* c;
  int64_t ldc;
};

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

// Whether the micro-kernel can read A's rows [i, i + MR) in place: op(A) is A itself (rows of
// contiguous depth) and the sliver is whole. Otherwise the sliver is packed.
inline bool a_in_place(const Problem& g, int64_t rows, int mr) {
  return !g.trans_a && rows == mr;
}

// Rows [i0, i0 + mc) and depth [p0, p0 + kc) of op(A) as slivers of MR rows, each (MR, kc)
// row-major; rows past mc are zero. Slivers that a_in_place() reads from A are skipped.
template <int MR>
void pack_a(const Problem& g, int64_t i0, int64_t mc, int64_t p0, int64_t kc, float* dst) {
  for (int64_t s = 0; s < mc; s += MR) {
    float* d = dst + s * kc;
    const int64_t rows = std::min<int64_t>(MR, mc - s);
    if (a_in_place(g, rows, MR)) continue;
    if (!g.trans_a) {  // A(i, p) = a[i * lda + p]
      for (int64_t r = 0; r < rows; ++r) {
        const float* src = g.a + (i0 + s + r) * g.lda + p0;
        std::copy(src, src + kc, d + r * kc);
      }
    } else {  // A(i, p) = a[p * lda + i]: a transpose, 8 depths by 8 rows at a time
      int64_t p = 0;
#ifdef SEG_SGEMM_X86
      if (MR <= 8) {
        const __m256i mask = lane_mask(rows);
        for (; p + 8 <= kc; p += 8) {
          __m256 v[8];
          for (int q = 0; q < 8; ++q) {
            v[q] = _mm256_maskload_ps(g.a + (p0 + p + q) * g.lda + i0 + s, mask);
          }
          transpose8x8(v);
          for (int64_t r = 0; r < rows; ++r) _mm256_storeu_ps(d + r * kc + p, v[r]);
        }
      }
#endif
      for (; p < kc; ++p) {
        const float* src = g.a + (p0 + p) * g.lda + i0 + s;
        for (int64_t r = 0; r < rows; ++r) d[r * kc + p] = src[r];
      }
    }
    std::fill(d + rows * kc, d + MR * kc, 0.0f);
  }
}

// Depth [p0, p0 + kc) and columns [j0, j0 + nc) of op(B) as slivers of NR columns, each (kc, NR)
// row-major; columns past nc are zero.
template <int NR>
void pack_b(const Problem& g, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float* dst) {
  for (int64_t s = 0; s < nc; s += NR) {
    float* d = dst + s * kc;
    const int64_t cols = std::min<int64_t>(NR, nc - s);
    if (!g.trans_b) {  // B(p, j) = b[p * ldb + j]
      for (int64_t p = 0; p < kc; ++p) {
        const float* src = g.b + (p0 + p) * g.ldb + j0 + s;
        float* dp = d + p * NR;
        std::copy(src, src + cols, dp);
        std::fill(dp + cols, dp + NR, 0.0f);
      }
      continue;
    }
    // B(p, j) = b[j * ldb + p]: a transpose, 8 columns by 8 depths at a time
    int64_t p = 0;
#ifdef SEG_SGEMM_X86
    for (; p + 8 <= kc; p += 8) {
      for (int64_t jb = 0; jb < NR; jb += 8) {
        __m256 v[8];
        for (int q = 0; q < 8; ++q) {
          v[q] = jb + q < cols ? _mm256_loadu_ps(g.b + (j0 + s + jb + q) * g.ldb + p0 + p)
                               : _mm256_setzero_ps();
        }
        transpose8x8(v);
        for (int q = 0; q < 8; ++q) _mm256_storeu_ps(d + (p + q) * NR + jb, v[q]);
      }
    }
#endif
    for (; p < kc; ++p) {
      for (int64_t j = 0; j < NR; ++j)
        d[p * NR + j] = j < cols ? g.b[(j0 + s + j) * g.ldb + p0 + p] : 0.0f;
    }
  }
}

// ---- micro-kernels ----
// C (mr <= MR rows, nr <= NR columns, row stride ldc) = beta * C + alpha * A_sliver x B_sliver,
// A_sliver (MR, kc) with row stride lda, B_sliver (kc, NR) packed; beta == 0 does not read C.

using MicroKernel = void (*)(int64_t kc, const float* a, int64_t lda, const float* b, float* c,
                             int64_t ldc, int mr, int nr, float alpha, float beta);

#ifdef SEG_SGEMM_X86

constexpr int kMrAvx512 = 8, kNrAvx512 = 48;

__attribute__((target("avx512f,fma"))) void micro_avx512(int64_t kc, const float* a, int64_t lda,
                                                         const float* b, float* c, int64_t ldc,
                                                         int mr, int nr, float alpha, float beta) {
  constexpr int MR = kMrAvx512, V = kNrAvx512 / 16;
  __m512 acc[MR][V];
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) acc[r][v] = _mm512_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + p * kNrAvx512;
    __m512 bv[V];
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) bv[v] = _mm512_load_ps(bp + 16 * v);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m512 av = _mm512_set1_ps(a[r * lda + p]);
#pragma GCC unroll 3
      for (int v = 0; v < V; ++v) acc[r][v] = _mm512_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  __mmask16 mask[V];
#pragma GCC unroll 3
  for (int v = 0; v < V; ++v) {
    const int cols = std::clamp(nr - 16 * v, 0, 16);
    mask[v] = static_cast<__mmask16>((1u << cols) - 1u);
  }
  const __m512 bb = _mm512_set1_ps(beta), aa = _mm512_set1_ps(alpha);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    if (r >= mr) break;
    float* cr = c + r * ldc;
#pragma GCC unroll 3
    for (int v = 0; v < V; ++v) {
      __m512 out = alpha == 1.0f ? acc[r][v] : _mm512_mul_ps(aa, acc[r][v]);
      if (beta != 0.0f) {
        const __m512 old = _mm512_maskz_loadu_ps(mask[v], cr + 16 * v);
        out = beta == 1.0f ? _mm512_add_ps(out, old) : _mm512_fmadd_ps(bb, old, out);
      }
      _mm512_mask_storeu_ps(cr + 16 * v, mask[v], out);
    }
  }
}

constexpr int kMrAvx2 = 6, kNrAvx2 = 16;

__attribute__((target("avx2,fma"))) void micro_avx2(int64_t kc, const float* a, int64_t lda,
                                                    const float* b, float* c, int64_t ldc, int mr,
                                                    int nr, float alpha, float beta) {
  constexpr int MR = kMrAvx2, V = kNrAvx2 / 8;
  __m256 acc[MR][V];
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) acc[r][v] = _mm256_setzero_ps();
  }
  for (int64_t p = 0; p < kc; ++p) {
    const float* bp = b + p * kNrAvx2;
    __m256 bv[V];
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) bv[v] = _mm256_load_ps(bp + 8 * v);
#pragma GCC unroll 6
    for (int r = 0; r < MR; ++r) {
      const __m256 av = _mm256_broadcast_ss(a + r * lda + p);
#pragma GCC unroll 2
      for (int v = 0; v < V; ++v) acc[r][v] = _mm256_fmadd_ps(av, bv[v], acc[r][v]);
    }
  }
  __m256i mask[V];
#pragma GCC unroll 2
  for (int v = 0; v < V; ++v) mask[v] = lane_mask(std::clamp(nr - 8 * v, 0, 8));
  const bool full = nr == kNrAvx2;
  const __m256 bb = _mm256_set1_ps(beta), aa = _mm256_set1_ps(alpha);
#pragma GCC unroll 6
  for (int r = 0; r < MR; ++r) {
    if (r >= mr) break;
    float* cr = c + r * ldc;
#pragma GCC unroll 2
    for (int v = 0; v < V; ++v) {
      __m256 out = alpha == 1.0f ? acc[r][v] : _mm256_mul_ps(aa, acc[r][v]);
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

// Packing buffers of the calling thread, 64-byte aligned, grown as needed and kept.
float* thread_buffer(int which, int64_t floats) {
  struct Buffer {
    float* data = nullptr;
    int64_t size = 0;
    ~Buffer() { std::free(data); }
  };
  thread_local Buffer buffers[2];
  Buffer& buf = buffers[which];
  if (buf.size < floats) {
    std::free(buf.data);
    const size_t bytes = (static_cast<size_t>(floats) * sizeof(float) + 63) / 64 * 64;
    buf.data = static_cast<float*>(std::aligned_alloc(64, bytes));
    if (buf.data == nullptr) throw std::bad_alloc();
    buf.size = floats;
  }
  return buf.data;
}

// C rows [m0, m1), columns [n0, n1) on the calling thread.
template <int MR, int NR>
void gemm_range(const Problem& g, const Blocking& bl, MicroKernel micro, int64_t m0, int64_t m1,
                int64_t n0, int64_t n1) {
  const int64_t kblocks = (g.k + bl.kc - 1) / bl.kc;
  const int64_t kc_max = (g.k + kblocks - 1) / kblocks;
  const int64_t nc_max = std::min(bl.nc, (n1 - n0 + NR - 1) / NR * NR);
  const int64_t mc_max = std::min(bl.mc, (m1 - m0 + MR - 1) / MR * MR);
  float* bbuf = thread_buffer(0, kc_max * nc_max);  // slivers (kc, NR)
  float* abuf = thread_buffer(1, kc_max * mc_max);  // slivers (MR, kc)
  for (int64_t jc = n0; jc < n1; jc += bl.nc) {
    const int64_t nc = std::min(bl.nc, n1 - jc);
    for (int64_t kb = 0; kb < kblocks; ++kb) {
      const int64_t p0 = kb * kc_max, kc = std::min(kc_max, g.k - p0);
      pack_b<NR>(g, p0, kc, jc, nc, bbuf);
      const float beta = kb == 0 ? g.beta : 1.0f;
      for (int64_t ic = m0; ic < m1; ic += bl.mc) {
        const int64_t mc = std::min(bl.mc, m1 - ic);
        pack_a<MR>(g, ic, mc, p0, kc, abuf);
        for (int64_t jr = 0; jr < nc; jr += NR) {
          const int nr = static_cast<int>(std::min<int64_t>(NR, nc - jr));
          for (int64_t ir = 0; ir < mc; ir += MR) {
            const int mr = static_cast<int>(std::min<int64_t>(MR, mc - ir));
            const bool in_place = a_in_place(g, mr, MR);
            const float* a = in_place ? g.a + (ic + ir) * g.lda + p0 : abuf + ir * kc;
            micro(kc, a, in_place ? g.lda : kc, bbuf + jr * kc, g.c + (ic + ir) * g.ldc + jc + jr,
                  g.ldc, mr, nr, g.alpha, beta);
          }
        }
      }
    }
  }
}

// Splits C among the threads (see the design notes) and runs gemm_range on each part.
template <int MR, int NR>
void gemm_parallel(const Problem& g, const Blocking& bl, MicroKernel micro) {
  int threads = omp_in_parallel() ? 1 : omp_get_max_threads();
  if (g.m * g.n * g.k < kParallelMinMacs) threads = 1;
  const int64_t n_slivers = (g.n + NR - 1) / NR, m_slivers = (g.m + MR - 1) / MR;
  // Split the side whose operand would otherwise be packed by every thread: along n every thread
  // packs all of A (m x k), along m all of B (k x n).
  const bool n_ok = n_slivers >= 2 * threads, m_ok = m_slivers >= 2 * threads;
  const bool along_n = n_ok && (!m_ok || g.n >= g.m);
  if (!n_ok && !m_ok) threads = 1;
  if (threads == 1) {
    gemm_range<MR, NR>(g, bl, micro, 0, g.m, 0, g.n);
    return;
  }
  const int64_t slivers = along_n ? n_slivers : m_slivers, width = along_n ? NR : MR;
  const int64_t extent = along_n ? g.n : g.m;
  std::exception_ptr error;
#pragma omp parallel num_threads(threads)
  {
    const int64_t t = omp_get_thread_num(), nt = omp_get_num_threads();
    const int64_t s0 = slivers * t / nt, s1 = slivers * (t + 1) / nt;
    const int64_t lo = std::min(extent, s0 * width), hi = std::min(extent, s1 * width);
    if (lo < hi) {
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
  }
  if (error) std::rethrow_exception(error);
}

// C = beta * C (exact zeros for beta == 0).
void scale_c(const Problem& g) {
  for (int64_t i = 0; i < g.m; ++i) {
    float* row = g.c + i * g.ldc;
    if (g.beta == 0.0f) {
      std::fill(row, row + g.n, 0.0f);
    } else if (g.beta != 1.0f) {
      for (int64_t j = 0; j < g.n; ++j) row[j] *= g.beta;
    }
  }
}

void blas_sgemm(const Problem& g) {
  cblas_sgemm(CblasRowMajor, g.trans_a ? CblasTrans : CblasNoTrans,
              g.trans_b ? CblasTrans : CblasNoTrans, static_cast<int>(g.m), static_cast<int>(g.n),
              static_cast<int>(g.k), g.alpha, g.a, static_cast<int>(g.lda), g.b,
              static_cast<int>(g.ldb), g.beta, g.c, static_cast<int>(g.ldc));
}

GemmIsa detect_isa() {
#ifdef SEG_SGEMM_X86
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f")) return GemmIsa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return GemmIsa::avx2;
#endif
  return GemmIsa::blas;
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

void sgemm_with(GemmIsa isa, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k,
                float alpha, const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                float* c, int64_t ldc) {
  if (!gemm_isa_supported(isa)) {
    throw std::invalid_argument(std::string("sgemm: this processor cannot run the ") +
                                gemm_isa_name(isa) + " kernels");
  }
  const Problem g{trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc};
  if (m <= 0 || n <= 0) return;
  if (k <= 0 || alpha == 0.0f) {
    scale_c(g);
    return;
  }
  switch (isa) {
#ifdef SEG_SGEMM_X86
    case GemmIsa::avx512:
      gemm_parallel<kMrAvx512, kNrAvx512>(g, Blocking{128, 192, 3072}, micro_avx512);
      return;
    case GemmIsa::avx2:
      gemm_parallel<kMrAvx2, kNrAvx2>(g, Blocking{256, 144, 3072}, micro_avx2);
      return;
#endif
    default: blas_sgemm(g); return;
  }
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, float alpha, const float* a,
           int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  sgemm_with(best_gemm_isa(), trans_a, trans_b, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

}  // namespace seg::cpu
