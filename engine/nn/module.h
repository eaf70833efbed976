// nn::Module: the base of every layer and model. Parameters, buffers and child modules are
// registered by name, in order, so that names and order follow PyTorch's state_dict exactly
// ("layer1.0.conv1.weight") and checkpoints are interchangeable with PyTorch's.
//
// Design notes
// - A Tensor is a handle: a layer keeps its parameters as members (`weight = register_parameter(
//   "weight", ...)`) that share the TensorImpl with the registry. Loading a state_dict copies
//   values in place (copy_), so these handles, and any optimiser holding them, stay valid. Do not
//   assign a new tensor to such a member: that would detach it from the registry (use copy_
//   instead).
// - Order, as PyTorch: named_parameters() lists a module's own parameters, then each child's, depth
//   first; state_dict() lists, for each module depth first, its parameters then its persistent
//   buffers. A parameter shared by two modules appears once in named_parameters()/parameters() (so
//   an optimiser updates it once) and under every name in state_dict(), as in PyTorch.
// - load_state_dict() checks everything first and, in strict mode, throws before changing anything:
//   a failed strict load leaves the module untouched. Values are converted between floating dtypes;
//   any other dtype difference is reported as a mismatch.
// - Modules are held by std::shared_ptr (a child may be shared); there is no global state. The
//   training flag is per module and set recursively by train()/eval().
#pragma once

#include <filesystem>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "engine/io/safetensors.h"
#include "engine/tensor.h"

namespace seg::nn {

// Parameters and persistent buffers by their dotted names, in PyTorch's order.
using StateDict = NamedTensors;

// What load_state_dict() did. Names are the dotted state_dict names.
struct LoadReport {
  struct ShapeMismatch {
    std::string name;
    Shape expected;  // the module's
    Shape got;       // the dict's
  };
  struct DTypeMismatch {
    std::string name;
    DType expected;
    DType got;
  };
  std::vector<std::string> loaded;
  std::vector<std::string> missing;     // in the module, not in the dict
  std::vector<std::string> unexpected;  // in the dict, not in the module
  std::vector<ShapeMismatch> shape_mismatched;
  std::vector<DTypeMismatch> dtype_mismatched;  // not convertible (not both floating)

  // True when every tensor of the module was loaded and the dict had nothing else.
  bool ok() const {
    return missing.empty() && unexpected.empty() && shape_mismatched.empty() &&
           dtype_mismatched.empty();
  }
  // "loaded 12 of 14; missing: a.weight, ...; unexpected: ...; shape mismatched: fc.weight: module
  // (10,64), dict (3,64); ..." (every name listed).
  std::string str() const;
  // One row per problem (shape or dtype mismatch, missing, unexpected), aligned in columns
  // "tensor  module  dict  problem"; empty when ok().
  std::string table() const;
};

class Module {
 public:
  // `type_name` names the module in messages ("Conv2d", "ResNet").
  explicit Module(std::string type_name) : type_name_(std::move(type_name)) {}
  virtual ~Module() = default;
  Module(const Module&) = delete;
  Module& operator=(const Module&) = delete;

  const std::string& type_name() const { return type_name_; }

  // The forward pass of a single-input module. The base throws naming the module type: modules
  // with other inputs define their own forward functions.
  virtual Tensor forward(const Tensor& x);
  Tensor operator()(const Tensor& x) { return forward(x); }

  // --- registration (names: non-empty, no '.', unique among this module's parameters, buffers and
  //     children). Each returns the registered tensor or module. ---
  // A parameter: a floating leaf tensor; it is set to require gradients.
  Tensor register_parameter(const std::string& name, Tensor value);
  // A buffer (running statistics, counters). Non-persistent buffers are not in the state_dict.
  Tensor register_buffer(const std::string& name, Tensor value, bool persistent = true);
  template <class M>
  std::shared_ptr<M> register_module(const std::string& name, std::shared_ptr<M> module) {
    add_child(name, module);
    return module;
  }

  // --- this module only ---
  // The parameter / buffer / child called `name`; throws naming the module and listing the names.
  Tensor parameter(const std::string& name) const;
  Tensor buffer(const std::string& name) const;
  std::shared_ptr<Module> child(const std::string& name) const;
  const std::vector<std::pair<std::string, std::shared_ptr<Module>>>& named_children() const {
    return children_;
  }

  // --- recursive, dotted names, PyTorch's order ---
  std::vector<std::pair<std::string, Tensor>> named_parameters(bool recurse = true) const;
  std::vector<Tensor> parameters(bool recurse = true) const;
  std::vector<std::pair<std::string, Tensor>> named_buffers(bool recurse = true) const;
  // This module (name "") and every descendant, depth first; a shared module is listed once. The
  // pointers do not own: they are valid while this module lives.
  std::vector<std::pair<std::string, Module*>> named_modules();
  std::vector<std::pair<std::string, const Module*>> named_modules() const;
  // Parameters and persistent buffers, detached (sharing storage with the module's tensors).
  StateDict state_dict() const;

  // --- mode ---
  virtual void train(bool on = true);
  void eval() { train(false); }
  bool is_training() const { return training_; }

  // Drops the gradients of every parameter.
  void zero_grad();

  // Converts every parameter and floating buffer (integer buffers such as num_batches_tracked stay)
  // in place of its TensorImpl, like PyTorch's `param.data = param.data.to(...)`: the handles held
  // by layers and optimisers see the new dtype/device. Gradients are dropped. Views taken earlier
  // (e.g. a state_dict()) keep the old storage.
  void to(DType dtype);
  void to(Device device);

  // --- loading and saving ---
  // Copies the dict's values into this module's tensors in place (converting between floating
  // dtypes; moving to the tensor's device). Strict: throws, before changing anything, unless the
  // report would be ok(), listing every problem. Non-strict: loads what matches and reports the
  // rest. A dict with a repeated name is an error in both modes.
  LoadReport load_state_dict(const StateDict& dict, bool strict = true);
  // state_dict() to a safetensors file (atomically), with optional metadata.
  void save_state_dict(const std::filesystem::path& path,
                       const SafetensorsMetadata& metadata = {}) const;
  // load_state_dict() from a safetensors file; a strict failure names the file.
  LoadReport load_state_dict_file(const std::filesystem::path& path, bool strict = true);

 private:
  struct Buffer {
    std::string name;
    Tensor value;
    bool persistent = true;
  };
  void add_child(const std::string& name, std::shared_ptr<Module> module);
  void check_new_name(const std::string& name, const char* what) const;
  void collect_state(const std::string& prefix, StateDict* out) const;

  std::string type_name_;
  bool training_ = true;
  std::vector<std::pair<std::string, Tensor>> parameters_;
  std::vector<Buffer> buffers_;
  std::vector<std::pair<std::string, std::shared_ptr<Module>>> children_;
};

}  // namespace seg::nn
