#include "apps/common/training.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <map>

#include "apps/common/cli.h"
#include "apps/common/device.h"
#include "apps/common/run.h"
#include "engine/error.h"
#include "engine/train_state.h"

namespace seg::app {

using nlohmann::json;

namespace {

// The first `count` samples of a dataset.
class SubsetDataset final : public data::Dataset {
 public:
  SubsetDataset(std::unique_ptr<data::Dataset> base, int64_t count)
      : base_(std::move(base)), count_(std::min(count, base_->size())) {}
  int64_t size() const override { return count_; }
  data::Sample get(int64_t index, uint64_t epoch) const override {
    return base_->get(index, epoch);
  }
  std::string describe(int64_t index) const override { return base_->describe(index); }
  const data::ScanReport& report() const override { return base_->report(); }

 private:
  std::unique_ptr<data::Dataset> base_;
  int64_t count_;
};

// An optimiser of type Opt over the groups, each group's options from options_of(g).
template <class Opt, class Options, class F>
std::unique_ptr<Optimizer> grouped(const std::vector<std::vector<Tensor>>& groups, F options_of) {
  std::vector<ParamGroupSpec<Options>> specs;
  for (size_t g = 0; g < groups.size(); ++g) specs.push_back({groups[g], options_of(g)});
  return std::make_unique<Opt>(specs);
}

OptimizerOptions read_optimizer(Config& c, const TrainingDefaults& d) {
  OptimizerOptions o;
  o.name = c.get_string("optim.name", d.optimizer, {"sgd", "rmsprop", "adam", "adamw"});
  o.lr = c.get_double("optim.lr", d.lr, 0.0, 100.0);
  o.weight_decay = c.get_double("optim.weight_decay", 0.0, 0.0, 10.0);
  o.eps = c.get_double("optim.eps", 1e-8, 0.0, 1.0);
  o.head_lr_mult = c.get_double("optim.head_lr_mult", 1.0, 0.0, 1e4);
  if (o.name == "sgd" || o.name == "rmsprop") o.momentum = c.get_double("optim.momentum", 0.0, 0.0, 1.0);
  if (o.name == "sgd") {
    o.dampening = c.get_double("optim.dampening", 0.0, 0.0, 1.0);
    o.nesterov = c.get_bool("optim.nesterov", false);
  } else if (o.name == "rmsprop") {
    o.alpha = c.get_double("optim.alpha", 0.99, 0.0, 1.0);
    o.centered = c.get_bool("optim.centered", false);
  } else {
    o.beta1 = c.get_double("optim.beta1", 0.9, 0.0, 1.0);
    o.beta2 = c.get_double("optim.beta2", 0.999, 0.0, 1.0);
    o.amsgrad = c.get_bool("optim.amsgrad", false);
  }
  return o;
}

ScheduleOptions read_schedule(Config& c, const TrainingDefaults& d) {
  ScheduleOptions s;
  s.name = c.get_string("schedule.name", "none", {"none", "poly", "step", "cosine", "plateau"});
  if (s.name == "poly" || s.name == "step" || s.name == "cosine") {
    s.per = c.get_string("schedule.per", s.name == "poly" ? "iteration" : "epoch",
                         {"iteration", "epoch"});
  }
  if (s.name == "poly") s.power = c.get_double("schedule.power", 0.9, 0.0, 100.0);
  if (s.name == "step") {
    s.step_size = c.get_int("schedule.step_size", 1, 1);
    s.gamma = c.get_double("schedule.gamma", 0.1, 0.0, 1.0);
  }
  if (s.name == "plateau") {
    const std::string score_metric = "val_" + d.score;
    s.plateau_metric = c.get_string("schedule.metric", "val_loss", {"val_loss", score_metric});
    const bool higher = s.plateau_metric == score_metric && d.higher_is_better;
    s.plateau.mode = higher ? PlateauMode::max : PlateauMode::min;
    s.plateau.factor = c.get_double("schedule.factor", 0.1, 0.0, 0.999999);
    s.plateau.patience = c.get_int("schedule.patience", 10, 0);
    s.plateau.threshold = c.get_double("schedule.threshold", 1e-4, 0.0, 1.0);
    s.plateau.cooldown = c.get_int("schedule.cooldown", 0, 0);
    s.plateau.min_lrs = {c.get_double("schedule.min_lr", 0.0, 0.0, 100.0)};
  }
  return s;
}

models::PretrainedOptions read_init(Config& c, const models::PretrainedOptions& d) {
  models::PretrainedOptions init;
  init.mappings.clear();
  std::map<std::string, std::string> fallback;
  for (const models::PrefixMapping& m : d.mappings) fallback[m.file_prefix] = m.module_prefix;
  for (const auto& [from, to] : c.get_string_map("init.mappings", fallback)) {
    init.mappings.push_back({from, to});
  }
  // Longest file prefixes first, so that a specific mapping wins over a general one.
  std::stable_sort(init.mappings.begin(), init.mappings.end(),
                   [](const models::PrefixMapping& a, const models::PrefixMapping& b) {
                     return a.file_prefix.size() > b.file_prefix.size();
                   });
  init.drop = c.get_string_list("init.drop", d.drop);
  init.allow_unexpected = c.get_bool("init.allow_unexpected", false);
  return init;
}

std::string lr_text(const Optimizer& optimizer) {
  std::string s;
  for (double lr : optimizer.lrs()) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%s%.3g", s.empty() ? "" : "/", lr);
    s += buf;
  }
  return s;
}

// The resolved configs of a resumed run and of the command line must agree.
void check_same_config(const json& saved, const json& given, const std::string& path) {
  if (saved == given) return;
  std::string diff;
  const json patch = json::diff(saved, given);
  for (const json& op : patch)
    diff += "\n  " + op["op"].get<std::string>() + " " + op["path"].get<std::string>();
  throw Error("--resume: the config differs from the run's " + path + ":" + diff +
              "\n(resume without --config to use the run's own)");
}

class Loop {
 public:
  Loop(TrainingTask& task, RunDir& run, AppDevice& device)
      : task_(task), o_(task.options()), run_(run), device_(device) {}

  int train(Config& config, bool resume, const std::filesystem::path& root) {
    Generator init_gen(o_.seed);
    task_.build(root, init_gen);
    const data::Dataset& train_set = task_.train_set();
    const data::Dataset& val_set = task_.val_set();
    data::LoaderOptions lo;
    lo.batch_size = o_.batch_size;
    lo.num_workers = o_.workers;
    lo.shuffle = true;
    lo.seed = o_.seed;
    lo.drop_last = train_set.size() >= o_.batch_size;  // a short final batch would skew BN
    data::Loader train_loader(train_set, lo, device_.batch_allocator());
    data::LoaderOptions vo = lo;
    vo.batch_size = o_.val_batch_size;
    vo.shuffle = false;
    vo.drop_last = false;
    data::Loader val_loader(val_set, vo, device_.batch_allocator());

    const int64_t per_epoch = train_loader.batches_per_epoch();
    SEG_CHECK(per_epoch > 0, "the training split has no full batch of ", o_.batch_size);
    total_ = o_.iterations > 0 ? o_.iterations : o_.epochs * per_epoch;
    const int64_t epochs = (total_ + per_epoch - 1) / per_epoch;

    nn::Module& module = task_.module();
    if (!resume && !o_.init_file.empty()) {
      const models::PretrainedReport report = models::load_pretrained(module, o_.init_file, o_.init);
      std::printf("init: %s\n", report.str().c_str());
      run_.log({{"type", "init"}, {"iteration", 0}, {"report", report.str()}});
    }
    module.to(device_.device());
    std::unique_ptr<Optimizer> optimizer = make_optimizer(o_.optim, task_.parameter_groups());
    schedule_ = make_schedule(o_.schedule, *optimizer, total_, epochs);
    TrainState state(module, *optimizer);
    if (schedule_.scheduler) state.set_scheduler(schedule_.scheduler.get());
    if (schedule_.plateau) state.set_scheduler(schedule_.plateau.get());
    for (const auto& [name, gen] : task_.generators()) state.add_generator(name, gen);
    state_ = &state;

    if (resume) {
      state.load(run_.checkpoint("last"));
      const json& w = state.extra.value("window", json::object());
      window_sum_ = w.value("sum", 0.0);
      window_count_ = w.value("count", int64_t{0});
      validation_pending_ = state.extra.value("validation_pending", false);
      run_.truncate_metrics(state.progress.iteration);
      run_.log({{"type", "resume"}, {"iteration", state.progress.iteration}});
      std::printf("resumed %s at iteration %lld (epoch %lld, batch %lld)\n",
                  run_.checkpoint("last").string().c_str(),
                  static_cast<long long>(state.progress.iteration),
                  static_cast<long long>(state.progress.epoch + 1),
                  static_cast<long long>(state.progress.batch));
    } else {
      run_.write_config(config.resolved());
    }
    TrainProgress& p = state.progress;

    if (!o_.description.empty()) std::printf("%s\n", o_.description.c_str());
    std::printf("%s on %s\n", task_.describe().c_str(), device_.describe().c_str());
    std::printf(
        "train: %lld samples, %lld batches of %lld per epoch, %lld iterations (%lld epochs); "
        "val: %lld samples; %s lr %s; run %s\n",
        static_cast<long long>(train_set.size()), static_cast<long long>(per_epoch),
        static_cast<long long>(o_.batch_size), static_cast<long long>(total_),
        static_cast<long long>(epochs), static_cast<long long>(val_set.size()), optimizer->name(),
        lr_text(*optimizer).c_str(), run_.path().string().c_str());
    std::fflush(stdout);

    StopSignals signals;
    signals_ = &signals;
    ProgressMeter meter(total_, p.iteration);
    const std::string rate_key = task_.unit() + "s_per_second";  // "images_per_second"

    if (validation_pending_) {
      if (!validate(val_loader)) return stopped("validation");
      save_last(false);
    }
    while (p.iteration < total_) {
      train_loader.start_epoch(static_cast<uint64_t>(p.epoch), p.batch);
      while (p.iteration < total_) {
        std::optional<data::Batch> batch = train_loader.next();
        if (!batch) break;
        module.train();
        Tensor loss = task_.loss(*batch, device_.device());
        const double value = loss.item();
        if (!std::isfinite(value)) {
          std::string ids;
          for (const std::string& id : batch->ids) ids += (ids.empty() ? "" : ", ") + id;
          const std::filesystem::path last = run_.checkpoint("last");
          throw Error("the loss is " + std::to_string(value) + " at iteration " +
                      std::to_string(p.iteration + 1) + " (epoch " + std::to_string(p.epoch + 1) +
                      ", samples " + ids + "); stopped before the update. " +
                      (std::filesystem::exists(last)
                           ? "The last good checkpoint is " + last.string() + "."
                           : std::string("No checkpoint was written yet.")) +
                      " Lower optim.lr or check the data.");
        }
        optimizer->zero_grad();
        loss.backward();
        optimizer->step();
        ++p.iteration;
        ++p.batch;
        if (schedule_.scheduler && schedule_.per_iteration) schedule_.scheduler->step();
        meter.step(static_cast<int64_t>(batch->ids.size()));
        window_sum_ += value;
        ++window_count_;
        if (p.iteration % o_.log_every == 0 || p.iteration == total_) {
          const double mean = window_sum_ / static_cast<double>(window_count_);
          run_.log({{"type", "train"},
                    {"epoch", p.epoch},
                    {"iteration", p.iteration},
                    {"loss", mean},
                    {"lr", optimizer->lrs()},
                    {rate_key, meter.images_per_second()}});
          std::printf("epoch %lld/%lld  iter %lld/%lld  loss %.4f  lr %s  %.2f %ss/s  ETA %s\n",
                      static_cast<long long>(p.epoch + 1), static_cast<long long>(epochs),
                      static_cast<long long>(p.iteration), static_cast<long long>(total_), mean,
                      lr_text(*optimizer).c_str(), meter.images_per_second(),
                      task_.unit().c_str(), format_duration(meter.eta_seconds()).c_str());
          std::fflush(stdout);
          window_sum_ = 0.0;
          window_count_ = 0;
        }
        const bool epoch_end = p.batch == per_epoch;
        if (epoch_end) {
          ++p.epoch;
          p.batch = 0;
          if (schedule_.scheduler && !schedule_.per_iteration) schedule_.scheduler->step();
        }
        const bool due =
            p.iteration == total_ ||
            (o_.val_every_iterations > 0 && p.iteration % o_.val_every_iterations == 0) ||
            (epoch_end && o_.val_every_epochs > 0 && p.epoch % o_.val_every_epochs == 0);
        if (due) {
          validation_pending_ = true;
          if (!validate(val_loader)) return stopped("validation");
        }
        if (due || epoch_end || p.iteration == total_ ||
            (o_.checkpoint_every > 0 && p.iteration % o_.checkpoint_every == 0)) {
          save_last(false);
        }
        if (signals.received()) return stopped("training");
        if (epoch_end) break;
      }
    }
    std::printf("done: %lld iterations; best val %s %.4f at iteration %lld; checkpoints %s, %s\n",
                static_cast<long long>(p.iteration), task_.score_label().c_str(), p.best_score,
                static_cast<long long>(p.best_iteration), run_.checkpoint("last").string().c_str(),
                run_.checkpoint("best").string().c_str());
    return 0;
  }

 private:
  void save_last(bool pending) {
    state_->extra["window"] = {{"sum", window_sum_}, {"count", window_count_}};
    state_->extra["validation_pending"] = pending;
    state_->save(run_.checkpoint("last"));
  }

  int stopped(const char* where) {
    save_last(validation_pending_);
    std::printf("%s received %s: saved %s at iteration %lld; continue with --resume\n", where,
                StopSignals::name(signals_->received()), run_.checkpoint("last").string().c_str(),
                static_cast<long long>(state_->progress.iteration));
    std::fflush(stdout);
    return 128 + signals_->received();
  }

  bool improves(double score) const {
    if (std::isnan(score)) return false;
    const TrainProgress& p = state_->progress;
    if (p.best_iteration < 0) return true;
    return task_.higher_is_better() ? score > p.best_score : score < p.best_score;
  }

  // False when a signal interrupted it (it is repeated on resume).
  bool validate(data::Loader& val_loader) {
    TrainProgress& p = state_->progress;
    ValidationContext context;
    context.device = device_.device();
    context.stop = [this] { return signals_->received() != 0; };
    context.samples_dir = run_.path() / "samples" / ("iter_" + std::to_string(p.iteration));
    context.iteration = p.iteration;
    ValidationResult r = task_.validate(val_loader, context);
    if (r.interrupted) return false;
    const bool best = improves(r.score);
    if (best) {
      p.best_score = r.score;
      p.best_iteration = p.iteration;
    }
    json record = r.record;
    record["type"] = "val";
    record["epoch"] = p.epoch;
    record["iteration"] = p.iteration;
    record["loss"] = number_or_null(r.loss);
    record[task_.score_name()] = number_or_null(r.score);
    record["best"] = best;
    record["samples"] = r.samples;
    run_.log(record);
    std::printf("val  iteration %lld: %s%s\n", static_cast<long long>(p.iteration),
                r.summary.c_str(), best ? "  (best)" : "");
    std::fflush(stdout);
    if (schedule_.plateau) {
      schedule_.plateau->step(o_.schedule.plateau_metric == "val_loss" ? r.loss : r.score);
    }
    validation_pending_ = false;
    if (best) {
      save_last(false);
      std::filesystem::copy_file(run_.checkpoint("last"), run_.checkpoint("best"),
                                 std::filesystem::copy_options::overwrite_existing);
    }
    return true;
  }

  TrainingTask& task_;
  const TrainingOptions& o_;
  RunDir& run_;
  AppDevice& device_;
  Schedule schedule_;
  TrainState* state_ = nullptr;
  StopSignals* signals_ = nullptr;
  int64_t total_ = 0;
  double window_sum_ = 0.0;
  int64_t window_count_ = 0;
  bool validation_pending_ = false;
};

int training_body(const char* program, const std::string& summary, int argc,
                  const char* const* argv, const TaskReader& read_task) {
  CommandLine cli(program, summary);
  cli.option("config", "FILE", "experiment config (JSON); with --resume, the run's config.json")
      .option("data", "ROOT", "Cityscapes root (leftImg8bit/, gtFine/, leftImg8bit_sequence/)",
              true)
      .option("run", "DIR", "run directory: config.json, metrics.jsonl, checkpoints", true)
      .list("set", "KEY=VALUE", "override a config key (dotted, e.g. optim.lr=0.01)")
      .flag("resume", "continue the run in --run from its last checkpoint");
  cli.parse(argc, argv);
  const bool resume = cli.is_set("resume");
  SEG_CHECK(resume || cli.given("config"), "option --config is required (unless --resume)");
  RunDir run(cli.value("run"), resume);
  Config config =
      resume && !cli.given("config") ? Config::load(run.config_path()) : load_config(cli);
  if (resume && !cli.given("config")) {
    for (const std::string& a : cli.values("set")) config.apply_override(a);
  }
  std::unique_ptr<TrainingTask> task = read_task(config);
  config.check_all_read();
  if (resume && cli.given("config")) {
    Config saved = Config::load(run.config_path());
    read_task(saved);
    check_same_config(saved.resolved(), config.resolved(), run.config_path().string());
  }
  AppDevice device(task->options().device);
  Loop loop(*task, run, device);
  return loop.train(config, resume, cli.value("data"));
}

}  // namespace

TrainingOptions read_training_options(Config& c, const TrainingDefaults& d) {
  TrainingOptions o;
  o.description = c.get_string("description", "");
  o.workers = static_cast<int>(c.get_int("data.workers", 2, 0, 256));
  o.skip_incomplete = c.get_bool("data.skip_incomplete", false);
  o.limit_train = c.get_int("data.limit_train", 0, 0);
  o.limit_val = c.get_int("data.limit_val", 0, 0);
  o.device = c.get_string("train.device", "cpu");
  parse_device(o.device);  // checked here, resolved by the app
  o.epochs = c.get_int("train.epochs", 1, 1);
  o.iterations = c.get_int("train.iterations", 0, 0);
  o.batch_size = c.get_int("train.batch_size", d.batch_size, 1, 4096);
  o.val_batch_size = c.get_int("train.val_batch_size", d.batch_size, 1, 4096);
  o.seed = static_cast<uint64_t>(c.get_int("train.seed", 0, 0));
  o.log_every = c.get_int("train.log_every", 10, 1);
  o.val_every_epochs = c.get_int("train.val_every_epochs", 1, 0);
  o.val_every_iterations = c.get_int("train.val_every_iterations", 0, 0);
  o.checkpoint_every = c.get_int("train.checkpoint_every", 0, 0);
  o.init_file = c.get_string("init.file", "");
  if (!o.init_file.empty()) o.init = read_init(c, d.init);
  o.optim = read_optimizer(c, d);
  o.schedule = read_schedule(c, d);
  return o;
}

std::unique_ptr<Optimizer> make_optimizer(const OptimizerOptions& o,
                                          const std::vector<std::vector<Tensor>>& all_groups) {
  std::vector<std::vector<Tensor>> groups;
  for (const std::vector<Tensor>& g : all_groups) {
    if (groups.empty() || !g.empty()) groups.push_back(g);
  }
  const auto lr_of = [&](size_t g) { return g == 0 ? o.lr : o.lr * o.head_lr_mult; };
  if (o.name == "sgd") {
    return grouped<SGD, SGDOptions>(groups, [&](size_t g) {
      return SGDOptions{.lr = lr_of(g),
                        .momentum = o.momentum,
                        .dampening = o.dampening,
                        .weight_decay = o.weight_decay,
                        .nesterov = o.nesterov};
    });
  }
  if (o.name == "rmsprop") {
    return grouped<RMSprop, RMSpropOptions>(groups, [&](size_t g) {
      return RMSpropOptions{.lr = lr_of(g),
                            .alpha = o.alpha,
                            .eps = o.eps,
                            .weight_decay = o.weight_decay,
                            .momentum = o.momentum,
                            .centered = o.centered};
    });
  }
  if (o.name == "adam") {
    return grouped<Adam, AdamOptions>(groups, [&](size_t g) {
      return AdamOptions{.lr = lr_of(g),
                         .beta1 = o.beta1,
                         .beta2 = o.beta2,
                         .eps = o.eps,
                         .weight_decay = o.weight_decay,
                         .amsgrad = o.amsgrad};
    });
  }
  SEG_CHECK(o.name == "adamw", "optim.name: unknown optimiser '", o.name, "'");
  return grouped<AdamW, AdamWOptions>(groups, [&](size_t g) {
    return AdamWOptions{.lr = lr_of(g),
                        .beta1 = o.beta1,
                        .beta2 = o.beta2,
                        .eps = o.eps,
                        .weight_decay = o.weight_decay,
                        .amsgrad = o.amsgrad};
  });
}

Schedule make_schedule(const ScheduleOptions& o, Optimizer& optimizer, int64_t iterations,
                       int64_t epochs) {
  Schedule s;
  s.per_iteration = o.per == "iteration";
  const int64_t total = s.per_iteration ? iterations : epochs;
  if (o.name == "poly") {
    s.scheduler = std::make_unique<PolynomialLR>(optimizer, total, o.power);
  } else if (o.name == "step") {
    s.scheduler = std::make_unique<StepLR>(optimizer, o.step_size, o.gamma);
  } else if (o.name == "cosine") {
    s.scheduler = std::make_unique<CosineAnnealingLR>(optimizer, total);
  } else if (o.name == "plateau") {
    s.plateau = std::make_unique<ReduceLROnPlateau>(optimizer, o.plateau);
  }
  return s;
}

data::ResizeOptions read_resize_options(Config& c, const std::string& prefix,
                                        const data::ResizeOptions& d) {
  data::ResizeOptions r;
  r.downsample = static_cast<int>(c.get_int(prefix + ".downsample", d.downsample, 1, 64));
  r.height = static_cast<int>(c.get_int(prefix + ".height", d.height, 0, 1 << 15));
  r.width = static_cast<int>(c.get_int(prefix + ".width", d.width, 0, 1 << 15));
  r.interp = data::parse_interp(c.get_string(prefix + ".interp",
                                             d.interp == data::Interp::area ? "area" : "bilinear",
                                             {"area", "bilinear"}));
  SEG_CHECK((r.height == 0) == (r.width == 0), "config: ", prefix,
            ".height and .width are given together (or neither)");
  SEG_CHECK(r.height == 0 || r.downsample == 1, "config: ", prefix,
            " takes downsample or height/width, not both");
  return r;
}

json number_or_null(double v) { return std::isfinite(v) ? json(v) : json(); }

int64_t count_parameters(const nn::Module& module) {
  int64_t n = 0;
  for (const Tensor& p : module.parameters()) n += p.numel();
  return n;
}

std::unique_ptr<data::Dataset> limit_dataset(std::unique_ptr<data::Dataset> set, int64_t count) {
  if (count <= 0) return set;
  return std::make_unique<SubsetDataset>(std::move(set), count);
}

int training_main(const char* program, const std::string& summary, int argc,
                  const char* const* argv, const TaskReader& read_task) {
  return run_app(program, [&] { return training_body(program, summary, argc, argv, read_task); });
}

}  // namespace seg::app
