// CUDA against CPU, for every op of the catalog (label gpu; skipped without a GPU).
//
// Every gradient-check case (tests/gradcheck/*.cpp, including the larger parity-only ones) runs in
// f32 on both backends with identical inputs: the outputs and the gradients of every input under
// the same projection are compared (normalised error, NaN/Inf, allocator guard bytes). Ops that are
// not differentiable have explicit tests, listed in kExplicitParity with the file that holds them.
// The registry test runs without a GPU too: in a CUDA build, an op with kernels that has no CUDA
// kernels or no parity test fails it.
#include <doctest/doctest.h>

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

// The case's inputs in f32 on `device` (integer inputs keep their dtype), as fresh leaves that
// require grad where the original did.
std::vector<Tensor> prepare(const std::vector<Tensor>& inputs, Device device) {
  std::vector<Tensor> out;
  for (const Tensor& t : inputs) {
    if (!t.defined()) {
      out.emplace_back();
      continue;
    }
    Tensor v = t.detach();
    if (is_floating(v.dtype())) v = v.to(DType::f32);
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

Run run_case(const GradCase& c, const std::vector<Tensor>& f64_inputs, const Tensor& projection, Device device) {
  std::vector<Tensor> in = prepare(f64_inputs, device);
  Run r;
  r.out = c.fn(in);
  if (r.out.requires_grad()) r.out.backward(projection.to(DType::f32).to(device));
  for (const Tensor& t : in) r.grads.push_back(t.defined() && t.requires_grad() ? t.grad() : Tensor());
  return r;
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
    CAPTURE(c.op);
    CAPTURE(c.name);
    Generator gen(4321);
    std::vector<Tensor> inputs = c.inputs(gen);
    Run cpu, cuda;
    {
      Tensor probe = c.fn(prepare(inputs, Device::cpu()));
      Tensor projection = empty(probe.sizes(), DType::f64);
      projection.uniform_(gen, -1.0, 1.0);
      cpu = run_case(c, inputs, projection, Device::cpu());
      cuda = run_case(c, inputs, projection, gpu);
    }
    ParityResult out = compare_parity(cpu.out, cuda.out);
    CHECK_MESSAGE(out.ok, "output: ", out.message);
    for (size_t i = 0; i < cpu.grads.size(); ++i) {
      if (!cpu.grads[i].defined()) continue;
      REQUIRE_MESSAGE(cuda.grads[i].defined(), "input ", i, ": no CUDA gradient");
      ParityResult g = compare_parity(cpu.grads[i], cuda.grads[i]);
      CHECK_MESSAGE(g.ok, "gradient of input ", i, ": ", g.message);
    }
    cuda = Run();  // free the CUDA tensors: their guard bytes are checked now
    gpu_synchronize();
    CHECK_MESSAGE(gpu_guard_violations() == 0, "out-of-bounds writes: ", gpu_guard_reports());
  }
}
