// Optimiser front-end: parameter groups, option checks, lazy state, batching of kernel calls and
// the checkpoint naming of the state.
//
// One kernel call covers the parameters of a group that share a device, a dtype and the step
// bookkeeping (SGD's first momentum step, Adam's step count): on a GPU that is one multi-tensor
// launch per group in the common case, and the math needs nothing per parameter beyond its views.
#include "engine/optim/optimizer.h"

#include <algorithm>
#include <array>
#include <charconv>
#include <map>
#include <set>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "engine/ops/op_util.h"

namespace seg {

namespace {

// Buffer names per kind, in slot order (slot = OptimTensor::state0..2).
struct BufferNames {
  const char* names[3];
};
BufferNames buffer_names(OptimKind kind) {
  switch (kind) {
    case OptimKind::sgd: return {{"momentum_buffer", nullptr, nullptr}};
    case OptimKind::rmsprop: return {{"square_avg", "momentum_buffer", "grad_avg"}};
    case OptimKind::adam:
    case OptimKind::adamw: return {{"exp_avg", "exp_avg_sq", "max_exp_avg_sq"}};
  }
  return {{nullptr, nullptr, nullptr}};
}

// Which slots the update of `kind` with options `h` reads.
std::array<bool, 3> needed_buffers(OptimKind kind, const OptimHyper& h) {
  switch (kind) {
    case OptimKind::sgd: return {h.momentum != 0.0, false, false};
    case OptimKind::rmsprop: return {true, h.momentum > 0.0, h.centered};
    case OptimKind::adam:
    case OptimKind::adamw: return {true, true, h.amsgrad};
  }
  return {false, false, false};
}

std::string param_name(size_t g, size_t i) {
  return std::to_string(g) + "." + std::to_string(i);
}

// "state.<g>.<i>.<key>" or "param_groups.<g>.lr", split; false when the name has another form.
bool parse_index(const std::string& s, size_t& out) {
  if (s.empty() || s.size() > 9) return false;
  auto [ptr, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && ptr == s.data() + s.size();
}
std::vector<std::string> split_dots(const std::string& s) {
  std::vector<std::string> parts;
  size_t start = 0;
  while (true) {
    size_t dot = s.find('.', start);
    parts.push_back(s.substr(start, dot == std::string::npos ? std::string::npos : dot - start));
    if (dot == std::string::npos) break;
    start = dot + 1;
  }
  return parts;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// options

OptimHyper to_hyper(const SGDOptions& o) {
  OptimHyper h;
  h.lr = o.lr;
  h.momentum = o.momentum;
  h.dampening = o.dampening;
  h.weight_decay = o.weight_decay;
  h.nesterov = o.nesterov;
  h.maximize = o.maximize;
  return h;
}

OptimHyper to_hyper(const RMSpropOptions& o) {
  OptimHyper h;
  h.lr = o.lr;
  h.alpha = o.alpha;
  h.eps = o.eps;
  h.weight_decay = o.weight_decay;
  h.momentum = o.momentum;
  h.centered = o.centered;
  h.maximize = o.maximize;
  return h;
}

namespace {
// Adam and AdamW share their options; only the meaning of weight_decay differs (the kernel's kind).
template <class Options>
OptimHyper adam_hyper(const Options& o) {
  OptimHyper h;
  h.lr = o.lr;
  h.beta1 = o.beta1;
  h.beta2 = o.beta2;
  h.eps = o.eps;
  h.weight_decay = o.weight_decay;
  h.amsgrad = o.amsgrad;
  h.maximize = o.maximize;
  return h;
}
}  // namespace

OptimHyper to_hyper(const AdamOptions& o) { return adam_hyper(o); }
OptimHyper to_hyper(const AdamWOptions& o) { return adam_hyper(o); }

// PyTorch's checks (torch.optim.*.__init__), plus finiteness; `!(x >= 0)` also rejects NaN.
void Optimizer::check_options(const OptimHyper& h, size_t g) const {
  const char* opt = name();
  auto fail_unless = [&](bool ok, const char* option, double value, const char* rule) {
    SEG_CHECK(ok, opt, ": invalid ", option, " ", value, " in param group ", g, " (", rule, ")");
  };
  if (kind_ == OptimKind::sgd && std::isnan(h.lr)) {
    SEG_CHECK(false, opt, ": lr is required (param group ", g, " has none)");
  }
  fail_unless(h.lr >= 0.0 && std::isfinite(h.lr), "lr", h.lr, "must be >= 0 and finite");
  fail_unless(h.weight_decay >= 0.0 && std::isfinite(h.weight_decay), "weight_decay",
              h.weight_decay, "must be >= 0 and finite");
  switch (kind_) {
    case OptimKind::sgd:
      fail_unless(h.momentum >= 0.0 && std::isfinite(h.momentum), "momentum", h.momentum,
                  "must be >= 0 and finite");
      fail_unless(std::isfinite(h.dampening), "dampening", h.dampening, "must be finite");
      if (h.nesterov) {
        SEG_CHECK(h.momentum > 0.0 && h.dampening == 0.0, opt, ": nesterov momentum requires a ",
                  "momentum > 0 and zero dampening; param group ", g, " has momentum ", h.momentum,
                  " and dampening ", h.dampening);
      }
      break;
    case OptimKind::rmsprop:
      fail_unless(h.eps >= 0.0, "eps", h.eps, "must be >= 0");
      fail_unless(h.momentum >= 0.0 && std::isfinite(h.momentum), "momentum", h.momentum,
                  "must be >= 0 and finite");
      fail_unless(h.alpha >= 0.0 && std::isfinite(h.alpha), "alpha", h.alpha,
                  "must be >= 0 and finite");
      break;
    case OptimKind::adam:
    case OptimKind::adamw:
      fail_unless(h.eps >= 0.0, "eps", h.eps, "must be >= 0");
      fail_unless(h.beta1 >= 0.0 && h.beta1 < 1.0, "beta1", h.beta1, "must be in [0, 1)");
      fail_unless(h.beta2 >= 0.0 && h.beta2 < 1.0, "beta2", h.beta2, "must be in [0, 1)");
      break;
  }
}

void Optimizer::add_group(const std::vector<Tensor>& params, const OptimHyper& options) {
  const size_t g = groups_.size();
  check_options(options, g);
  for (size_t i = 0; i < params.size(); ++i) {
    const Tensor& p = params[i];
    SEG_CHECK(p.defined(), name(), ": parameter ", param_name(g, i), " is undefined");
    SEG_CHECK(is_floating(p.dtype()), name(), ": parameter ", param_name(g, i), " is ", p.str(),
              "; only floating tensors can be optimised");
    SEG_CHECK(p.is_leaf(), name(), ": parameter ", param_name(g, i), " (", p.str(),
              ") is not a leaf tensor; optimise the tensor it was computed from");
    SEG_CHECK(p.requires_grad(), name(), ": parameter ", param_name(g, i), " (", p.str(),
              ") does not require grad");
    for (size_t h = 0; h <= g; ++h) {
      const std::vector<Tensor>& others = h == g ? params : groups_[h].params;
      const size_t end = h == g ? i : others.size();
      for (size_t j = 0; j < end; ++j) {
        SEG_CHECK(!others[j].same(p), name(), ": parameter ", param_name(g, i), " (", p.str(),
                  ") is also parameter ", param_name(h, j), "; a parameter may appear once");
      }
    }
  }
  groups_.push_back(ParamGroup{params, options, std::nullopt});
  state_.emplace_back(params.size());
}

void Optimizer::check_not_empty() const {
  size_t n = 0;
  for (const ParamGroup& group : groups_) n += group.params.size();
  SEG_CHECK(n > 0, name(), ": got an empty parameter list");
}

OptimHyper& Optimizer::group_options(size_t g) {
  SEG_CHECK(g < groups_.size(), name(), ": no param group ", g, " (", groups_.size(), " groups)");
  return groups_[g].options;
}

double Optimizer::lr(size_t g) const {
  SEG_CHECK(g < groups_.size(), name(), ": no param group ", g, " (", groups_.size(), " groups)");
  return groups_[g].options.lr;
}

void Optimizer::set_lr(size_t g, double lr) {
  SEG_CHECK(g < groups_.size(), name(), ": no param group ", g, " (", groups_.size(), " groups)");
  SEG_CHECK(lr >= 0.0 && std::isfinite(lr), name(), ": invalid lr ", lr, " for param group ", g,
            " (must be >= 0 and finite)");
  groups_[g].options.lr = lr;
}

std::vector<double> Optimizer::lrs() const {
  std::vector<double> out;
  for (const ParamGroup& group : groups_) out.push_back(group.options.lr);
  return out;
}

std::optional<double> Optimizer::initial_lr(size_t g) const {
  SEG_CHECK(g < groups_.size(), name(), ": no param group ", g, " (", groups_.size(), " groups)");
  return groups_[g].initial_lr;
}

void Optimizer::set_initial_lr(size_t g, double lr) {
  SEG_CHECK(g < groups_.size(), name(), ": no param group ", g, " (", groups_.size(), " groups)");
  groups_[g].initial_lr = lr;
}

int64_t Optimizer::param_step(size_t g, size_t i) const {
  SEG_CHECK(g < groups_.size() && i < groups_[g].params.size(), name(), ": no parameter ",
            param_name(g, i));
  return state_[g][i].step;
}

void Optimizer::zero_grad() {
  for (ParamGroup& group : groups_) {
    for (Tensor& p : group.params) p.zero_grad();
  }
}

// ---------------------------------------------------------------------------------------------
// step

void Optimizer::step() {
  NoGradGuard no_grad;
  // Everything is checked before anything changes: an error leaves parameters and state as they
  // were.
  for (size_t g = 0; g < groups_.size(); ++g) {
    check_options(groups_[g].options, g);
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const Tensor& p = groups_[g].params[i];
      const Tensor grad = p.grad();
      if (!grad.defined()) continue;
      SEG_CHECK(
          grad.sizes() == p.sizes() && grad.dtype() == p.dtype() && grad.device() == p.device(),
          name(), ": the gradient of parameter ", param_name(g, i), " is ", grad.str(),
          " but the parameter is ", p.str());
      kernels_for<OpId::optimizer_step>(p.device());  // throws when the device has none
    }
  }

  // Parameters of one kernel call: same device, dtype and step bookkeeping.
  struct Batch {
    Tensor ref;  // a parameter of the batch, for the device and its execution context
    Device device;
    DType dtype;
    bool first;
    int64_t step;
    std::vector<OptimTensor> views;
  };
  // Non-contiguous parameters are updated through a contiguous copy, written back afterwards.
  struct WriteBack {
    Tensor param, copy;
  };

  for (size_t g = 0; g < groups_.size(); ++g) {
    const ParamGroup& group = groups_[g];
    const OptimHyper& h = group.options;
    const std::array<bool, 3> needed = needed_buffers(kind_, h);
    std::vector<Batch> batches;
    std::vector<Tensor> keep;  // contiguous grads and copies, alive until the kernels ran
    std::vector<WriteBack> write_back;
    for (size_t i = 0; i < group.params.size(); ++i) {
      const Tensor& p = group.params[i];
      Tensor grad = p.grad();
      if (!grad.defined()) continue;
      ParamState& st = state_[g][i];
      st.step += 1;
      bool first = false;
      for (int k = 0; k < 3; ++k) {
        if (needed[k] && !st.buffers[k].defined()) {
          st.buffers[k] = zeros(p.sizes(), p.dtype(), p.device());
          if (kind_ == OptimKind::sgd) first = true;  // the momentum buffer starts as the gradient
        }
      }
      Tensor pc = p.detach();
      if (!pc.is_contiguous()) {
        pc = pc.contiguous();
        write_back.push_back({p, pc});
      }
      Tensor gc = contiguous_data(grad);
      if (gc.storage() == pc.storage()) {  // the kernels need the gradient in memory of its own
        Tensor copy = empty(gc.sizes(), gc.dtype(), gc.device());
        copy.copy_(gc);
        gc = copy;
      }
      keep.push_back(gc);
      keep.push_back(pc);

      OptimTensor t;
      t.param = view_of(pc);
      t.grad = view_of(gc);
      View* slots[3] = {&t.state0, &t.state1, &t.state2};
      for (int k = 0; k < 3; ++k) {
        if (needed[k]) *slots[k] = view_of(st.buffers[k]);
      }
      // SGD's bookkeeping is `first` only; the step count matters to Adam's bias corrections.
      const bool adam = kind_ == OptimKind::adam || kind_ == OptimKind::adamw;
      const int64_t step_key = adam ? st.step : 0;
      auto it = std::find_if(batches.begin(), batches.end(), [&](const Batch& b) {
        return b.device == p.device() && b.dtype == p.dtype() && b.first == first &&
               b.step == step_key;
      });
      if (it == batches.end()) {
        batches.push_back(Batch{p, p.device(), p.dtype(), first, step_key, {}});
        it = batches.end() - 1;
      }
      it->views.push_back(t);
    }
    for (const Batch& b : batches) {
      OptimHyper hb = h;
      hb.first = b.first;
      if (kind_ == OptimKind::adam || kind_ == OptimKind::adamw) {
        // Python's `1 - beta ** step`, with step a float holding an integer.
        hb.bias_correction1 = 1.0 - std::pow(h.beta1, static_cast<double>(b.step));
        hb.bias_correction2 = 1.0 - std::pow(h.beta2, static_cast<double>(b.step));
      }
      const auto& k = kernels_for<OpId::optimizer_step>(b.device);
      k.step(exec_context(b.ref), kind_, hb, b.views.data(), static_cast<int64_t>(b.views.size()));
    }
    for (const WriteBack& w : write_back) w.param.detach().copy_(w.copy);
    for (const Tensor& p : group.params) {
      if (p.grad().defined()) p.bump_version();
    }
  }
}

// ---------------------------------------------------------------------------------------------
// state for checkpoints

std::vector<std::pair<std::string, Tensor>> Optimizer::state_tensors() const {
  std::vector<std::pair<std::string, Tensor>> out;
  const BufferNames names = buffer_names(kind_);
  for (size_t g = 0; g < groups_.size(); ++g) {
    out.emplace_back("param_groups." + std::to_string(g) + ".lr",
                     scalar_tensor(groups_[g].options.lr, DType::f64));
    for (size_t i = 0; i < groups_[g].params.size(); ++i) {
      const ParamState& st = state_[g][i];
      if (st.step == 0) continue;
      const std::string prefix = "state." + param_name(g, i) + ".";
      out.emplace_back(prefix + "step", scalar_tensor(static_cast<double>(st.step), DType::i64));
      for (int k = 0; k < 3; ++k) {
        if (st.buffers[k].defined()) out.emplace_back(prefix + names.names[k], st.buffers[k]);
      }
    }
  }
  return out;
}

void Optimizer::load_state_tensors(const std::vector<std::pair<std::string, Tensor>>& tensors) {
  const char* opt = name();
  const BufferNames names = buffer_names(kind_);
  // Sort the entries by parameter, checking names and shapes.
  struct Entry {
    const Tensor* step = nullptr;
    const Tensor* buffers[3] = {nullptr, nullptr, nullptr};
  };
  std::map<std::pair<size_t, size_t>, Entry> entries;
  std::vector<const Tensor*> lrs(groups_.size(), nullptr);
  std::set<std::string> seen;
  for (const auto& [key, t] : tensors) {
    SEG_CHECK(seen.insert(key).second, opt, ": load_state_tensors: entry '", key,
              "' appears twice");
    SEG_CHECK(t.defined(), opt, ": load_state_tensors: entry '", key, "' is undefined");
    const std::vector<std::string> parts = split_dots(key);
    size_t g = 0, i = 0;
    if (parts.size() == 3 && parts[0] == "param_groups" && parts[2] == "lr" &&
        parse_index(parts[1], g)) {
      SEG_CHECK(g < groups_.size(), opt, ": load_state_tensors: entry '", key,
                "' names param group ", g, " but the optimizer has ", groups_.size());
      SEG_CHECK(t.numel() == 1, opt, ": load_state_tensors: entry '", key, "' is ", t.str(),
                ", expected a scalar");
      const double v = t.item();
      SEG_CHECK(v >= 0.0 && std::isfinite(v), opt, ": load_state_tensors: entry '", key, "' holds ",
                v, ", not a valid lr");
      lrs[g] = &t;
      continue;
    }
    SEG_CHECK(parts.size() == 4 && parts[0] == "state" && parse_index(parts[1], g) &&
                  parse_index(parts[2], i),
              opt, ": load_state_tensors: unexpected entry '", key,
              "' (expected state.<group>.<index>.<name> or param_groups.<group>.lr)");
    SEG_CHECK(g < groups_.size() && i < groups_[g].params.size(), opt,
              ": load_state_tensors: entry '", key, "' names parameter ", param_name(g, i), " but ",
              g < groups_.size()
                  ? "param group " + std::to_string(g) + " has " +
                        std::to_string(groups_[g].params.size()) + " parameters"
                  : "the optimizer has " + std::to_string(groups_.size()) + " param groups");
    Entry& e = entries[{g, i}];
    if (parts[3] == "step") {
      SEG_CHECK(t.numel() == 1, opt, ": load_state_tensors: entry '", key, "' is ", t.str(),
                ", expected a scalar step count");
      const double v = t.item();
      SEG_CHECK(v >= 0 && v == std::floor(v) && v < 9.0e15, opt, ": load_state_tensors: entry '",
                key, "' holds ", v, ", not a step count");
      e.step = &t;
      continue;
    }
    int slot = -1;
    for (int k = 0; k < 3; ++k) {
      if (names.names[k] != nullptr && parts[3] == names.names[k]) slot = k;
    }
    SEG_CHECK(slot >= 0, opt, ": load_state_tensors: unexpected entry '", key, "' (", opt,
              " keeps no '", parts[3], "')");
    const Tensor& p = groups_[g].params[i];
    SEG_CHECK(t.sizes() == p.sizes(), opt, ": load_state_tensors: entry '", key, "' has shape ",
              shape_str(t.sizes()), " but parameter ", param_name(g, i), " has shape ",
              shape_str(p.sizes()));
    SEG_CHECK(is_floating(t.dtype()), opt, ": load_state_tensors: entry '", key, "' is ", t.str(),
              ", expected a floating tensor");
    e.buffers[slot] = &t;
  }
  // Every parameter with state has its step and the buffers its group's options need.
  for (const auto& [index, e] : entries) {
    const auto [g, i] = index;
    const std::string prefix = "state." + param_name(g, i) + ".";
    SEG_CHECK(e.step != nullptr, opt, ": load_state_tensors: missing '", prefix, "step'");
    const std::array<bool, 3> needed = needed_buffers(kind_, groups_[g].options);
    for (int k = 0; k < 3; ++k) {
      SEG_CHECK(!needed[k] || e.buffers[k] != nullptr, opt, ": load_state_tensors: missing '",
                prefix, names.names[k], "'");
    }
  }

  // Everything checked: build the new state (own copies, in each parameter's dtype and device).
  std::vector<std::vector<ParamState>> state(groups_.size());
  for (size_t g = 0; g < groups_.size(); ++g) state[g].resize(groups_[g].params.size());
  for (const auto& [index, e] : entries) {
    const auto [g, i] = index;
    const Tensor& p = groups_[g].params[i];
    ParamState& st = state[g][i];
    st.step = static_cast<int64_t>(e.step->item());
    for (int k = 0; k < 3; ++k) {
      if (e.buffers[k] == nullptr) continue;
      st.buffers[k] = empty(p.sizes(), p.dtype(), p.device());
      st.buffers[k].copy_(e.buffers[k]->to(p.device()));
    }
  }
  state_ = std::move(state);
  for (size_t g = 0; g < groups_.size(); ++g) {
    if (lrs[g] != nullptr) set_lr(g, lrs[g]->item());
  }
}

// ---------------------------------------------------------------------------------------------
// the optimisers

namespace {
template <class Options, class Opt>
void add_groups(Opt& opt, const std::vector<ParamGroupSpec<Options>>& groups) {
  for (const auto& group : groups) opt.add_param_group(group.params, group.options);
}
}  // namespace

SGD::SGD(const std::vector<Tensor>& params, const SGDOptions& options) : Optimizer(OptimKind::sgd) {
  add_param_group(params, options);
  check_not_empty();
}
SGD::SGD(const std::vector<ParamGroupSpec<SGDOptions>>& groups) : Optimizer(OptimKind::sgd) {
  add_groups(*this, groups);
  check_not_empty();
}
void SGD::add_param_group(const std::vector<Tensor>& params, const SGDOptions& options) {
  add_group(params, to_hyper(options));
}

RMSprop::RMSprop(const std::vector<Tensor>& params, const RMSpropOptions& options)
    : Optimizer(OptimKind::rmsprop) {
  add_param_group(params, options);
  check_not_empty();
}
RMSprop::RMSprop(const std::vector<ParamGroupSpec<RMSpropOptions>>& groups)
    : Optimizer(OptimKind::rmsprop) {
  add_groups(*this, groups);
  check_not_empty();
}
void RMSprop::add_param_group(const std::vector<Tensor>& params, const RMSpropOptions& options) {
  add_group(params, to_hyper(options));
}

Adam::Adam(const std::vector<Tensor>& params, const AdamOptions& options)
    : Optimizer(OptimKind::adam) {
  add_param_group(params, options);
  check_not_empty();
}
Adam::Adam(const std::vector<ParamGroupSpec<AdamOptions>>& groups) : Optimizer(OptimKind::adam) {
  add_groups(*this, groups);
  check_not_empty();
}
void Adam::add_param_group(const std::vector<Tensor>& params, const AdamOptions& options) {
  add_group(params, to_hyper(options));
}

AdamW::AdamW(const std::vector<Tensor>& params, const AdamWOptions& options)
    : Optimizer(OptimKind::adamw) {
  add_param_group(params, options);
  check_not_empty();
}
AdamW::AdamW(const std::vector<ParamGroupSpec<AdamWOptions>>& groups)
    : Optimizer(OptimKind::adamw) {
  add_groups(*this, groups);
  check_not_empty();
}
void AdamW::add_param_group(const std::vector<Tensor>& params, const AdamWOptions& options) {
  add_group(params, to_hyper(options));
}

}  // namespace seg
