// Finite-difference gradient checking in f64 on the CPU.
//
// A GradCase builds f64 inputs (those with requires_grad set are checked) and a function of them.
// The check projects the output on fixed random weights r, so L = sum(out * r) is a scalar whose
// gradient covers every output element, runs backward, and compares each checked input element's
// analytic gradient with the central difference (L(x + h) - L(x - h)) / 2h.
#pragma once

#include <functional>
#include <set>
#include <string>
#include <vector>

#include "engine/tensor.h"

namespace seg::test {

// Central differences in f64 with h = 1e-6 carry a truncation error of O(h^2 |f'''|) ~ 1e-12 and a
// rounding error of about 1e-16 * |L| / h ~ 1e-10 * |L|; 1e-6 relative to max(|a|, |n|, 1) leaves
// room for |L| up to ~1e3 while catching any real gradient bug (those are O(1e-2) or larger).
constexpr double kGradCheckTolerance = 1e-6;
constexpr double kGradCheckStep = 1e-6;
// A point where the one-sided differences disagree by more than this (relative) is a kink (relu
// at 0, a hinge at 0, a max with ties): its derivative is not defined and it is skipped.
constexpr double kKinkThreshold = 1e-3;
// Elements checked per input at most: a larger input gets this many distinct elements, sampled
// without replacement from the case's generator (deterministic).
constexpr int kMaxCheckedElements = 40;
// A case whose skipped kinks exceed this share of its sampled elements fails: kinks are points of
// measure zero (relu at 0, a hinge at 0, max ties), which random inputs hit rarely; a case that
// skips more than one in ten checks too little of its gradient to count (or its backward is wrong
// everywhere and differences that disagree on both sides are hiding it).
constexpr double kMaxSkippedKinkShare = 0.1;

struct GradCase {
  std::string op;    // the op's name in the catalog (kernels/common/registry.h)
  std::string name;  // what this case covers
  std::function<std::vector<Tensor>(Generator& gen)> inputs;
  std::function<Tensor(const std::vector<Tensor>& inputs)> fn;
  double tolerance = kGradCheckTolerance;
  // Too large for finite differences: used only by the CUDA-vs-CPU parity tests, which need sizes
  // that span several thread blocks and are not multiples of the block size.
  bool parity_only = false;
};

struct GradCheckResult {
  bool ok = true;
  int checked = 0;                     // elements compared, over all inputs
  int skipped_kinks = 0;               // sampled elements skipped as kinks, over all inputs
  std::vector<int> checked_per_input;  // by input index (0 for inputs without requires_grad)
  std::set<std::string> nodes;         // names of the autograd nodes in the checked graph
  std::string message;                 // the first failure, when !ok
};

// Fails (ok = false, with a message) on the first gradient mismatch, when an input that requires
// grad has no element checked, or when the kinks skipped exceed kMaxSkippedKinkShare.
GradCheckResult check_gradients(const GradCase& c, uint64_t seed = 1234);

// The names of the autograd nodes reachable from `out`'s grad_fn (leaf accumulators included).
std::set<std::string> graph_node_names(const Tensor& out);

// f64 input helpers for cases.
Tensor randn64(const Shape& shape, Generator& gen, bool requires_grad = true);
// Uniform in [low, high).
Tensor uniform64(const Shape& shape, Generator& gen, double low, double high, bool requires_grad = true);

// Every case of every family (tests/gradcheck/*.cpp), by explicit calls. The gradient check skips
// the parity_only ones. A case's function must be device-agnostic: it builds any constant it needs
// in `inputs` (which the parity test moves to the GPU), never inside the function on the CPU.
std::vector<GradCase> all_grad_cases();

}  // namespace seg::test
