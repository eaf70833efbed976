// The training loop every training app shares (segmentation, the pretext tasks, future frames),
// and the config keys it reads: train.*, optim.*, schedule.*, init.* and the loader's data keys.
//
// Design notes
// - A task (TrainingTask) owns what differs: its datasets, its network, the loss of one batch and
//   the validation pass with its metrics. Everything else is here, once: the command line, the
//   run directory, the optimiser and its parameter groups, schedulers per iteration or epoch,
//   pretrained initialisation, the progress line, metrics.jsonl, best and last checkpoints,
//   --resume, SIGINT/SIGTERM and the NaN stop.
// - Per iteration: the task's loss, a finite-loss check before the update, backward, optimiser
//   step, the scheduler when it steps per iteration. Epoch ends step per-epoch schedulers;
//   validation runs every val_every_epochs epochs or val_every_iterations iterations and at the
//   end, steps ReduceLROnPlateau on the metric it names, and keeps the best checkpoint by the
//   task's score (higher or lower is better, as the task says).
// - Checkpoints (engine/train_state.h) hold the model, optimiser, scheduler, generators, the
//   loader's position (epoch, batch) and the partly filled logging window, so a resumed run logs
//   and computes exactly what an uninterrupted run does (bit for bit on the CPU). last is written
//   at each epoch end, each validation, every checkpoint_every iterations, on SIGINT/SIGTERM and
//   at the end; a signal during validation saves a checkpoint that repeats the validation on
//   resume.
// - A loss that is NaN or Inf stops the run before the update, with the iteration, the samples of
//   the batch and the last good checkpoint in the message; nothing is written then.
//
// Config keys read here (defaults from TrainingDefaults where noted):
//   data.workers               loader threads (2); data.skip_incomplete (false);
//                              data.limit_train / data.limit_val (the first N samples; 0: all)
//   train.device               "cpu" | "cuda" | "cuda:N"
//   train.epochs / train.iterations   length (iterations > 0 overrides epochs)
//   train.batch_size, train.val_batch_size, train.seed, train.log_every (iterations),
//   train.val_every_epochs, train.val_every_iterations (0: off), train.checkpoint_every
//   (iterations; 0: at each epoch end and validation only)
//   init.file                  pretrained weights (safetensors) for a new run: an ImageNet ResNet
//                              from scripts/export_torchvision_resnet.py or another run's
//                              checkpoint; init.mappings {file prefix: model prefix}, init.drop
//                              (file prefixes left out), init.allow_unexpected (false), with the
//                              task's defaults. Every tensor under the mapped model prefixes must
//                              load (models/init.h); the load report is printed and logged.
//   optim.name                 "sgd" | "rmsprop" | "adam" | "adamw", with lr, momentum,
//                              weight_decay, dampening, nesterov, alpha, eps, centered, beta1,
//                              beta2, amsgrad as PyTorch; optim.head_lr_mult (the head's group)
//   schedule.name              "none" | "poly" | "step" | "cosine" | "plateau";
//                              schedule.per "iteration" | "epoch" (poly, step, cosine);
//                              power; step_size, gamma; plateau: metric "val_loss" or
//                              "val_<score>" (the task's score, e.g. val_miou), factor,
//                              patience, threshold, cooldown, min_lr (stepped at each validation)
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "apps/common/config.h"
#include "data/datasets.h"
#include "data/loader.h"
#include "engine/nn/module.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/scheduler.h"
#include "models/init.h"

namespace seg::app {

struct OptimizerOptions {
  std::string name = "sgd";
  double lr = 0.01, momentum = 0.0, weight_decay = 0.0, dampening = 0.0;
  bool nesterov = false, centered = false, amsgrad = false;
  double alpha = 0.99, eps = 1e-8, beta1 = 0.9, beta2 = 0.999;
  double head_lr_mult = 1.0;
};

struct ScheduleOptions {
  std::string name = "none", per = "iteration";
  double power = 0.9;
  int64_t step_size = 1;
  double gamma = 0.1;
  std::string plateau_metric = "val_loss";  // "val_loss" or "val_<score>"
  ReduceLROnPlateauOptions plateau;
};

struct TrainingOptions {
  std::string description;  // free text (what the config reproduces), printed at the start
  // data loading
  int workers = 2;
  bool skip_incomplete = false;
  int64_t limit_train = 0, limit_val = 0;
  // training
  std::string device = "cpu";
  int64_t epochs = 1, iterations = 0;
  int64_t batch_size = 1, val_batch_size = 1;
  uint64_t seed = 0;
  int64_t log_every = 10;
  int64_t val_every_epochs = 1, val_every_iterations = 0;
  int64_t checkpoint_every = 0;
  // pretrained initialisation (new runs)
  std::string init_file;
  models::PretrainedOptions init;
  OptimizerOptions optim;
  ScheduleOptions schedule;
};

// What differs between tasks in the defaults of the keys above.
struct TrainingDefaults {
  int64_t batch_size = 1;
  std::string optimizer = "sgd";
  double lr = 0.01;
  // The task's validation score ("miou", "accuracy", "l1", ...): schedule.metric may name
  // "val_<score>"; higher_is_better sets the plateau's mode for it.
  std::string score = "miou";
  bool higher_is_better = true;
  // init.* defaults: {file prefix: model prefix} and dropped file prefixes.
  models::PretrainedOptions init = models::imagenet_backbone_options();
};

// Reads every key above from `config` (the caller calls config.check_all_read() after).
TrainingOptions read_training_options(Config& config, const TrainingDefaults& defaults);

// An optimiser over parameter groups: group 0 at optim.lr, group 1 (when present and not empty)
// at optim.lr * optim.head_lr_mult.
std::unique_ptr<Optimizer> make_optimizer(const OptimizerOptions& options,
                                          const std::vector<std::vector<Tensor>>& groups);

// The schedule: an LRScheduler (poly, step, cosine), a ReduceLROnPlateau, or neither.
// `iterations` and `epochs` are the whole run's; the scheduler's length is the one schedule.per
// names.
struct Schedule {
  std::unique_ptr<LRScheduler> scheduler;
  std::unique_ptr<ReduceLROnPlateau> plateau;
  bool per_iteration = true;
};
Schedule make_schedule(const ScheduleOptions& options, Optimizer& optimizer, int64_t iterations,
                       int64_t epochs);

// The image size keys under `prefix` (data.resize, data.val_resize): downsample, height, width,
// interp ("area" | "bilinear"); `defaults` for the keys not given.
data::ResizeOptions read_resize_options(Config& config, const std::string& prefix,
                                        const data::ResizeOptions& defaults);

// A figure for metrics.jsonl: the number, or null where it is NaN or infinite (JSON has neither).
nlohmann::json number_or_null(double value);

// Number of parameters (elements) of a module.
int64_t count_parameters(const nn::Module& module);

// The first `count` samples of a dataset (data.limit_train / limit_val).
std::unique_ptr<data::Dataset> limit_dataset(std::unique_ptr<data::Dataset> set, int64_t count);

// What a validation pass reports.
struct ValidationResult {
  double loss = 0.0;   // the task's loss over the validation set (NaN when undefined)
  double score = 0.0;  // the task's score (TrainingDefaults::score); NaN when undefined
  nlohmann::json record = nlohmann::json::object();  // every figure, for metrics.jsonl
  std::string summary;  // one line of figures for the console: "loss 0.41  mIoU 0.52 ..."
  int64_t samples = 0;
  bool interrupted = false;  // stopped early by a signal (the pass is repeated on resume)
};

struct ValidationContext {
  Device device;
  std::function<bool()> stop;          // true: stop between batches
  std::filesystem::path samples_dir;   // where a task writes sample outputs (run/samples/iter_N)
  int64_t iteration = 0;
};

class TrainingTask {
 public:
  virtual ~TrainingTask() = default;
  virtual const TrainingOptions& options() const = 0;
  // The validation score's name ("miou") and direction; the label of the console line ("mIoU").
  virtual std::string score_name() const = 0;
  virtual std::string score_label() const = 0;
  virtual bool higher_is_better() const = 0;
  // What one sample is, for the throughput ("image", "snippet": images/s, snippets/s).
  virtual std::string unit() const { return "image"; }

  // Builds the datasets under `root` and the network (on the CPU, initialised from `gen`).
  virtual void build(const std::filesystem::path& root, Generator& gen) = 0;
  virtual const data::Dataset& train_set() const = 0;
  virtual const data::Dataset& val_set() const = 0;
  virtual nn::Module& module() = 0;
  // Group 0 at the base lr, group 1 (if any) at lr * head_lr_mult.
  virtual std::vector<std::vector<Tensor>> parameter_groups() = 0;
  // Random streams the forward pass draws from (dropout), for checkpoints.
  virtual std::vector<std::pair<std::string, Generator*>> generators() { return {}; }
  virtual std::string describe() const = 0;

  // The loss of one training batch (the module is in training mode, gradients on).
  virtual Tensor loss(const data::Batch& batch, Device device) = 0;
  // One pass over `loader` in evaluation mode.
  virtual ValidationResult validate(data::Loader& loader, const ValidationContext& context) = 0;
};

// Reads the task's config (every key; the caller checks for unknown ones). Called for the
// command line's config and, on --resume with --config, for the run's saved one.
using TaskReader = std::function<std::unique_ptr<TrainingTask>(Config& config)>;

// The whole app: `program --config FILE --data ROOT --run DIR [--set k=v ...] [--resume]`.
int training_main(const char* program, const std::string& summary, int argc,
                  const char* const* argv, const TaskReader& read_task);

}  // namespace seg::app
