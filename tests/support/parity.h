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
constexpr size_t kGuardBytes = 256;

// True when a GPU is present in a CUDA build; otherwise records a skip naming the reason.
bool have_gpu();
// The test context's device (have_gpu() must be true).
Device gpu_device();
// Number of guard violations seen so far by the test context's allocator, with descriptions.
int64_t gpu_guard_violations();
std::string gpu_guard_reports();
void gpu_synchronize();

struct ParityResult {
  bool ok = true;
  double normalised_error = 0.0;  // max |cpu - gpu| / max(max |cpu|, 1e-30)
  std::string message;
};

// Compares a CUDA tensor with its CPU reference: same shape and dtype, no NaN/Inf where the
// reference is finite, normalised error within `tolerance`. Integer tensors must match exactly.
ParityResult compare_parity(const Tensor& cpu, const Tensor& gpu, double tolerance = kParityTolerance);

}  // namespace seg::test
