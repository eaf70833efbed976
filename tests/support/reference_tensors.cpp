#include "tests/support/reference_tensors.h"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "engine/io/safetensors.h"
#include "tests/support/reference.h"

namespace seg::test {

double max_rel_error(const Tensor& a, const Tensor& b) {
  std::vector<double> x = to_vector<double>(a), y = to_vector<double>(b);
  REQUIRE(x.size() == y.size());
  double scale = 1.0, err = 0.0;
  for (double v : y) scale = std::max(scale, std::abs(v));
  for (size_t i = 0; i < x.size(); ++i) err = std::max(err, std::abs(x[i] - y[i]));
  return err / scale;
}

ReferenceTensors::ReferenceTensors(const std::string& file) {
  for (auto& [name, t] : load_safetensors(reference_path(file))) tensors_.emplace(name, t);
}

Tensor ReferenceTensors::get(const std::string& name) const {
  auto it = tensors_.find(name);
  if (it == tensors_.end()) FAIL("reference tensor missing: ", name);
  return it->second;
}

nn::StateDict ReferenceTensors::with_prefix(const std::string& prefix,
                                            const std::string& keep) const {
  nn::StateDict out;
  for (const auto& [name, t] : tensors_) {
    if (name.rfind(prefix + keep, 0) == 0) out.emplace_back(name.substr(prefix.size()), t);
  }
  return out;
}

void check_close(const Tensor& ours, const ReferenceTensors& ref, const std::string& name,
                 double tolerance) {
  CAPTURE(name);
  REQUIRE(ours.defined());
  Tensor expected = ref.get(name);
  REQUIRE(ours.sizes() == expected.sizes());
  CHECK(max_rel_error(ours, expected) <= tolerance);
}

}  // namespace seg::test
