// TrainState: everything a training run needs to continue exactly where it stopped, saved and
// loaded as one checkpoint file.
//
// Design notes
// - One safetensors file: the model's state_dict under "model.", the optimiser's state_tensors()
//   under "optim." (moments, step counts, group lrs), and in the metadata, under "segtrain.state",
//   one JSON object holding the progress (epoch, next batch of that epoch, iteration, best score),
//   the scheduler's state(), every registered generator's (seed, calls) and the caller's extra JSON
//   (e.g. the resolved config). A file that holds only "model." tensors and no state (or a plain
//   state_dict) can still initialise a model: see load_model_weights().
// - The loader's position is (epoch, batch): the sample order and every augmentation are functions
//   of (seed, epoch, index), so a run resumed at batch b of epoch e sees the same batches as a run
//   that never stopped (data/loader.h: start_epoch(e, b)).
// - Saving goes through the atomic safetensors writer: a failure (a full disk, a kill) leaves the
//   previous checkpoint intact. Loading checks the file's format, the model (strict, every mismatch
//   in a table naming the tensors), the optimiser's entries and the generators before it changes
//   anything it can check; a scheduler or progress entry missing from the JSON is an error naming
//   the key and the file.
// - The objects registered are referred to, not owned: they must outlive the TrainState.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <utility>
#include <vector>

#include "engine/nn/module.h"
#include "engine/optim/optimizer.h"
#include "engine/optim/scheduler.h"
#include "engine/random.h"

namespace seg {

struct TrainProgress {
  int64_t epoch = 0;      // the epoch in progress (or the next one, when batch == 0)
  int64_t batch = 0;      // the next batch of that epoch
  int64_t iteration = 0;  // optimiser steps taken
  double best_score = -std::numeric_limits<double>::infinity();
  int64_t best_iteration = -1;
};

class TrainState {
 public:
  TrainState(nn::Module& model, Optimizer& optimizer);

  // At most one scheduler of either kind.
  void set_scheduler(LRScheduler* scheduler);
  void set_scheduler(ReduceLROnPlateau* scheduler);
  void add_generator(const std::string& name, Generator* generator);

  TrainProgress progress;
  nlohmann::json extra = nlohmann::json::object();

  void save(const std::filesystem::path& path) const;
  void load(const std::filesystem::path& path);

 private:
  nn::Module* model_;
  Optimizer* optimizer_;
  LRScheduler* scheduler_ = nullptr;
  ReduceLROnPlateau* plateau_ = nullptr;
  std::vector<std::pair<std::string, Generator*>> generators_;
};

// The metadata key of a TrainState checkpoint.
inline constexpr const char* kTrainStateKey = "segtrain.state";

// Loads model weights from a TrainState checkpoint (its "model." tensors) or from a plain
// state_dict file, strictly: any mismatch is an error with the table of mismatches, naming the
// file; nothing changes then.
nn::LoadReport load_model_weights(nn::Module& model, const std::filesystem::path& path);

}  // namespace seg
