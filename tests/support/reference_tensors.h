// Reference tensors written by tests/reference/*.py as safetensors, and the comparisons the model
// parity tests make against them.
#pragma once

#include <map>
#include <string>

#include "engine/nn/module.h"
#include "engine/tensor.h"

namespace seg::test {

// max |a - b| / max(max |b|, 1): the error relative to the reference's scale, or absolute where
// the reference is small. Shapes must have equal sizes.
double max_rel_error(const Tensor& a, const Tensor& b);

// A reference file's tensors by name (reference_path(file)).
class ReferenceTensors {
 public:
  explicit ReferenceTensors(const std::string& file);
  bool has(const std::string& name) const { return tensors_.count(name) > 0; }
  // The tensor `name`; a test failure naming it when missing.
  Tensor get(const std::string& name) const;
  // An input, stored as f32 (drawn in f32: exact), in f64.
  Tensor input(const std::string& name) const { return get(name).to(DType::f64); }
  // The tensors whose names start with `prefix`, without it, keeping those that start with
  // `keep` (after the prefix) when given.
  nn::StateDict with_prefix(const std::string& prefix, const std::string& keep = "") const;

 private:
  std::map<std::string, Tensor> tensors_;
};

// `ours` against the reference tensor `name`: same shape, max_rel_error within `tolerance`.
void check_close(const Tensor& ours, const ReferenceTensors& ref, const std::string& name,
                 double tolerance);

}  // namespace seg::test
