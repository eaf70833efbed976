#include "engine/train_state.h"

#include <cmath>

#include "engine/error.h"
#include "engine/io/safetensors.h"

namespace seg {

using nlohmann::json;

namespace {

constexpr int kFormat = 1;
const std::string kModelPrefix = "model.";
const std::string kOptimPrefix = "optim.";

std::string file_where(const std::filesystem::path& path) {
  return "checkpoint " + path.string();
}

const json& member(const json& j, const std::string& key, const std::filesystem::path& path) {
  auto it = j.find(key);
  SEG_CHECK(it != j.end(), file_where(path), ": the training state lacks '", key, "'");
  return *it;
}

int64_t int_member(const json& j, const std::string& key, const std::filesystem::path& path) {
  const json& v = member(j, key, path);
  SEG_CHECK(v.is_number_integer(), file_where(path), ": '", key, "' must be an integer, got ",
            v.dump());
  return v.get<int64_t>();
}

// Tensors of `all` whose names start with `prefix`, with the prefix removed.
NamedTensors with_prefix(const NamedTensors& all, const std::string& prefix) {
  NamedTensors out;
  for (const auto& [name, t] : all) {
    if (name.compare(0, prefix.size(), prefix) == 0)
      out.emplace_back(name.substr(prefix.size()), t);
  }
  return out;
}

}  // namespace

TrainState::TrainState(nn::Module& model, Optimizer& optimizer)
    : model_(&model), optimizer_(&optimizer) {}

void TrainState::set_scheduler(LRScheduler* scheduler) {
  SEG_CHECK(plateau_ == nullptr, "TrainState: a ReduceLROnPlateau scheduler is already set");
  scheduler_ = scheduler;
}

void TrainState::set_scheduler(ReduceLROnPlateau* scheduler) {
  SEG_CHECK(scheduler_ == nullptr, "TrainState: an LRScheduler is already set");
  plateau_ = scheduler;
}

void TrainState::add_generator(const std::string& name, Generator* generator) {
  for (const auto& [n, g] : generators_) {
    SEG_CHECK(n != name, "TrainState: generator '", name, "' is registered twice");
  }
  generators_.emplace_back(name, generator);
}

void TrainState::save(const std::filesystem::path& path) const {
  NamedTensors tensors;
  for (const auto& [name, t] : model_->state_dict()) tensors.emplace_back(kModelPrefix + name, t);
  for (const auto& [name, t] : optimizer_->state_tensors()) {
    tensors.emplace_back(kOptimPrefix + name, t);
  }
  json state;
  state["format"] = kFormat;
  state["progress"] = {
      {"epoch", progress.epoch},
      {"batch", progress.batch},
      {"iteration", progress.iteration},
      // JSON has no infinity: no best score yet is null.
      {"best_score", std::isfinite(progress.best_score) ? json(progress.best_score) : json()},
      {"best_iteration", progress.best_iteration},
  };
  if (scheduler_)
    state["scheduler"] = {{"name", scheduler_->name()}, {"state", scheduler_->state()}};
  if (plateau_) state["scheduler"] = {{"name", "ReduceLROnPlateau"}, {"state", plateau_->state()}};
  json gens = json::object();
  for (const auto& [name, g] : generators_)
    gens[name] = {{"seed", g->seed()}, {"calls", g->calls()}};
  state["generators"] = gens;
  state["optimizer"] = optimizer_->name();
  state["extra"] = extra;
  save_safetensors(path, tensors, {{kTrainStateKey, state.dump()}});
}

void TrainState::load(const std::filesystem::path& path) {
  const SafetensorsFile file(path);
  auto meta = file.metadata().find(kTrainStateKey);
  SEG_CHECK(meta != file.metadata().end(), file_where(path), " holds no training state (no '",
            kTrainStateKey,
            "' metadata): it cannot resume a run (its weights can initialise a model)");
  json state;
  try {
    state = json::parse(meta->second);
  } catch (const json::exception& e) {
    throw Error(file_where(path) + ": the training state is not valid JSON: " + e.what());
  }
  SEG_CHECK(state.is_object(), file_where(path), ": the training state is not a JSON object");
  const int64_t format = int_member(state, "format", path);
  SEG_CHECK(format == kFormat, file_where(path), ": training-state format ", format,
            " is not supported (this build reads format ", kFormat, ")");

  // Check everything that can be checked before changing anything.
  const json& prog = member(state, "progress", path);
  TrainProgress p;
  p.epoch = int_member(prog, "epoch", path);
  p.batch = int_member(prog, "batch", path);
  p.iteration = int_member(prog, "iteration", path);
  p.best_iteration = int_member(prog, "best_iteration", path);
  const json& best = member(prog, "best_score", path);
  SEG_CHECK(best.is_null() || best.is_number(), file_where(path),
            ": 'best_score' must be a number or null");
  p.best_score = best.is_null() ? -std::numeric_limits<double>::infinity() : best.get<double>();
  SEG_CHECK(p.epoch >= 0 && p.batch >= 0 && p.iteration >= 0, file_where(path),
            ": negative progress (epoch ", p.epoch, ", batch ", p.batch, ", iteration ",
            p.iteration, ")");

  const json& optim_name = member(state, "optimizer", path);
  SEG_CHECK(optim_name == optimizer_->name(), file_where(path), ": it was saved with optimiser ",
            optim_name.dump(), ", this run uses ", optimizer_->name());

  const json* sched = state.contains("scheduler") ? &state["scheduler"] : nullptr;
  const char* want = scheduler_ ? scheduler_->name() : plateau_ ? "ReduceLROnPlateau" : nullptr;
  const std::string have = sched ? member(*sched, "name", path).get<std::string>() : "none";
  SEG_CHECK(have == (want ? want : "none"), file_where(path), ": it was saved with scheduler ",
            have, ", this run uses ", want ? want : "none");

  const json& gens = member(state, "generators", path);
  std::vector<std::pair<uint64_t, uint64_t>> gen_states;
  for (const auto& [name, g] : generators_) {
    SEG_CHECK(gens.contains(name), file_where(path), ": no state for generator '", name, "'");
    const json& e = gens[name];
    SEG_CHECK(e.contains("seed") && e.contains("calls") && e["seed"].is_number_unsigned() &&
                  e["calls"].is_number_unsigned(),
              file_where(path), ": generator '", name, "' needs unsigned 'seed' and 'calls'");
    gen_states.emplace_back(e["seed"].get<uint64_t>(), e["calls"].get<uint64_t>());
  }

  const NamedTensors all = file.read_all();
  for (const auto& [name, t] : all) {
    SEG_CHECK(name.compare(0, kModelPrefix.size(), kModelPrefix) == 0 ||
                  name.compare(0, kOptimPrefix.size(), kOptimPrefix) == 0,
              file_where(path), ": unexpected tensor '", name, "' (neither model. nor optim.)");
  }
  try {
    model_->load_state_dict(with_prefix(all, kModelPrefix), /*strict=*/true);
  } catch (const Error& e) {
    throw Error(file_where(path) + ": " + e.what());
  }
  try {
    optimizer_->load_state_tensors(with_prefix(all, kOptimPrefix));
  } catch (const Error& e) {
    throw Error(file_where(path) + ": " + e.what());
  }
  try {
    if (scheduler_) scheduler_->load_state(member(*sched, "state", path));
    if (plateau_) plateau_->load_state(member(*sched, "state", path));
  } catch (const Error& e) {
    throw Error(file_where(path) + ": scheduler: " + e.what());
  }
  for (size_t i = 0; i < generators_.size(); ++i) {
    generators_[i].second->set_state(gen_states[i].first, gen_states[i].second);
  }
  extra = state.contains("extra") ? state["extra"] : json::object();
  progress = p;
}

nn::LoadReport load_model_weights(nn::Module& model, const std::filesystem::path& path) {
  const SafetensorsFile file(path);
  NamedTensors all = file.read_all();
  const bool train_state = file.metadata().count(kTrainStateKey) > 0;
  NamedTensors dict = train_state ? with_prefix(all, kModelPrefix) : std::move(all);
  try {
    return model.load_state_dict(dict, /*strict=*/true);
  } catch (const Error& e) {
    throw Error(file_where(path) + ": " + e.what());
  }
}

}  // namespace seg
