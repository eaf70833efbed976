#include "engine/autograd.h"

#include <cctype>
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

namespace {

// A node with edges to the inputs' current histories; attaches nothing.
std::shared_ptr<Node> make_node(const std::string& name, const std::vector<Tensor>& inputs,
                                const std::vector<const Tensor*>& outputs, BackwardFn backward) {
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
  return node;
}

void attach(const std::shared_ptr<Node>& node, TensorImpl* impl, int output_nr) {
  SEG_ASSERT(is_floating(impl->dtype));
  impl->requires_grad = true;
  impl->grad_fn = node;
  impl->output_nr = output_nr;
}

// Geometry of a tensor in elements of its storage.
struct Geometry {
  Shape sizes, strides;
  int64_t offset = 0;
};

Geometry geometry_of(const TensorImpl& t) {
  return Geometry{t.sizes, t.strides, t.offset};
}

// Elements of storage that a tensor of this geometry spans from its offset.
int64_t extent_of(const Geometry& g) {
  int64_t extent = 1;
  for (size_t d = 0; d < g.sizes.size(); ++d) {
    if (g.sizes[d] == 0) return 0;
    extent += (g.sizes[d] - 1) * g.strides[d];
  }
  return extent;
}

// A buffer laid out like `base` (same sizes and strides, offset 0), and the region of it that
// `view` covers; `flat` holds the whole buffer. `view`'s sizes may be overridden (summed dims).
struct LaidOut {
  Tensor flat, base, region;
};

LaidOut lay_out(const Geometry& base, const Geometry& view, const Shape& region_sizes, DType dtype,
                Device device) {
  LaidOut l;
  l.flat = zeros({extent_of(base)}, dtype, device);
  l.base = alias_with_geometry(l.flat, base.sizes, base.strides, 0);
  l.region = alias_with_geometry(l.flat, region_sizes, view.strides, view.offset - base.offset);
  return l;
}

}  // namespace

void record(const std::string& name, const std::vector<Tensor>& inputs,
            const std::vector<Tensor*>& outputs, BackwardFn backward) {
  if (!any_requires_grad(inputs)) return;
  std::vector<const Tensor*> outs(outputs.begin(), outputs.end());
  std::shared_ptr<Node> node = make_node(name, inputs, outs, std::move(backward));
  for (size_t i = 0; i < outputs.size(); ++i) {
    TensorImpl* impl = outputs[i]->impl();
    attach(node, impl, static_cast<int>(i));
    impl->base = nullptr;  // its history is this node now, not a view of its base's
  }
}

std::string backward_node_name(std::string_view op) {
  std::string name;
  bool upper = true;
  for (char ch : op) {
    if (ch == '_') {
      upper = true;
      continue;
    }
    name += upper ? static_cast<char>(std::toupper(static_cast<unsigned char>(ch))) : ch;
    upper = false;
  }
  return name + "Backward";
}

bool begin_inplace(const char* op, const Tensor& self, const std::vector<Tensor>& others) {
  SEG_CHECK(
      !has_internal_overlap(self), op, ": more than one element of ", self.str(),
      " refers to the same memory (an expanded tensor); write into a contiguous copy instead");
  if (!GradMode::enabled()) return false;
  const std::shared_ptr<TensorImpl>& base = self.impl()->base;
  bool needed = self.requires_grad() || (base && base->requires_grad);
  for (const Tensor& t : others) needed = needed || (t.defined() && t.requires_grad());
  if (!needed) return false;
  const bool leaf = base ? (base->requires_grad && base->grad_fn == nullptr)
                         : (self.requires_grad() && self.is_leaf());
  SEG_CHECK(!leaf, op, ": ", self.str(), base ? " is a view of a leaf" : " is a leaf",
            " that requires grad, and grad mode is on: its value is an input of the graph. Change "
            "it under NoGradGuard (as optimisers, initialisers and loading do), or update a clone");
  SEG_CHECK(is_floating(self.dtype()), op, ": cannot record a gradient into ", self.str(),
            " (not a floating tensor), but a tensor involved requires grad; detach() the source or "
            "use NoGradGuard");
  return true;
}

void record_inplace(const std::string& name, const Tensor& self, const std::vector<Tensor>& others,
                    BackwardFn backward) {
  std::vector<Tensor> inputs;
  inputs.reserve(others.size() + 1);
  const std::shared_ptr<TensorImpl> base_impl = self.impl()->base;
  if (!base_impl) {
    // The update replaces self's history: inputs are its old value and the operands.
    inputs.push_back(self);
    inputs.insert(inputs.end(), others.begin(), others.end());
    std::shared_ptr<Node> node = make_node(name, inputs, {&self}, std::move(backward));
    attach(node, self.impl(), 0);
    ++self.impl()->history;
    return;
  }
  // Through a view: the base's new history applies `backward` to the viewed region of the base's
  // gradient (the new value there came from the update) and passes the rest through unchanged.
  Tensor base(base_impl);
  inputs.push_back(base);
  inputs.insert(inputs.end(), others.begin(), others.end());
  const Geometry bg = geometry_of(*base_impl), vg = geometry_of(*self.impl());
  BackwardFn copy_slices = [inner = std::move(backward), bg, vg](const std::vector<Tensor>& g,
                                                                 const std::vector<bool>& needs) {
    LaidOut l = lay_out(bg, vg, vg.sizes, g[0].dtype(), g[0].device());
    l.base.copy_(g[0]);
    std::vector<Tensor> grads = inner({l.region.clone()}, needs);
    if (needs[0]) {
      if (grads[0].defined()) {
        l.region.copy_(grads[0]);
      } else {
        l.region.fill_(0.0);
      }
      grads[0] = l.base;
    }
    return grads;
  };
  std::shared_ptr<Node> node = make_node("CopySlices", inputs, {&base}, std::move(copy_slices));
  attach(node, base_impl.get(), 0);
  ++base_impl->history;  // self and the other views of base rebuild their grad_fn when next used
}

void refresh_view_history(const Tensor& view) {
  TensorImpl* v = view.impl();
  const std::shared_ptr<TensorImpl>& base_impl = v->base;
  if (!base_impl || v->base_history == base_impl->history) return;
  v->base_history = base_impl->history;
  v->grad_fn = nullptr;
  v->output_nr = 0;
  v->requires_grad = false;
  if (!base_impl->requires_grad) return;
  // The gradient of the view lands in its region of a buffer laid out like the base; a dim the view
  // broadcasts (stride 0) is summed first, since all its elements are one element of the base.
  Tensor base(base_impl);
  const Geometry bg = geometry_of(*base_impl), vg = geometry_of(*v);
  Shape summed = vg.sizes;
  for (size_t d = 0; d < summed.size(); ++d) {
    if (vg.strides[d] == 0) summed[d] = 1;
  }
  BackwardFn as_strided = [bg, vg, summed](const std::vector<Tensor>& g, const std::vector<bool>&) {
    LaidOut l = lay_out(bg, vg, summed, g[0].dtype(), g[0].device());
    l.region.copy_(sum_to(g[0], summed));
    return std::vector<Tensor>{l.base};
  };
  std::shared_ptr<Node> node =
      make_node("AsStridedBackward", {base}, {&view}, std::move(as_strided));
  attach(node, v, 0);
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
