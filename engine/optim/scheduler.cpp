// Learning-rate schedulers: each formula is written in the order PyTorch 1.13 evaluates it
// (torch/optim/lr_scheduler.py), operation for operation, in double precision.
//
// Floating-point contraction is off for this file: GCC would otherwise fuse `x * y + eta_min` into
// one fma, which rounds once where Python rounds twice, and the lrs would differ from PyTorch's in
// the last bit.
#if defined(__clang__)
#pragma STDC FP_CONTRACT OFF
#elif defined(__GNUC__)
#pragma GCC optimize("fp-contract=off")
#endif

#include "engine/optim/scheduler.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numbers>
#include <string>

#include "engine/error.h"

namespace seg {

namespace {

// JSON has no infinities: they are written as strings ("inf", "-inf", "nan").
nlohmann::json number_json(double v) {
  if (std::isfinite(v)) return v;
  if (std::isnan(v)) return "nan";
  return v > 0 ? "inf" : "-inf";
}

const nlohmann::json& require_key(const nlohmann::json& j, const char* who, const char* key) {
  SEG_CHECK(j.is_object(), who, ": load_state: expected a JSON object, got ", j.dump());
  auto it = j.find(key);
  SEG_CHECK(it != j.end(), who, ": load_state: missing key '", key, "'");
  return *it;
}

int64_t get_int(const nlohmann::json& j, const char* who, const char* key) {
  const nlohmann::json& v = require_key(j, who, key);
  SEG_CHECK(v.is_number_integer(), who, ": load_state: key '", key, "' must be an integer, got ",
            v.dump());
  return v.get<int64_t>();
}

double get_number(const nlohmann::json& j, const char* who, const char* key) {
  const nlohmann::json& v = require_key(j, who, key);
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    if (s == "inf") return std::numeric_limits<double>::infinity();
    if (s == "-inf") return -std::numeric_limits<double>::infinity();
    if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
  }
  SEG_CHECK(v.is_number(), who, ": load_state: key '", key, "' must be a number, got ", v.dump());
  return v.get<double>();
}

std::vector<double> get_numbers(const nlohmann::json& j, const char* who, const char* key,
                                size_t expected) {
  const nlohmann::json& v = require_key(j, who, key);
  SEG_CHECK(v.is_array(), who, ": load_state: key '", key, "' must be an array, got ", v.dump());
  SEG_CHECK(v.size() == expected, who, ": load_state: key '", key, "' has ", v.size(),
            " values but the optimizer has ", expected, " param groups");
  std::vector<double> out;
  for (const nlohmann::json& x : v) {
    SEG_CHECK(x.is_number(), who, ": load_state: key '", key, "' must hold numbers, got ",
              x.dump());
    out.push_back(x.get<double>());
  }
  return out;
}

void check_type(const nlohmann::json& j, const char* who) {
  const nlohmann::json& t = require_key(j, who, "type");
  SEG_CHECK(t.is_string() && t.get<std::string>() == who, who, ": load_state: the state is for ",
            t.dump(), ", not ", who);
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LRScheduler (PyTorch's _LRScheduler)

LRScheduler::LRScheduler(Optimizer& optimizer) : optimizer_(&optimizer) {
  // group.setdefault('initial_lr', group['lr'])
  for (size_t g = 0; g < optimizer.num_param_groups(); ++g) {
    if (!optimizer.initial_lr(g)) optimizer.set_initial_lr(g, optimizer.lr(g));
    base_lrs_.push_back(*optimizer.initial_lr(g));
  }
}

void LRScheduler::initial_step() {
  step_count_ = 0;
  step();
}

void LRScheduler::apply(const std::vector<double>& lrs) {
  SEG_CHECK(lrs.size() == optimizer_->num_param_groups(), name(), ": the optimizer has ",
            optimizer_->num_param_groups(), " param groups but the scheduler was built for ",
            base_lrs_.size());
  for (size_t g = 0; g < lrs.size(); ++g) optimizer_->set_lr(g, lrs[g]);
  last_lr_ = optimizer_->lrs();
}

void LRScheduler::step() {
  SEG_CHECK(base_lrs_.size() == optimizer_->num_param_groups(), name(), ": the optimizer has ",
            optimizer_->num_param_groups(), " param groups but the scheduler was built for ",
            base_lrs_.size());
  step_count_ += 1;
  last_epoch_ += 1;
  apply(chainable_lr());
}

void LRScheduler::step_to(int64_t epoch) {
  step_count_ += 1;
  last_epoch_ = epoch;
  apply(closed_form_lr());
}

nlohmann::json LRScheduler::state() const {
  return nlohmann::json{{"type", name()},
                        {"last_epoch", last_epoch_},
                        {"step_count", step_count_},
                        {"base_lrs", base_lrs_},
                        {"last_lr", last_lr_}};
}

void LRScheduler::load_state(const nlohmann::json& state) {
  const char* who = name();
  check_type(state, who);
  const size_t groups = optimizer_->num_param_groups();
  const int64_t last_epoch = get_int(state, who, "last_epoch");
  const int64_t step_count = get_int(state, who, "step_count");
  std::vector<double> base_lrs = get_numbers(state, who, "base_lrs", groups);
  std::vector<double> last_lr = get_numbers(state, who, "last_lr", groups);
  for (double lr : last_lr) {
    SEG_CHECK(lr >= 0.0 && std::isfinite(lr), who, ": load_state: invalid lr ", lr,
              " in 'last_lr'");
  }
  last_epoch_ = last_epoch;
  step_count_ = step_count;
  base_lrs_ = std::move(base_lrs);
  for (size_t g = 0; g < groups; ++g) {
    optimizer_->set_initial_lr(g, base_lrs_[g]);
    optimizer_->set_lr(g, last_lr[g]);
  }
  last_lr_ = std::move(last_lr);
}

// ---------------------------------------------------------------------------------------------
// StepLR

StepLR::StepLR(Optimizer& optimizer, int64_t step_size, double gamma)
    : LRScheduler(optimizer), step_size_(step_size), gamma_(gamma) {
  SEG_CHECK(step_size >= 1, "StepLR: invalid step_size ", step_size, " (must be >= 1)");
  SEG_CHECK(gamma >= 0.0 && std::isfinite(gamma), "StepLR: invalid gamma ", gamma,
            " (must be >= 0 and finite)");
  initial_step();
}

std::vector<double> StepLR::chainable_lr() const {
  std::vector<double> lrs = optimizer_->lrs();
  if (last_epoch_ == 0 || last_epoch_ % step_size_ != 0) return lrs;
  for (double& lr : lrs) lr = lr * gamma_;
  return lrs;
}

std::vector<double> StepLR::closed_form_lr() const {
  std::vector<double> lrs;
  const double e = static_cast<double>(last_epoch_ / step_size_);  // Python's // (epoch >= 0)
  for (double base : base_lrs_) lrs.push_back(base * std::pow(gamma_, e));
  return lrs;
}

// ---------------------------------------------------------------------------------------------
// PolynomialLR

PolynomialLR::PolynomialLR(Optimizer& optimizer, int64_t total_iters, double power)
    : LRScheduler(optimizer), total_iters_(total_iters), power_(power) {
  SEG_CHECK(total_iters >= 1, "PolynomialLR: invalid total_iters ", total_iters, " (must be >= 1)");
  SEG_CHECK(power >= 0.0 && std::isfinite(power), "PolynomialLR: invalid power ", power,
            " (must be >= 0 and finite)");
  initial_step();
}

std::vector<double> PolynomialLR::chainable_lr() const {
  std::vector<double> lrs = optimizer_->lrs();
  if (last_epoch_ == 0 || last_epoch_ > total_iters_) return lrs;
  const double t = static_cast<double>(last_epoch_);
  const double total = static_cast<double>(total_iters_);
  const double decay = std::pow((1.0 - t / total) / (1.0 - (t - 1.0) / total), power_);
  for (double& lr : lrs) lr = lr * decay;
  return lrs;
}

std::vector<double> PolynomialLR::closed_form_lr() const {
  std::vector<double> lrs;
  const double t = static_cast<double>(std::min(total_iters_, last_epoch_));
  const double total = static_cast<double>(total_iters_);
  for (double base : base_lrs_) lrs.push_back(base * std::pow(1.0 - t / total, power_));
  return lrs;
}

// ---------------------------------------------------------------------------------------------
// CosineAnnealingLR

CosineAnnealingLR::CosineAnnealingLR(Optimizer& optimizer, int64_t t_max, double eta_min)
    : LRScheduler(optimizer), t_max_(t_max), eta_min_(eta_min) {
  SEG_CHECK(t_max >= 1, "CosineAnnealingLR: invalid T_max ", t_max, " (must be >= 1)");
  SEG_CHECK(eta_min >= 0.0 && std::isfinite(eta_min), "CosineAnnealingLR: invalid eta_min ",
            eta_min, " (must be >= 0 and finite)");
  initial_step();
}

std::vector<double> CosineAnnealingLR::chainable_lr() const {
  constexpr double pi = std::numbers::pi;
  std::vector<double> lrs = optimizer_->lrs();
  const double t = static_cast<double>(last_epoch_);
  const double tm = static_cast<double>(t_max_);
  if (last_epoch_ == 0) return lrs;
  if (step_count_ == 1 && last_epoch_ > 0) {
    for (size_t g = 0; g < lrs.size(); ++g) {
      lrs[g] = eta_min_ + (base_lrs_[g] - eta_min_) * (1.0 + std::cos(t * pi / tm)) / 2.0;
    }
    return lrs;
  }
  if ((last_epoch_ - 1 - t_max_) % (2 * t_max_) == 0) {
    for (size_t g = 0; g < lrs.size(); ++g) {
      lrs[g] = lrs[g] + (base_lrs_[g] - eta_min_) * (1.0 - std::cos(pi / tm)) / 2.0;
    }
    return lrs;
  }
  const double ratio = (1.0 + std::cos(pi * t / tm)) / (1.0 + std::cos(pi * (t - 1.0) / tm));
  for (double& lr : lrs) lr = ratio * (lr - eta_min_) + eta_min_;
  return lrs;
}

std::vector<double> CosineAnnealingLR::closed_form_lr() const {
  constexpr double pi = std::numbers::pi;
  std::vector<double> lrs;
  const double t = static_cast<double>(last_epoch_);
  const double tm = static_cast<double>(t_max_);
  for (double base : base_lrs_) {
    lrs.push_back(eta_min_ + (base - eta_min_) * (1.0 + std::cos(pi * t / tm)) / 2.0);
  }
  return lrs;
}

// ---------------------------------------------------------------------------------------------
// LinearLR

LinearLR::LinearLR(Optimizer& optimizer, double start_factor, double end_factor,
                   int64_t total_iters)
    : LRScheduler(optimizer),
      start_factor_(start_factor),
      end_factor_(end_factor),
      total_iters_(total_iters) {
  SEG_CHECK(start_factor > 0.0 && start_factor <= 1.0, "LinearLR: invalid start_factor ",
            start_factor, " (must be in (0, 1])");
  SEG_CHECK(end_factor >= 0.0 && end_factor <= 1.0, "LinearLR: invalid end_factor ", end_factor,
            " (must be in [0, 1])");
  SEG_CHECK(total_iters >= 1, "LinearLR: invalid total_iters ", total_iters, " (must be >= 1)");
  initial_step();
}

std::vector<double> LinearLR::chainable_lr() const {
  std::vector<double> lrs = optimizer_->lrs();
  if (last_epoch_ == 0) {
    for (double& lr : lrs) lr = lr * start_factor_;
    return lrs;
  }
  if (last_epoch_ > total_iters_) return lrs;
  const double diff = end_factor_ - start_factor_;
  const double factor = 1.0 + diff / (static_cast<double>(total_iters_) * start_factor_ +
                                      static_cast<double>(last_epoch_ - 1) * diff);
  for (double& lr : lrs) lr = lr * factor;
  return lrs;
}

std::vector<double> LinearLR::closed_form_lr() const {
  std::vector<double> lrs;
  const double t = static_cast<double>(std::min(total_iters_, last_epoch_));
  for (double base : base_lrs_) {
    lrs.push_back(base * (start_factor_ +
                          (end_factor_ - start_factor_) * t / static_cast<double>(total_iters_)));
  }
  return lrs;
}

// ---------------------------------------------------------------------------------------------
// SequentialLR

SequentialLR::SequentialLR(Optimizer& optimizer,
                           std::vector<std::unique_ptr<LRScheduler>> schedulers,
                           std::vector<int64_t> milestones)
    : LRScheduler(optimizer),
      schedulers_(std::move(schedulers)),
      milestones_(std::move(milestones)) {
  SEG_CHECK(!schedulers_.empty(), "SequentialLR: needs at least one scheduler");
  for (size_t i = 0; i < schedulers_.size(); ++i) {
    SEG_CHECK(schedulers_[i] != nullptr, "SequentialLR: scheduler ", i, " is null");
    SEG_CHECK(schedulers_[i]->optimizer_ == &optimizer, "SequentialLR: scheduler ", i, " (",
              schedulers_[i]->name(), ") belongs to a different optimizer");
    SEG_CHECK(dynamic_cast<SequentialLR*>(schedulers_[i].get()) == nullptr,
              "SequentialLR: scheduler ", i, " is itself a SequentialLR");
  }
  SEG_CHECK(milestones_.size() + 1 == schedulers_.size(), "SequentialLR: ", schedulers_.size(),
            " schedulers need ", schedulers_.size() - 1, " milestones, got ", milestones_.size());
  for (size_t i = 0; i < milestones_.size(); ++i) {
    SEG_CHECK(milestones_[i] > (i == 0 ? 0 : milestones_[i - 1]),
              "SequentialLR: milestones must be ", "positive and strictly increasing; milestone ",
              i, " is ", milestones_[i]);
  }
  // PyTorch's constructor: reset the lrs, undo the children's initial steps, then redo the first's.
  last_epoch_ = 0;
  for (size_t g = 0; g < optimizer.num_param_groups(); ++g) {
    optimizer.set_lr(g, *optimizer.initial_lr(g));
  }
  for (auto& s : schedulers_) s->last_epoch_ -= 1;
  schedulers_[0]->initial_step();
  last_lr_ = schedulers_[0]->last_lr();
}

void SequentialLR::step() {
  last_epoch_ += 1;
  // bisect_right: the number of milestones <= last_epoch
  const size_t idx = static_cast<size_t>(
      std::upper_bound(milestones_.begin(), milestones_.end(), last_epoch_) - milestones_.begin());
  LRScheduler& s = *schedulers_[idx];
  if (idx > 0 && milestones_[idx - 1] == last_epoch_) {
    s.step_to(0);
  } else {
    s.step();
  }
  last_lr_ = s.last_lr();
}

std::vector<double> SequentialLR::chainable_lr() const {
  SEG_ASSERT(false);  // step() is overridden; never called
  return {};
}

std::vector<double> SequentialLR::closed_form_lr() const {
  SEG_ASSERT(false);  // a SequentialLR is never a child (checked in the constructor)
  return {};
}

nlohmann::json SequentialLR::state() const {
  nlohmann::json children = nlohmann::json::array();
  for (const auto& s : schedulers_) children.push_back(s->state());
  return nlohmann::json{{"type", name()},
                        {"last_epoch", last_epoch_},
                        {"last_lr", last_lr_},
                        {"schedulers", children}};
}

void SequentialLR::load_state(const nlohmann::json& state) {
  const char* who = name();
  check_type(state, who);
  const int64_t last_epoch = get_int(state, who, "last_epoch");
  std::vector<double> last_lr = get_numbers(state, who, "last_lr", optimizer_->num_param_groups());
  const nlohmann::json& children = require_key(state, who, "schedulers");
  SEG_CHECK(children.is_array() && children.size() == schedulers_.size(), who,
            ": load_state: 'schedulers' must hold ", schedulers_.size(), " states, got ",
            children.is_array() ? std::to_string(children.size()) : children.dump());
  for (size_t i = 0; i < schedulers_.size(); ++i) schedulers_[i]->load_state(children[i]);
  last_epoch_ = last_epoch;
  for (size_t g = 0; g < last_lr.size(); ++g) optimizer_->set_lr(g, last_lr[g]);
  last_lr_ = std::move(last_lr);
}

// ---------------------------------------------------------------------------------------------
// ReduceLROnPlateau

PlateauMode parse_plateau_mode(const std::string& s) {
  if (s == "min") return PlateauMode::min;
  if (s == "max") return PlateauMode::max;
  SEG_CHECK(false, "ReduceLROnPlateau: mode '", s, "' is unknown (expected min or max)");
  return PlateauMode::min;
}

ThresholdMode parse_threshold_mode(const std::string& s) {
  if (s == "rel") return ThresholdMode::rel;
  if (s == "abs") return ThresholdMode::abs;
  SEG_CHECK(false, "ReduceLROnPlateau: threshold_mode '", s, "' is unknown (expected rel or abs)");
  return ThresholdMode::rel;
}

ReduceLROnPlateau::ReduceLROnPlateau(Optimizer& optimizer, const ReduceLROnPlateauOptions& options)
    : optimizer_(&optimizer), options_(options) {
  const char* who = "ReduceLROnPlateau";
  SEG_CHECK(options.factor >= 0.0 && options.factor < 1.0, who, ": invalid factor ", options.factor,
            " (must be in [0, 1))");
  SEG_CHECK(options.patience >= 0, who, ": invalid patience ", options.patience, " (must be >= 0)");
  SEG_CHECK(options.cooldown >= 0, who, ": invalid cooldown ", options.cooldown, " (must be >= 0)");
  SEG_CHECK(options.threshold >= 0.0 && std::isfinite(options.threshold), who,
            ": invalid threshold ", options.threshold, " (must be >= 0 and finite)");
  SEG_CHECK(options.eps >= 0.0, who, ": invalid eps ", options.eps, " (must be >= 0)");
  const size_t groups = optimizer.num_param_groups();
  if (options.min_lrs.empty()) {
    min_lrs_.assign(groups, 0.0);
  } else if (options.min_lrs.size() == 1) {
    min_lrs_.assign(groups, options.min_lrs[0]);
  } else {
    SEG_CHECK(options.min_lrs.size() == groups, who, ": expected ", groups, " min_lrs, got ",
              options.min_lrs.size());
    min_lrs_ = options.min_lrs;
  }
  for (double m : min_lrs_) {
    SEG_CHECK(m >= 0.0 && std::isfinite(m), who, ": invalid min_lr ", m, " (must be >= 0)");
  }
  // _reset(): best = the worse value of the mode
  best_ = options.mode == PlateauMode::min ? std::numeric_limits<double>::infinity()
                                           : -std::numeric_limits<double>::infinity();
  last_lr_ = optimizer.lrs();
}

bool ReduceLROnPlateau::is_better(double a, double best) const {
  if (options_.mode == PlateauMode::min && options_.threshold_mode == ThresholdMode::rel) {
    const double rel_epsilon = 1.0 - options_.threshold;
    return a < best * rel_epsilon;
  }
  if (options_.mode == PlateauMode::min) return a < best - options_.threshold;
  if (options_.threshold_mode == ThresholdMode::rel) {
    const double rel_epsilon = options_.threshold + 1.0;
    return a > best * rel_epsilon;
  }
  return a > best + options_.threshold;
}

void ReduceLROnPlateau::step(double metric) {
  SEG_CHECK(min_lrs_.size() == optimizer_->num_param_groups(),
            "ReduceLROnPlateau: the optimizer has ", optimizer_->num_param_groups(),
            " param groups but the scheduler was built for ", min_lrs_.size());
  last_epoch_ += 1;
  if (is_better(metric, best_)) {
    best_ = metric;
    num_bad_epochs_ = 0;
  } else {
    num_bad_epochs_ += 1;
  }
  if (in_cooldown()) {
    cooldown_counter_ -= 1;
    num_bad_epochs_ = 0;  // bad epochs in cooldown are ignored
  }
  if (num_bad_epochs_ > options_.patience) {
    for (size_t g = 0; g < min_lrs_.size(); ++g) {
      const double old_lr = optimizer_->lr(g);
      const double new_lr = std::max(old_lr * options_.factor, min_lrs_[g]);
      if (old_lr - new_lr > options_.eps) optimizer_->set_lr(g, new_lr);
    }
    cooldown_counter_ = options_.cooldown;
    num_bad_epochs_ = 0;
  }
  last_lr_ = optimizer_->lrs();
}

nlohmann::json ReduceLROnPlateau::state() const {
  return nlohmann::json{{"type", "ReduceLROnPlateau"},
                        {"last_epoch", last_epoch_},
                        {"best", number_json(best_)},
                        {"num_bad_epochs", num_bad_epochs_},
                        {"cooldown_counter", cooldown_counter_},
                        {"last_lr", last_lr_}};
}

void ReduceLROnPlateau::load_state(const nlohmann::json& state) {
  const char* who = "ReduceLROnPlateau";
  check_type(state, who);
  const int64_t last_epoch = get_int(state, who, "last_epoch");
  const double best = get_number(state, who, "best");
  const int64_t bad = get_int(state, who, "num_bad_epochs");
  const int64_t cooldown = get_int(state, who, "cooldown_counter");
  std::vector<double> last_lr = get_numbers(state, who, "last_lr", optimizer_->num_param_groups());
  for (double lr : last_lr) {
    SEG_CHECK(lr >= 0.0 && std::isfinite(lr), who, ": load_state: invalid lr ", lr,
              " in 'last_lr'");
  }
  last_epoch_ = last_epoch;
  best_ = best;
  num_bad_epochs_ = bad;
  cooldown_counter_ = cooldown;
  for (size_t g = 0; g < last_lr.size(); ++g) optimizer_->set_lr(g, last_lr[g]);
  last_lr_ = std::move(last_lr);
}

}  // namespace seg
