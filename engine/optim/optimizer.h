// Optimisers: SGD, RMSprop, Adam and AdamW with PyTorch 1.13's update rules, parameter groups and
// checkpointable state.
//
// Design notes
// - An optimiser holds parameter groups, each a list of leaf tensors with its own hyperparameters
//   (every option may differ between groups, as in PyTorch). Options are given as a typed struct
//   per optimiser (PyTorch's defaults) and stored per group as the kernels' OptimHyper; they may be
//   changed between steps through group_options() / set_lr() and are checked again at every step.
// - step() runs under no-grad. Parameters whose .grad() is undefined are skipped, as in PyTorch.
//   The update happens in place through kernels_for<OpId::optimizer_step> on the parameter's
//   device; the parameter's version is bumped, so a graph that saved it before the step refuses to
//   run.
// - State is created lazily, per parameter, on the parameter's device, as zeros; SGD's momentum
//   buffer is written with the first gradient (PyTorch's clone). Every parameter also keeps a step
//   count (PyTorch keeps one for RMSprop and Adam(W); Adam's bias corrections use it), so two
//   parameters of one group can be at different steps when one of them missed a gradient.
// - state_tensors() names the state "state.<group>.<index>.<buffer>" (PyTorch's buffer names:
//   momentum_buffer, square_avg, grad_avg, exp_avg, exp_avg_sq, max_exp_avg_sq), the step counts
//   "state.<group>.<index>.step" (i64 scalars) and each group's learning rate
//   "param_groups.<group>.lr" (f64 scalar). The buffers are the live tensors, not copies.
//   load_state_tensors() checks everything before changing anything.
// - An optimiser refers to its parameters (shared tensor handles) but owns nothing of the model;
//   schedulers refer to the optimiser, which must outlive them.
//
// Usage (DeepLab's recipe: the backbone at the base lr, the head at 10x, poly decay per iteration):
//   SGD opt({{backbone_params, {.lr = 0.01, .momentum = 0.9, .weight_decay = 1e-4}},
//            {head_params, {.lr = 0.1, .momentum = 0.9, .weight_decay = 1e-4}}});
//   PolynomialLR poly(opt, total_iters, 0.9);          // engine/optim/scheduler.h
//   for (...) { opt.zero_grad(); loss.backward(); opt.step(); poly.step(); }
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"
#include "kernels/common/optim.h"

namespace seg {

// Options of each optimiser, with PyTorch's defaults. SGD's lr has none (PyTorch's `required`):
// leaving it unset is an error.
struct SGDOptions {
  double lr = std::numeric_limits<double>::quiet_NaN();
  double momentum = 0.0;
  double dampening = 0.0;
  double weight_decay = 0.0;
  bool nesterov = false;  // needs momentum > 0 and dampening == 0
  bool maximize = false;
};

struct RMSpropOptions {
  double lr = 1e-2;
  double alpha = 0.99;
  double eps = 1e-8;
  double weight_decay = 0.0;
  double momentum = 0.0;
  bool centered = false;
  bool maximize = false;
};

struct AdamOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;  // L2 penalty added to the gradient
  bool amsgrad = false;
  bool maximize = false;
};

struct AdamWOptions {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 1e-2;  // decoupled: param *= 1 - lr * weight_decay
  bool amsgrad = false;
  bool maximize = false;
};

// A group as given to a constructor: its parameters and all of its options.
template <class Options>
struct ParamGroupSpec {
  std::vector<Tensor> params;
  Options options;
};

struct ParamGroup {
  std::vector<Tensor> params;
  OptimHyper options;                // step bookkeeping fields unused here
  std::optional<double> initial_lr;  // PyTorch's 'initial_lr': set by the first scheduler
};

class Optimizer {
 public:
  virtual ~Optimizer() = default;
  Optimizer(const Optimizer&) = delete;
  Optimizer& operator=(const Optimizer&) = delete;

  OptimKind kind() const { return kind_; }
  const char* name() const { return optim_kind_name(kind_); }

  // One update of every parameter that has a gradient.
  void step();
  // Drops every parameter's gradient (PyTorch's set_to_none=True).
  void zero_grad();

  size_t num_param_groups() const { return groups_.size(); }
  const std::vector<ParamGroup>& param_groups() const { return groups_; }
  // The options of group g, to change between steps (checked at the next step).
  OptimHyper& group_options(size_t g);
  double lr(size_t g) const;
  void set_lr(size_t g, double lr);  // lr >= 0
  std::vector<double> lrs() const;
  // PyTorch's group['initial_lr'] (schedulers set it once and read it back).
  std::optional<double> initial_lr(size_t g) const;
  void set_initial_lr(size_t g, double lr);

  // Steps taken by parameter i of group g (0 before its first update).
  int64_t param_step(size_t g, size_t i) const;

  // The state for checkpoints (names in the design notes), in group, parameter, buffer order.
  std::vector<std::pair<std::string, Tensor>> state_tensors() const;
  // Restores state written by state_tensors() of an optimiser of the same kind over parameters of
  // the same shapes. A parameter without entries starts afresh. Errors name the missing, unexpected
  // or mis-shaped entry; on error nothing has changed.
  void load_state_tensors(const std::vector<std::pair<std::string, Tensor>>& tensors);

 protected:
  explicit Optimizer(OptimKind kind) : kind_(kind) {}
  // Checks the parameters and options (naming the group) and appends the group.
  void add_group(const std::vector<Tensor>& params, const OptimHyper& options);
  // For constructors: at least one parameter was given.
  void check_not_empty() const;

 private:
  struct ParamState {
    int64_t step = 0;
    Tensor buffers[3];  // the kernel's state0..2 (see OptimTensor)
  };
  void check_options(const OptimHyper& h, size_t g) const;

  OptimKind kind_;
  std::vector<ParamGroup> groups_;
  std::vector<std::vector<ParamState>> state_;  // [group][param]
};

class SGD : public Optimizer {
 public:
  SGD(const std::vector<Tensor>& params, const SGDOptions& options);
  explicit SGD(const std::vector<ParamGroupSpec<SGDOptions>>& groups);
  void add_param_group(const std::vector<Tensor>& params, const SGDOptions& options);
};

class RMSprop : public Optimizer {
 public:
  RMSprop(const std::vector<Tensor>& params, const RMSpropOptions& options = {});
  explicit RMSprop(const std::vector<ParamGroupSpec<RMSpropOptions>>& groups);
  void add_param_group(const std::vector<Tensor>& params, const RMSpropOptions& options);
};

class Adam : public Optimizer {
 public:
  Adam(const std::vector<Tensor>& params, const AdamOptions& options = {});
  explicit Adam(const std::vector<ParamGroupSpec<AdamOptions>>& groups);
  void add_param_group(const std::vector<Tensor>& params, const AdamOptions& options);
};

class AdamW : public Optimizer {
 public:
  AdamW(const std::vector<Tensor>& params, const AdamWOptions& options = {});
  explicit AdamW(const std::vector<ParamGroupSpec<AdamWOptions>>& groups);
  void add_param_group(const std::vector<Tensor>& params, const AdamWOptions& options);
};

// The kernels' hyperparameters for each options struct.
OptimHyper to_hyper(const SGDOptions& o);
OptimHyper to_hyper(const RMSpropOptions& o);
OptimHyper to_hyper(const AdamOptions& o);
OptimHyper to_hyper(const AdamWOptions& o);

}  // namespace seg
