// Support for CUDA-vs-CPU parity tests (label gpu): a test CudaContext and comparisons.
//
// The context runs with TF32 off (parity is about our kernels, not about TF32's 10-bit mantissa)
// and with allocator guard bytes after every allocation, so a kernel that writes past its output is
// caught when the tensor is freed (guard_violations()).
#pragma once

#include <string>

#include "engine/tensor.h"

namespace seg::test {

// f32 on both sides, different summation orders and algorithms (cuDNN may pick Winograd or FFT):
// normalised errors of a few 1e-6 are usual; 1e-4 of the reference's largest magnitude catches any
// indexing or formula bug (those are O(1) of it) while tolerating algorithmic rounding.
constexpr double kParityTolerance = 1e-4;
// f64 on both sides: the same differences of order and algorithm leave normalised errors of a few
// 1e-15 (the device's exp/log are within 2 ulps of glibc's); 1e-9 is far above that and far below
// the O(1) error of an indexing or formula bug.
constexpr double kParityToleranceF64 = 1e-9;
// f32 with TF32 tensor cores: every product rounds both inputs to a 10-bit mantissa (relative error
// up to 2^-11 each), so a sum carries about 1e-3 of its magnitude in error; 1e-2 of the largest
// value leaves room for that and still catches any indexing bug.
constexpr double kTf32Tolerance = 1e-2;
constexpr size_t kGuardBytes = 256;

// True when a GPU is present in a CUDA build; otherwise records a skip naming the reason.
bool have_gpu();
// The test context's device (have_gpu() must be true).
Device gpu_device();
// Number of guard violations seen so far by the test context's allocator, with descriptions.
int64_t gpu_guard_violations();
std::string gpu_guard_reports();
void gpu_synchronize();
// Switches TF32 on the test context (off by default); restore it to false afterwards.
void gpu_set_allow_tf32(bool allow);

struct ParityResult {
  bool ok = true;
  double normalised_error = 0.0;  // max |cpu - gpu| / max(max |cpu|, 1e-30)
  std::string message;
};

// Compares a CUDA tensor with its CPU reference: same shape and dtype, no NaN/Inf where the
// reference is finite, normalised error within `tolerance`. Integer tensors must match exactly.
ParityResult compare_parity(const Tensor& cpu, const Tensor& gpu, double tolerance = kParityTolerance);

}  // namespace seg::test
