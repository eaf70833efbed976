// Define-by-run autograd.
//
// Design notes
// - Every differentiable op that sees an input requiring grad (with grad mode on) records one Node
//   holding its backward as a function of saved tensors, with one edge per input pointing at the
//   input's own node (or at the AccumulateGrad node of a leaf).
// - Saved tensors are stored detached (no grad_fn), so a node never owns its own output: no cycles.
//   Each remembers the storage version at save time; backward refuses a tensor changed in place.
// - backward() counts dependencies once, runs nodes when all their gradients have arrived (summing
//   gradients at joins), then frees each node's saved state unless retain_graph is set. A second
//   backward through a freed node is an error.
// - Leaf gradients accumulate (+=) across backward calls; activation gradients are fresh tensors.
// - Grad mode is per thread (GradMode / NoGradGuard), like every training framework's.
// - In-place updates (Tensor::fill_, copy_, add_, mul_, ...) are recorded as in PyTorch: the
//   updated tensor's history becomes a node with edges to its old history and to the other
//   operands. An update through a differentiable view records on the view's base a "CopySlices"
//   node that applies the update's backward to the viewed region of the base's gradient and passes
//   the rest through; the views of that base then rebuild their grad_fn as an "AsStridedBackward"
//   of the new history (lazily, when next asked: TensorImpl::base_history against base->history).
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "engine/tensor.h"

namespace seg {

class Node;

struct Edge {
  std::shared_ptr<Node> node;  // null: this input needs no gradient
  int input_nr = 0;            // which output of `node` the input was
};

class Node {
 public:
  virtual ~Node() = default;
  virtual std::string name() const = 0;
  // Maps gradients of this node's outputs (undefined where an output got none) to gradients of
  // its inputs (undefined where none is needed). Called at most once unless the graph is retained.
  virtual std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) = 0;
  // Frees saved tensors after a backward that does not retain the graph; a later apply() throws.
  virtual void release() {}

  std::vector<Edge> next_edges;  // one per input
  int num_outputs = 1;
  uint64_t sequence_nr = 0;  // creation order; later nodes run first among ready ones
};

// Accumulates into a leaf's .grad (+=); the leaf owns no reference back to it (weak), so no cycle.
class AccumulateGrad : public Node {
 public:
  explicit AccumulateGrad(std::shared_ptr<TensorImpl> leaf) : leaf_(std::move(leaf)) {}
  std::string name() const override { return "AccumulateGrad"; }
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;
  const std::shared_ptr<TensorImpl>& leaf() const { return leaf_; }

 private:
  std::shared_ptr<TensorImpl> leaf_;
};

// A tensor kept for backward: detached, with the storage version it had when saved.
class SavedTensor {
 public:
  SavedTensor() = default;
  explicit SavedTensor(const Tensor& t);
  // Throws when the storage was modified in place since it was saved.
  Tensor get() const;
  bool defined() const { return tensor_.defined(); }

 private:
  Tensor tensor_;
  uint64_t version_ = 0;
};

// Per-thread switch for recording.
class GradMode {
 public:
  static bool enabled();
  static void set_enabled(bool enabled);
};

class NoGradGuard {
 public:
  NoGradGuard() : previous_(GradMode::enabled()) { GradMode::set_enabled(false); }
  ~NoGradGuard() { GradMode::set_enabled(previous_); }
  NoGradGuard(const NoGradGuard&) = delete;
  NoGradGuard& operator=(const NoGradGuard&) = delete;

 private:
  bool previous_;
};

// Backward function of a node built from a lambda: gets the output gradients and which inputs need
// a gradient; returns one tensor per input (undefined where not needed).
using BackwardFn =
    std::function<std::vector<Tensor>(const std::vector<Tensor>& grad_outputs,
                                      const std::vector<bool>& needs_input_grad)>;

// Shape, dtype and device of a tensor, kept by nodes to check and fill gradients.
struct TensorMeta {
  Shape sizes;
  DType dtype = DType::f32;
  Device device;
};

class FunctionNode : public Node {
 public:
  FunctionNode(std::string name, BackwardFn fn, std::vector<bool> needs_input_grad,
               std::vector<TensorMeta> inputs, std::vector<TensorMeta> outputs)
      : name_(std::move(name)),
        fn_(std::move(fn)),
        needs_(std::move(needs_input_grad)),
        inputs_(std::move(inputs)),
        outputs_(std::move(outputs)) {}
  std::string name() const override { return name_; }
  // Fills missing output gradients with zeros, runs the backward function and checks that every
  // returned gradient has its input's shape and dtype.
  std::vector<Tensor> apply(const std::vector<Tensor>& grad_outputs) override;
  void release() override { fn_ = nullptr; }

 private:
  std::string name_;
  BackwardFn fn_;
  std::vector<bool> needs_;
  std::vector<TensorMeta> inputs_;
  std::vector<TensorMeta> outputs_;
};

// True when grad mode is on and any defined input requires grad.
bool any_requires_grad(const std::vector<Tensor>& inputs);

// Records `outputs` as produced from `inputs` by a node named `name` when any input requires grad
// (and grad mode is on); otherwise does nothing. Call after the outputs are computed.
void record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor*>& outputs, BackwardFn backward);

// The name of the node that the catalog op `op` (kernels/common/registry.h) records: its name in
// PascalCase followed by "Backward" (conv_transpose2d -> ConvTranspose2dBackward). The gradient
// check looks for it in each case's graph.
std::string backward_node_name(std::string_view op);

// Before an in-place update `op` of `self` from `others` writes anything: true when it must be
// recorded (grad mode is on and `self`, its base or one of `others` requires grad). Throws, naming
// the op and the tensor, when it cannot be recorded: `self` is a leaf that requires grad or a view
// of one, or is not floating.
bool begin_inplace(const char* op, const Tensor& self, const std::vector<Tensor>& others);

// After the update: makes `self` (or, for a view, its base) the output of a node named `name` whose
// inputs are self's old value and `others`. `backward` gets the gradient of the new value of `self`
// and which inputs need one, and returns one gradient per input {old self, others...}.
void record_inplace(const std::string& name, const Tensor& self, const std::vector<Tensor>& others,
                    BackwardFn backward);

// Rebuilds a differentiable view's grad_fn and requires_grad when its base's history changed since
// they were made (Tensor's autograd accessors call it).
void refresh_view_history(const Tensor& view);

// Runs backward from `roots` with the given gradients (a scalar root may have an undefined one).
void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph);

// The edge that a gradient for `t` should flow to (its grad_fn, or its leaf accumulator).
Edge gradient_edge(const Tensor& t);

}  // namespace seg
