#include "engine/autograd.h"

#include <queue>
#include <unordered_map>
#include <unordered_set>

#include "engine/ops.h"

namespace seg {

namespace {
thread_local bool t_grad_enabled = true;
thread_local uint64_t t_next_sequence_nr = 0;

TensorMeta meta_of(const Tensor& t) {
  if (!t.defined()) return TensorMeta{};
  return TensorMeta{t.sizes(), t.dtype(), t.device()};
}
}  // namespace

bool GradMode::enabled() { return t_grad_enabled; }
void GradMode::set_enabled(bool enabled) { t_grad_enabled = enabled; }

SavedTensor::SavedTensor(const Tensor& t) {
  if (!t.defined()) return;
  tensor_ = t.detach();
  version_ = t.storage()->version();
}

Tensor SavedTensor::get() const {
  if (tensor_.defined()) {
    SEG_CHECK(tensor_.storage()->version() == version_,
              "backward: a tensor ", tensor_.str(),
              " saved for the gradient was modified in place after it was saved (version ",
              version_, " -> ", tensor_.storage()->version(), ")");
  }
  return tensor_;
}

std::vector<Tensor> AccumulateGrad::apply(const std::vector<Tensor>& grad_outputs) {
  const Tensor& g = grad_outputs[0];
  if (!g.defined()) return {};
  SEG_CHECK(g.sizes() == leaf_->sizes && g.dtype() == leaf_->dtype,
            "backward: gradient ", g.str(), " does not match its leaf (", dtype_name(leaf_->dtype),
            " ", shape_str(leaf_->sizes), ")");
  if (!leaf_->grad.defined()) {
    // Take the incoming gradient over when nothing else can see it (only the engine's buffer
    // holds it and it owns its whole storage); otherwise copy, since it may share storage with
    // other gradients or be a broadcast view.
    const bool sole_owner = g.impl_ptr().use_count() == 1 && g.storage().use_count() == 1 &&
                            g.is_contiguous() && g.offset() == 0 && !g.requires_grad() &&
                            static_cast<size_t>(g.numel()) * dtype_size(g.dtype()) == g.storage()->nbytes();
    leaf_->grad = sole_owner ? g : g.detach().clone();
  } else {
    leaf_->grad.add_(g);
  }
  return {};
}

std::vector<Tensor> FunctionNode::apply(const std::vector<Tensor>& grad_outputs) {
  SEG_CHECK(fn_ != nullptr, "backward: trying to backward through ", name_,
            " a second time, but its saved tensors were freed by the first backward; pass "
            "retain_graph = true to the first one");
  std::vector<Tensor> grads = grad_outputs;
  for (size_t i = 0; i < grads.size(); ++i) {
    if (!grads[i].defined()) grads[i] = zeros(outputs_[i].sizes, outputs_[i].dtype, outputs_[i].device);
  }
  std::vector<Tensor> result = fn_(grads, needs_);
  SEG_CHECK(result.size() == inputs_.size(), "internal error: ", name_, " returned ", result.size(),
            " gradients for ", inputs_.size(), " inputs");
  for (size_t i = 0; i < result.size(); ++i) {
    if (!needs_[i]) {
      result[i] = Tensor();
      continue;
    }
    if (!result[i].defined()) continue;
    SEG_CHECK(result[i].sizes() == inputs_[i].sizes && result[i].dtype() == inputs_[i].dtype,
              "internal error: ", name_, " returned gradient ", result[i].str(), " for input ", i,
              " of ", dtype_name(inputs_[i].dtype), " ", shape_str(inputs_[i].sizes));
  }
  return result;
}

bool any_requires_grad(const std::vector<Tensor>& inputs) {
  if (!GradMode::enabled()) return false;
  for (const Tensor& t : inputs) {
    if (t.defined() && t.requires_grad()) return true;
  }
  return false;
}

Edge gradient_edge(const Tensor& t) {
  if (t.grad_fn()) return Edge{t.grad_fn(), t.impl()->output_nr};
  if (!t.requires_grad()) return Edge{};
  std::shared_ptr<Node> acc = t.impl()->grad_accumulator.lock();
  if (!acc) {
    acc = std::make_shared<AccumulateGrad>(t.impl_ptr());
    t.impl()->grad_accumulator = acc;
  }
  return Edge{acc, 0};
}

void record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor*>& outputs, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return;
  std::vector<bool> needs;
  std::vector<TensorMeta> input_meta, output_meta;
  for (const Tensor& t : inputs) {
    needs.push_back(t.defined() && t.requires_grad());
    input_meta.push_back(meta_of(t));
  }
  for (const Tensor* t : outputs) output_meta.push_back(meta_of(*t));
  auto node = std::make_shared<FunctionNode>(name, std::move(backward), needs, std::move(input_meta),
                                             std::move(output_meta));
  node->sequence_nr = t_next_sequence_nr++;
  node->num_outputs = static_cast<int>(outputs.size());
  for (size_t i = 0; i < inputs.size(); ++i) {
    node->next_edges.push_back(needs[i] ? gradient_edge(inputs[i]) : Edge{});
  }
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* impl = outputs[i]->impl();
    SEG_ASSERT(is_floating(impl->dtype));
    impl->requires_grad = true;
    impl->grad_fn = node;
    impl->output_nr = static_cast<int>(i);
  }
}

void run_backward(const std::vector<Tensor>& roots, const std::vector<Tensor>& grads,
                  bool retain_graph) {
  SEG_CHECK(roots.size() == grads.size(), "backward: ", roots.size(), " roots but ", grads.size(),
            " gradients");
  std::vector<std::pair<Edge, Tensor>> starts;
  for (size_t i = 0; i < roots.size(); ++i) {
    const Tensor& root = roots[i];
    SEG_CHECK(root.defined(), "backward: undefined tensor");
    SEG_CHECK(root.requires_grad(), "backward: tensor ", root.str(),
              " does not require grad and has no grad_fn");
    Tensor g = grads[i];
    if (!g.defined()) {
      SEG_CHECK(root.numel() == 1, "backward: a gradient is needed for the non-scalar tensor ",
                root.str());
      g = ones(root.sizes(), root.dtype(), root.device());
    } else {
      SEG_CHECK(g.sizes() == root.sizes() && g.dtype() == root.dtype(), "backward: gradient ",
                g.str(), " for tensor ", root.str());
    }
    starts.emplace_back(gradient_edge(root), g.detach());
  }

  // Count, for every node reachable from the roots, how many edges point at it.
  std::unordered_map<Node*, int> dependencies;
  std::unordered_set<Node*> seen;
  std::vector<Node*> stack;
  for (auto& [edge, g] : starts) {
    if (seen.insert(edge.node.get()).second) stack.push_back(edge.node.get());
  }
  while (!stack.empty()) {
    Node* node = stack.back();
    stack.pop_back();
    for (const Edge& e : node->next_edges) {
      if (!e.node) continue;
      ++dependencies[e.node.get()];
      if (seen.insert(e.node.get()).second) stack.push_back(e.node.get());
    }
  }

  NoGradGuard no_grad;
  std::unordered_map<Node*, std::vector<Tensor>> buffers;
  auto deliver = [&](const Edge& e, const Tensor& g) {
    std::vector<Tensor>& buf = buffers[e.node.get()];
    if (buf.empty()) buf.resize(static_cast<size_t>(e.node->num_outputs));
    Tensor& slot = buf[static_cast<size_t>(e.input_nr)];
    slot = slot.defined() ? add(slot, g) : g;  // sum at joins
  };
  auto later_first = [](const std::shared_ptr<Node>& a, const std::shared_ptr<Node>& b) {
    return a->sequence_nr < b->sequence_nr;
  };
  std::priority_queue<std::shared_ptr<Node>, std::vector<std::shared_ptr<Node>>, decltype(later_first)>
      ready(later_first);
  std::unordered_set<Node*> queued;
  for (auto& [edge, g] : starts) deliver(edge, g);
  for (auto& [edge, g] : starts) {
    if (dependencies[edge.node.get()] == 0 && queued.insert(edge.node.get()).second) ready.push(edge.node);
  }

  while (!ready.empty()) {
    std::shared_ptr<Node> node = ready.top();
    ready.pop();
    // A node every path to which carried no gradient is passed through without running.
    std::vector<Tensor> outputs;
    auto it = buffers.find(node.get());
    if (it != buffers.end()) {
      std::vector<Tensor> inputs = std::move(it->second);
      buffers.erase(it);
      outputs = node->apply(inputs);
    }
    if (!retain_graph) node->release();
    for (size_t i = 0; i < node->next_edges.size(); ++i) {
      const Edge& e = node->next_edges[i];
      if (!e.node) continue;
      if (i < outputs.size() && outputs[i].defined()) deliver(e, outputs[i]);
      if (--dependencies[e.node.get()] == 0) ready.push(e.node);
    }
  }
}

}  // namespace seg
