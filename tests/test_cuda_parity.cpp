// CUDA against CPU, for every op of the catalog (label gpu; skipped without a GPU).
//
// Every gradient-check case (tests/gradcheck/*.cpp, including the larger parity-only ones) runs in
// f32 on both backends with identical inputs: the outputs and the gradients of every input under
// the same projection are compared (normalised error, NaN/Inf, allocator guard bytes). Ops that are
// not differentiable have explicit tests, listed in kExplicitParity with the file that holds them.
// The small cases also run in f64 on both backends (every kernel's double path), a few layers run
// with TF32 on (the default for f32) and off again, and cross entropy's bad-label count is checked.
// The registry test runs without a GPU too: in a CUDA build, an op with kernels that has no CUDA
// kernels or no parity test fails it.
#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <set>
#include <string>

#include "engine/dispatch.h"
#include "engine/ops.h"
#include "kernels/common/registry.h"
#include "tests/support/gradcheck.h"
#include "tests/support/parity.h"

using namespace seg;
using namespace seg::test;

namespace {

// Non-differentiable ops with kernels, and where their parity tests are.
const std::map<std::string, std::string> kExplicitParity = {
    {"fill", "tests/test_cuda_elementwise.cpp"},
    {"arange", "tests/test_cuda_elementwise.cpp"},
    {"random", "tests/test_cuda_elementwise.cpp"},
    {"argmax", "tests/test_cuda_elementwise.cpp"},
    {"optimizer_step", "tests/test_cuda_elementwise.cpp"},
    {"confusion_matrix", "tests/test_cuda_metrics.cpp"},
};

// The case's inputs in `dtype` (f32 or f64) on `device` (integer inputs keep their dtype), as fresh
// leaves that require grad where the original did.
std::vector<Tensor> prepare(const std::vector<Tensor>& inputs, Device device, DType dtype = DType::f32) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) {
    if (!t.defined()) {
      out.emplace_back();
      continue;
    }
    Tensor v = t.detach();
    if (is_floating(v.dtype())) v = v.to(dtype);
    v = v.to(device).detach().contiguous();
    if (t.requires_grad()) v.set_requires_grad(true);
    out.push_back(v);
  }
  return out;
}

struct Run {
  Tensor out;
  std::vector<Tensor> grads;
};

Run run_case(const GradCase& c, const std::vector<Tensor>& f64_inputs, const Tensor& projection, Device device,
             DType dtype = DType::f32) {
  std::vector<Tensor> in = prepare(f64_inputs, device, dtype);
  Run r;
  r.out = c.fn(in);
  if (r.out.requires_grad()) r.out.backward(projection.to(dtype).to(device));
  for (const Tensor& t : in) r.grads.push_back(t.defined() && t.requires_grad() ? t.grad() : Tensor());
  return r;
}

// Runs case `c` in `dtype` on the CPU and on the GPU with identical inputs and projection, and
// compares the outputs and every gradient within `tolerance`.
void check_case(const GradCase& c, Device gpu, DType dtype, double tolerance) {
  CAPTURE(c.op);
  CAPTURE(c.name);
  CAPTURE(dtype_name(dtype));
  Generator gen(4321);
  std::vector<Tensor> inputs = c.inputs(gen);
  Run cpu, cuda;
  {
    Tensor probe = c.fn(prepare(inputs, Device::cpu(), dtype));
    Tensor projection = empty(probe.sizes(), DType::f64);
    projection.uniform_(gen, -1.0, 1.0);
    cpu = run_case(c, inputs, projection, Device::cpu(), dtype);
    cuda = run_case(c, inputs, projection, gpu, dtype);
  }
  ParityResult out = compare_parity(cpu.out, cuda.out, tolerance);
  CHECK_MESSAGE(out.ok, "output: ", out.message);
  for (size_t i = 0; i < cpu.grads.size(); ++i) {
    if (!cpu.grads[i].defined()) continue;
    REQUIRE_MESSAGE(cuda.grads[i].defined(), "input ", i, ": no CUDA gradient");
    ParityResult g = compare_parity(cpu.grads[i], cuda.grads[i], tolerance);
    CHECK_MESSAGE(g.ok, "gradient of input ", i, ": ", g.message);
  }
  cuda = Run();  // free the CUDA tensors: their guard bytes are checked now
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}

}  // namespace

TEST_CASE("registry: every op with kernels has CUDA kernels and a parity test") {
  std::set<std::string> covered;
  for (const GradCase& c : all_grad_cases()) covered.insert(c.op);
  for (const auto& [op, file] : kExplicitParity) covered.insert(op);
  for (const OpInfo& info : kOpCatalog) {
    const std::string name(info.name);
    if (info.has_kernels || info.differentiable) {
      CHECK_MESSAGE(covered.count(name) == 1, "no CUDA parity test for op ", name);
    }
    if (cuda_built() && info.has_kernels) {
      CHECK_MESSAGE(kernel_registry().has(info.id, DeviceType::cuda), "no CUDA kernels for op ", name);
    }
  }
}

// SEG_PARITY_OPS=op1,op2 restricts the run to those ops (for compute-sanitizer runs).
static bool selected(const std::string& op) {
  const char* only = std::getenv("SEG_PARITY_OPS");
  if (only == nullptr || *only == '\0') return true;
  const std::string list = std::string(",") + only + ",";
  return list.find("," + op + ",") != std::string::npos;
}

TEST_CASE("CUDA matches the CPU on every gradient-check and parity case (f32)") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  for (const GradCase& c : all_grad_cases()) {
    if (!selected(c.op)) continue;
    check_case(c, gpu, DType::f32, kParityTolerance);
  }
}

// The double instantiation of every kernel, and cuDNN's and cuBLAS's f64 paths (CUDNN_DATA_DOUBLE
// descriptors with double scaling factors, f64 batch norm, DGEMM), on the small gradient-check cases.
TEST_CASE("CUDA matches the CPU on every gradient-check case in f64") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  for (const GradCase& c : all_grad_cases()) {
    if (c.parity_only || !selected(c.op)) continue;
    check_case(c, gpu, DType::f64, kParityToleranceF64);
  }
}

namespace {

// TF32 on the test context for one scope.
struct Tf32On {
  Tf32On() { gpu_set_allow_tf32(true); }
  ~Tf32On() { gpu_set_allow_tf32(false); }
  Tf32On(const Tf32On&) = delete;
  Tf32On& operator=(const Tf32On&) = delete;
};

// The same cached algorithms on the same inputs give the same bits (every backward algorithm is
// deterministic, cuBLAS is reproducible on one stream); 1e-6 allows for a forward algorithm that is
// not, and is far below the ~1e-3 a TF32 choice reused by mistake would leave.
constexpr double kSameChoiceTolerance = 1e-6;

void check_runs(const Run& ref, const Run& got, double tolerance, const char* what) {
  ParityResult out = compare_parity(ref.out, got.out, tolerance);
  CHECK_MESSAGE(out.ok, what, ": output: ", out.message);
  for (size_t i = 0; i < ref.grads.size(); ++i) {
    if (!ref.grads[i].defined()) continue;
    REQUIRE_MESSAGE(got.grads[i].defined(), what, ": input ", i, ": no gradient");
    ParityResult g = compare_parity(ref.grads[i], got.grads[i], tolerance);
    CHECK_MESSAGE(g.ok, what, ": gradient of input ", i, ": ", g.message);
  }
}

}  // namespace

// TF32 is the default for f32 (CudaContextOptions::allow_tf32): the cuDNN searches with
// CUDNN_DEFAULT_MATH and tensor-op results, cuBLAS with CUBLAS_COMPUTE_32F_FAST_TF32. Run with it
// off, on, and off again: the TF32 results must be within TF32's precision of the CPU, and the last
// run must reuse the first run's choices (the algorithm cache keys carry the math mode).
TEST_CASE("TF32 convolutions and GEMMs match the CPU within TF32's precision; the cache keeps math modes apart") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  std::vector<GradCase> cases;
  cases.push_back(GradCase{"conv2d", "conv2d 3x3 pad 1 (2,37,61,53) -> 29",
                           [](Generator& g) {
                             return std::vector<Tensor>{randn64({2, 37, 61, 53}, g), randn64({29, 37, 3, 3}, g),
                                                        randn64({29}, g)};
                           },
                           [](const std::vector<Tensor>& v) { return conv2d(v[0], v[1], v[2], Conv2dOptions::make(1, 1)); }});
  cases.push_back(GradCase{"conv_transpose2d", "conv_transpose2d 2x2 stride 2 (2,37,23,19) -> 29",
                           [](Generator& g) {
                             return std::vector<Tensor>{randn64({2, 37, 23, 19}, g), randn64({37, 29, 2, 2}, g),
                                                        randn64({29}, g)};
                           },
                           [](const std::vector<Tensor>& v) {
                             return conv_transpose2d(v[0], v[1], v[2], ConvTranspose2dOptions::make(2, 0));
                           }});
  cases.push_back(GradCase{"matmul", "matmul (3,131,67) @ (3,67,129)",
                           [](Generator& g) {
                             return std::vector<Tensor>{randn64({3, 131, 67}, g), randn64({3, 67, 129}, g)};
                           },
                           [](const std::vector<Tensor>& v) { return matmul(v[0], v[1]); }});
  for (const GradCase& c : cases) {
    CAPTURE(c.name);
    Generator gen(99);
    std::vector<Tensor> inputs = c.inputs(gen);
    Tensor probe = c.fn(prepare(inputs, Device::cpu()));
    Tensor projection = empty(probe.sizes(), DType::f64);
    projection.uniform_(gen, -1.0, 1.0);
    const Run cpu = run_case(c, inputs, projection, Device::cpu());
    Run fma_first = run_case(c, inputs, projection, gpu);
    Run tf32;
    {
      Tf32On on;
      tf32 = run_case(c, inputs, projection, gpu);
    }
    Run fma_again = run_case(c, inputs, projection, gpu);
    check_runs(cpu, fma_first, kParityTolerance, "TF32 off");
    check_runs(cpu, tf32, kTf32Tolerance, "TF32 on");
    check_runs(fma_first, fma_again, kSameChoiceTolerance, "TF32 off again");
  }
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}

// Bad labels are counted by the kernel (per warp, one integer atomic per warp) and the front-end
// turns the count into an error naming the first one: the same message as the CPU's, count included.
// Several bad labels in one warp, others in different blocks.
TEST_CASE("cross entropy on CUDA reports bad labels exactly as the CPU does") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  Generator gen(77);
  const Shape logits_shape{3, 19, 41, 67};
  const Shape label_shape{3, 41, 67};
  Tensor logits = randn(logits_shape, gen);
  std::vector<int32_t> v;
  for (double u : to_vector<double>(rand(label_shape, gen, DType::f64))) {
    v.push_back(u < 0.1 ? 255 : static_cast<int32_t>(std::min(18.0, u * 19.0)));
  }
  for (size_t i : {size_t{37}, size_t{40}, size_t{41}, size_t{5000}, size_t{8241 - 1}}) v[i] = 19;
  v[6001] = -1;
  v[7777] = 1000;
  for (int64_t ignore : {int64_t{255}, int64_t{-100}}) {
    CAPTURE(ignore);
    CrossEntropyOptions o;
    o.ignore_index = ignore;
    Tensor labels = from_vector(v, label_shape);
    std::string cpu_msg, gpu_msg;
    try {
      cross_entropy(logits, labels, o);
    } catch (const Error& e) {
      cpu_msg = e.what();
    }
    try {
      cross_entropy(logits.to(gpu), labels.to(gpu), o);
    } catch (const Error& e) {
      gpu_msg = e.what();
    }
    REQUIRE_MESSAGE(!cpu_msg.empty(), "no error for bad labels on the CPU");
    CHECK_MESSAGE(gpu_msg == cpu_msg, "gpu: ", gpu_msg, "; cpu: ", cpu_msg);
  }
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}

// The ResNet stem on full Cityscapes frames, batch 8: for its input gradient, cuDNN (9, on an H200)
// returned only a non-deterministic algorithm, which the kernel now takes (with a note on stderr)
// instead of failing. Images are independent, so the CPU checks the first and the last image alone.
TEST_CASE("conv2d input gradient of the ResNet stem at 1024x2048, batch 8") {
  if (!have_gpu()) return;
  const Device gpu = gpu_device();
  Generator gen(31);
  Tensor x = randn({8, 3, 1024, 2048}, gen);
  Tensor w = mul_scalar(randn({64, 3, 7, 7}, gen), 1.0 / std::sqrt(147.0));
  Tensor projection = randn({8, 64, 512, 1024}, gen);
  const auto input_grad = [&](const Tensor& xs, const Tensor& ps, Device device) {
    Tensor xd = xs.to(device).set_requires_grad(true);
    Tensor y = conv2d(xd, w.to(device), Tensor(), Conv2dOptions::make(2, 3));
    sum(mul(y, ps.to(device))).backward();
    return xd.grad().to(Device::cpu());
  };
  const Tensor g_gpu = input_grad(x, projection, gpu);
  for (int64_t image : {0, 7}) {
    CAPTURE(image);
    const Tensor g_cpu =
        input_grad(x.narrow(0, image, 1), projection.narrow(0, image, 1), Device::cpu());
    const ParityResult r = compare_parity(g_cpu, g_gpu.narrow(0, image, 1).contiguous());
    CHECK_MESSAGE(r.ok, r.message);
  }
  gpu_synchronize();
  CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
}
