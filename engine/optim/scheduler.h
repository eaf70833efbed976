// Learning-rate schedulers with torch.optim.lr_scheduler's semantics (PyTorch 1.13): StepLR,
// PolynomialLR (DeepLab's "poly"), CosineAnnealingLR, LinearLR (warmup), SequentialLR (warmup then
// another schedule, switching at milestones) and ReduceLROnPlateau.
//
// Design notes
// - A scheduler refers to an Optimizer (which must outlive it) and sets the lr of every param group
//   from that group's own base lr (PyTorch's group['initial_lr'], recorded by the first scheduler
//   built on the optimiser). Constructing one performs PyTorch's initial step (epoch 0); call
//   step() after each optimizer.step(), once per epoch or per iteration as the schedule is meant.
// - The values follow PyTorch's recursive ("chainable") get_lr(), which computes each lr from the
//   group's current lr (e.g. poly: lr * ((1 - t/T) / (1 - (t-1)/T))^power): rounding makes it
//   differ from the closed form base * (1 - t/T)^power in the last bits, and matching PyTorch's
//   numbers is the point. The closed form is used exactly where PyTorch uses it: when SequentialLR
//   switches to a scheduler at a milestone (PyTorch's scheduler.step(0)). Floating-point
//   contraction is off in scheduler.cpp so that `a * b + c` rounds as Python does.
// - state() / load_state() save and restore everything a resumed run needs as JSON of plain numbers
//   (epoch, step count, base and last lrs; best, bad epochs and cooldown for ReduceLROnPlateau; the
//   children of SequentialLR). load_state() also puts the saved lrs back into the optimiser, so a
//   resumed chainable schedule continues from exactly the same values.
#pragma once

#include <cstdint>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/optim/optimizer.h"

namespace seg {

class LRScheduler {
 public:
  virtual ~LRScheduler() = default;
  LRScheduler(const LRScheduler&) = delete;
  LRScheduler& operator=(const LRScheduler&) = delete;

  virtual const char* name() const = 0;
  // Advances one epoch (or iteration) and sets every group's lr.
  virtual void step();
  // The lrs set by the last step (or by the constructor), one per param group.
  const std::vector<double>& last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  const std::vector<double>& base_lrs() const { return base_lrs_; }
  Optimizer& optimizer() const { return *optimizer_; }

  virtual nlohmann::json state() const;
  // Restores state(); errors name the missing or mistyped key. Sets the optimiser's lrs.
  virtual void load_state(const nlohmann::json& state);

 protected:
  explicit LRScheduler(Optimizer& optimizer);
  // PyTorch's get_lr(): the new lrs from the optimiser's current ones, last_epoch_ already
  // advanced.
  virtual std::vector<double> chainable_lr() const = 0;
  // PyTorch's _get_closed_form_lr(), for last_epoch_.
  virtual std::vector<double> closed_form_lr() const = 0;
  // PyTorch's _initial_step(); every concrete constructor ends with it.
  void initial_step();
  // PyTorch's step(epoch): jumps to `epoch` with the closed form.
  void step_to(int64_t epoch);
  void apply(const std::vector<double>& lrs);

  Optimizer* optimizer_;
  std::vector<double> base_lrs_;
  std::vector<double> last_lr_;
  int64_t last_epoch_ = -1;
  int64_t step_count_ = 0;

  friend class SequentialLR;
};

// lr *= gamma every step_size epochs.
class StepLR : public LRScheduler {
 public:
  StepLR(Optimizer& optimizer, int64_t step_size, double gamma = 0.1);
  const char* name() const override { return "StepLR"; }

 private:
  std::vector<double> chainable_lr() const override;
  std::vector<double> closed_form_lr() const override;
  int64_t step_size_;
  double gamma_;
};

// lr = base * (1 - t / total_iters)^power for t <= total_iters, then unchanged (0 at the end).
// DeepLab's per-iteration "poly" schedule is power 0.9 with total_iters the iteration count.
class PolynomialLR : public LRScheduler {
 public:
  PolynomialLR(Optimizer& optimizer, int64_t total_iters = 5, double power = 1.0);
  const char* name() const override { return "PolynomialLR"; }

 private:
  std::vector<double> chainable_lr() const override;
  std::vector<double> closed_form_lr() const override;
  int64_t total_iters_;
  double power_;
};

// lr = eta_min + (base - eta_min) * (1 + cos(pi * t / T_max)) / 2 (PyTorch's recursive form,
// which keeps going past T_max, rising again).
class CosineAnnealingLR : public LRScheduler {
 public:
  CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min = 0.0);
  const char* name() const override { return "CosineAnnealingLR"; }

 private:
  std::vector<double> chainable_lr() const override;
  std::vector<double> closed_form_lr() const override;
  int64_t t_max_;
  double eta_min_;
};

// lr = base * factor, the factor going linearly from start_factor (epoch 0) to end_factor (epoch
// total_iters), then unchanged. start_factor in (0, 1], end_factor in [0, 1].
class LinearLR : public LRScheduler {
 public:
  LinearLR(Optimizer& optimizer, double start_factor = 1.0 / 3.0, double end_factor = 1.0,
           int64_t total_iters = 5);
  const char* name() const override { return "LinearLR"; }

 private:
  std::vector<double> chainable_lr() const override;
  std::vector<double> closed_form_lr() const override;
  double start_factor_;
  double end_factor_;
  int64_t total_iters_;
};

// Runs schedulers[0] until milestones[0], then schedulers[1] (restarted at its epoch 0 with its
// closed form), and so on: warmup then another schedule. The schedulers must have been built on
// `optimizer`, in order, just before this (as in PyTorch); this takes them over.
// milestones.size() == schedulers.size() - 1, strictly increasing and > 0.
class SequentialLR : public LRScheduler {
 public:
  SequentialLR(Optimizer& optimizer, std::vector<std::unique_ptr<LRScheduler>> schedulers,
               std::vector<int64_t> milestones);
  const char* name() const override { return "SequentialLR"; }
  void step() override;
  nlohmann::json state() const override;
  void load_state(const nlohmann::json& state) override;
  const LRScheduler& scheduler(size_t i) const { return *schedulers_.at(i); }

 private:
  std::vector<double> chainable_lr() const override;
  std::vector<double> closed_form_lr() const override;
  std::vector<std::unique_ptr<LRScheduler>> schedulers_;
  std::vector<int64_t> milestones_;
};

// Divides the lr by 1/factor when a metric has stopped improving for `patience` epochs.
enum class PlateauMode { min, max };
enum class ThresholdMode { rel, abs };

struct ReduceLROnPlateauOptions {
  PlateauMode mode = PlateauMode::min;
  double factor = 0.1;  // in [0, 1)
  int64_t patience = 10;
  double threshold = 1e-4;
  ThresholdMode threshold_mode = ThresholdMode::rel;
  int64_t cooldown = 0;
  // One per param group, or one for all; empty means 0.
  std::vector<double> min_lrs = {};
  double eps = 1e-8;  // changes smaller than this are ignored
};

// Parses "min"/"max" and "rel"/"abs" (for configs); errors name the value.
PlateauMode parse_plateau_mode(const std::string& s);
ThresholdMode parse_threshold_mode(const std::string& s);

class ReduceLROnPlateau {
 public:
  ReduceLROnPlateau(Optimizer& optimizer, const ReduceLROnPlateauOptions& options = {});
  // One epoch's metric (e.g. validation loss or mIoU).
  void step(double metric);
  const std::vector<double>& last_lr() const { return last_lr_; }
  int64_t last_epoch() const { return last_epoch_; }
  double best() const { return best_; }
  int64_t num_bad_epochs() const { return num_bad_epochs_; }
  int64_t cooldown_counter() const { return cooldown_counter_; }
  bool in_cooldown() const { return cooldown_counter_ > 0; }

  nlohmann::json state() const;
  void load_state(const nlohmann::json& state);

 private:
  bool is_better(double a, double best) const;

  Optimizer* optimizer_;
  ReduceLROnPlateauOptions options_;
  std::vector<double> min_lrs_;  // one per group
  double best_;
  int64_t num_bad_epochs_ = 0;
  int64_t cooldown_counter_ = 0;
  int64_t last_epoch_ = 0;
  std::vector<double> last_lr_;
};

}  // namespace seg
