// f32 GEMM benchmark: our packed GEMM (kernels/cpu/sgemm.h) with each instruction set this
// processor runs, beside OpenBLAS's cblas_sgemm, at the shapes the convolutions of UNet and
// DeepLabv3 hand to it (forward, input gradient, weight gradient), in GFLOP/s.
//
// Usage: bench_gemm [--threads N] [--warmup W] [--iters I] [--peer PATH] [--no-peer]
// (--peer/--no-peer are accepted for the shared command line; the peer here is OpenBLAS, in this
// process.)
//
// Design notes
// - Times are medians over the iterations, of the process's CPU time with --threads 1 (on a shared
//   machine, time slices given to other processes then do not count), else of wall-clock time; each
//   call gets the same operands (C is overwritten, beta = 0). GFLOP/s = 2 m n k / time.
// - OpenBLAS runs whichever kernels it chose for this processor, or those of OPENBLAS_CORETYPE
//   when that is set (the benchmark says so); ours ignore it.
#include <cblas.h>

#include <cstdio>
#include <string>
#include <vector>

#include "benchmarks/bench_util.h"
#include "engine/tensor.h"
#include "kernels/cpu/sgemm.h"

using namespace seg;

namespace {

struct Case {
  const char* name;
  bool ta, tb;
  int64_t m, n, k;
};

// Median milliseconds of f(): wall-clock time, or with one thread the process's CPU time, which
// a loaded machine (others' processes time-sliced in) inflates much less.
template <class F>
double time_ms(F&& f, int warmup, int iters, bool cpu_time) {
  for (int i = 0; i < warmup; ++i) f();
  std::vector<double> t;
  for (int i = 0; i < iters; ++i) {
    const double t0 = cpu_time ? bench::process_cpu_ms() : bench::now_ms();
    f();
    t.push_back((cpu_time ? bench::process_cpu_ms() : bench::now_ms()) - t0);
  }
  return bench::median(t);
}

}  // namespace

int main(int argc, char** argv) {
  const bench::CpuBenchArgs args = bench::parse_cpu_bench_args(argc, argv, "bench_gemm", "");
  // conv 3x3 64->64 on a 14-row chunk of a 256-wide image: forward (k, crs) x (crs, cols);
  // input gradient (crs, k) x (k, cols); weight gradient (k, cols) x (cols, crs).
  const std::vector<Case> cases = {
      {"fwd 3x3 64->64, 3584 px", false, false, 64, 3584, 576},
      {"bwd-in 3x3 64->64, 3584 px", true, false, 576, 3584, 64},
      {"bwd-w 3x3 64->64, 3584 px", false, true, 64, 576, 3584},
      {"bwd-w^T 3x3 64->64, 3584 px", false, true, 576, 64, 3584},
      {"fwd 3x3 128->128, 1792 px", false, false, 128, 1792, 1152},
      {"fwd 3x3 512->1024, 128 px", false, false, 1024, 128, 4608},
      {"bwd-in 3x3 512->1024, 128 px", true, false, 4608, 128, 1024},
      {"bwd-w 3x3 512->1024, 128 px", false, true, 1024, 4608, 128},
      {"bwd-w^T 3x3 512->1024, 128 px", false, true, 4608, 1024, 128},
      {"fwd 1x1 64->19, 32768 px", false, false, 19, 32768, 64},
      {"square 1024", false, false, 1024, 1024, 1024},
  };
  const bool cpu_time = args.threads == 1;
  std::vector<cpu::GemmIsa> isas;
  for (cpu::GemmIsa isa : {cpu::GemmIsa::avx512, cpu::GemmIsa::avx2})
    if (cpu::gemm_isa_supported(isa)) isas.push_back(isa);
  std::printf("bench_gemm: f32, %d threads (%s), warmup %d, %d iterations, median GFLOP/s\n",
              args.threads, bench::cpu_threads_str().c_str(), args.warmup, args.iters);
  bench::print_openblas_coretype_note();
  std::printf("times: %s\n",
              cpu_time ? "process CPU time (one thread: robust to other processes)" : "wall clock");
  std::printf("%-30s", "case (m x n x k)");
  for (cpu::GemmIsa isa : isas) std::printf(" %10s", cpu::gemm_isa_name(isa));
  std::printf(" %10s\n", "openblas");
  Generator gen(1);
  for (const Case& c : cases) {
    Tensor a = randn({c.m * c.k}, gen), b = randn({c.k * c.n}, gen), out = empty({c.m * c.n});
    const int64_t lda = c.ta ? c.m : c.k, ldb = c.tb ? c.k : c.n;
    const double flops = 2.0 * c.m * c.n * c.k;
    std::printf("%-30s", c.name);
    for (cpu::GemmIsa isa : isas) {
      const double ms = time_ms(
          [&]() {
            cpu::sgemm_with(isa, c.ta, c.tb, c.m, c.n, c.k, 1.0f, a.data<float>(), lda,
                            b.data<float>(), ldb, 0.0f, out.data<float>(), c.n);
          },
          args.warmup, args.iters, cpu_time);
      std::printf(" %10.1f", flops / ms * 1e-6);
    }
    const double ms = time_ms(
        [&]() {
          cblas_sgemm(CblasRowMajor, c.ta ? CblasTrans : CblasNoTrans,
                      c.tb ? CblasTrans : CblasNoTrans, int(c.m), int(c.n), int(c.k), 1.0f,
                      a.data<float>(), int(lda), b.data<float>(), int(ldb), 0.0f, out.data<float>(),
                      int(c.n));
        },
        args.warmup, args.iters, cpu_time);
    std::printf(" %10.1f\n", flops / ms * 1e-6);
  }
  return 0;
}
