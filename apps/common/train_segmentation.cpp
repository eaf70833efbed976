#include "apps/common/train_segmentation.h"

#include <cmath>
#include <cstdio>
#include <functional>

#include "apps/common/cli.h"
#include "apps/common/device.h"
#include "apps/common/run.h"
#include "data/labels.h"
#include "engine/autograd.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/train_state.h"

namespace seg::app {

using nlohmann::json;

namespace {

constexpr int64_t kIgnoreIndex = 255;

int64_t labelled_pixels(const Tensor& labels) {
  int64_t n = 0;
  for (int32_t v : to_vector<int32_t>(labels)) n += v != kIgnoreIndex;
  return n;
}

json scores_json(const EvaluationResult& r) {
  json iou = json::array();
  for (double v : r.scores.iou) iou.push_back(std::isnan(v) ? json() : json(v));
  return {{"miou", std::isnan(r.scores.mean_iou) ? json() : json(r.scores.mean_iou)},
          {"pixel_accuracy",
           std::isnan(r.scores.pixel_accuracy) ? json() : json(r.scores.pixel_accuracy)},
          {"loss", std::isnan(r.loss) ? json() : json(r.loss)},
          {"iou", iou},
          {"images", r.images}};
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

}  // namespace

std::vector<std::string> segmentation_class_names(int64_t num_classes) {
  std::vector<std::string> names;
  if (num_classes != static_cast<int64_t>(data::kNumTrainClasses)) return names;
  for (std::string_view n : data::kTrainIdNames) names.emplace_back(n);
  return names;
}

EvaluationResult evaluate_segmentation(
    SegmentationModel& model, data::Loader& loader, Device device, int64_t num_classes,
    bool want_loss, const std::function<bool()>& stop,
    const std::function<void(const Tensor&, const data::Batch&)>& on_batch) {
  model.module().eval();
  NoGradGuard no_grad;
  EvaluationResult r;
  Tensor confusion = zeros({num_classes, num_classes}, DType::i64, device);
  double loss_sum = 0.0;
  int64_t pixels = 0;
  const bool upsample = want_loss || static_cast<bool>(on_batch);
  loader.start_epoch(0);
  while (std::optional<data::Batch> batch = loader.next()) {
    if (stop && stop()) {
      r.interrupted = true;
      break;
    }
    const Tensor images = batch->at("image").to(device);
    const Tensor labels = batch->at("label").to(device);
    const SegmentationModel::Output out = model.forward(images, upsample);
    accumulate_confusion(confusion, out.out, labels, kIgnoreIndex, model.align_corners());
    if (want_loss) {
      CrossEntropyOptions ce;
      ce.ignore_index = kIgnoreIndex;
      ce.reduction = Reduction::sum;
      loss_sum += cross_entropy(out.out, labels, ce).item();
      pixels += labelled_pixels(batch->at("label"));
    }
    if (on_batch) on_batch(out.out, *batch);
    r.images += images.size(0);
  }
  r.confusion = confusion.to(Device::cpu());
  r.scores = segmentation_scores(r.confusion);
  r.loss = pixels > 0 ? loss_sum / static_cast<double>(pixels) : std::nan("");
  return r;
}

namespace {

struct Trainer {
  SegmentationExperiment ex;
  RunDir& run;
  AppDevice& device;
  const std::filesystem::path root;

  int train(Config& config, bool resume) {
    std::unique_ptr<data::Dataset> train_set =
        make_segmentation_dataset(ex, root, ex.train_split, /*training=*/true);
    std::unique_ptr<data::Dataset> val_set =
        make_segmentation_dataset(ex, root, ex.val_split, /*training=*/false);
    data::LoaderOptions lo;
    lo.batch_size = ex.batch_size;
    lo.num_workers = ex.workers;
    lo.shuffle = true;
    lo.seed = ex.seed;
    lo.drop_last = train_set->size() >= ex.batch_size;  // a short final batch would skew BN
    data::Loader train_loader(*train_set, lo, device.batch_allocator());
    data::LoaderOptions vo = lo;
    vo.batch_size = ex.val_batch_size;
    vo.shuffle = false;
    vo.drop_last = false;
    data::Loader val_loader(*val_set, vo, device.batch_allocator());

    const int64_t per_epoch = train_loader.batches_per_epoch();
    SEG_CHECK(per_epoch > 0, "the training split has no full batch of ", ex.batch_size);
    const int64_t total = ex.iterations > 0 ? ex.iterations : ex.epochs * per_epoch;
    const int64_t epochs = (total + per_epoch - 1) / per_epoch;

    Generator init_gen(ex.seed);
    std::unique_ptr<SegmentationModel> model = make_segmentation_model(ex, init_gen);
    if (!resume && !ex.init_file.empty()) {
      const models::PretrainedReport report =
          models::load_pretrained(model->module(), ex.init_file, ex.init);
      std::printf("init: %s\n", report.str().c_str());
      run.log({{"type", "init"}, {"iteration", 0}, {"report", report.str()}});
    }
    model->module().to(device.device());
    std::unique_ptr<Optimizer> optimizer = make_optimizer(ex, *model);
    Schedule schedule = make_schedule(ex, *optimizer, total, epochs);
    TrainState state(model->module(), *optimizer);
    if (schedule.scheduler) state.set_scheduler(schedule.scheduler.get());
    if (schedule.plateau) state.set_scheduler(schedule.plateau.get());
    for (const auto& [name, gen] : model->generators()) state.add_generator(name, gen);

    double window_sum = 0.0;
    int64_t window_count = 0;
    bool validation_pending = false;
    if (resume) {
      state.load(run.checkpoint("last"));
      const json& w = state.extra.value("window", json::object());
      window_sum = w.value("sum", 0.0);
      window_count = w.value("count", int64_t{0});
      validation_pending = state.extra.value("validation_pending", false);
      run.truncate_metrics(state.progress.iteration);
      run.log({{"type", "resume"}, {"iteration", state.progress.iteration}});
      std::printf("resumed %s at iteration %lld (epoch %lld, batch %lld)\n",
                  run.checkpoint("last").string().c_str(),
                  static_cast<long long>(state.progress.iteration),
                  static_cast<long long>(state.progress.epoch + 1),
                  static_cast<long long>(state.progress.batch));
    } else {
      run.write_config(config.resolved());
    }
    TrainProgress& p = state.progress;

    if (!ex.description.empty()) std::printf("%s\n", ex.description.c_str());
    std::printf("%s on %s\n", model->describe().c_str(), device.describe().c_str());
    std::printf(
        "train: %lld images, %lld batches of %lld per epoch, %lld iterations (%lld epochs); "
        "val: %lld images; %s lr %s; run %s\n",
        static_cast<long long>(train_set->size()), static_cast<long long>(per_epoch),
        static_cast<long long>(ex.batch_size), static_cast<long long>(total),
        static_cast<long long>(epochs), static_cast<long long>(val_set->size()), optimizer->name(),
        lr_text(*optimizer).c_str(), run.path().string().c_str());
    std::fflush(stdout);

    StopSignals signals;
    ProgressMeter meter(total, p.iteration);
    const auto save_last = [&](bool pending) {
      state.extra["window"] = {{"sum", window_sum}, {"count", window_count}};
      state.extra["validation_pending"] = pending;
      state.save(run.checkpoint("last"));
    };
    const auto stopped = [&](const char* where) {
      save_last(validation_pending);
      std::printf("%s received %s: saved %s at iteration %lld; continue with --resume\n", where,
                  StopSignals::name(signals.received()), run.checkpoint("last").string().c_str(),
                  static_cast<long long>(p.iteration));
      std::fflush(stdout);
      return 128 + signals.received();
    };
    // Validation: false when a signal interrupted it (it is repeated on resume).
    const auto validate = [&]() {
      EvaluationResult r =
          evaluate_segmentation(*model, val_loader, device.device(), ex.num_classes,
                                /*want_loss=*/true, [&] { return signals.received() != 0; });
      if (r.interrupted) return false;
      const double score = r.scores.mean_iou;
      const bool best = !std::isnan(score) && score > p.best_score;
      if (best) {
        p.best_score = score;
        p.best_iteration = p.iteration;
      }
      json record = scores_json(r);
      record["type"] = "val";
      record["epoch"] = p.epoch;
      record["iteration"] = p.iteration;
      record["best"] = best;
      run.log(record);
      std::printf("val  iteration %lld: loss %.4f  mIoU %.4f  pixel acc %.4f%s\n",
                  static_cast<long long>(p.iteration), r.loss, r.scores.mean_iou,
                  r.scores.pixel_accuracy, best ? "  (best)" : "");
      std::fflush(stdout);
      if (schedule.plateau) {
        schedule.plateau->step(ex.plateau_metric == "val_loss" ? r.loss : r.scores.mean_iou);
      }
      validation_pending = false;
      if (best) {
        save_last(false);
        std::filesystem::copy_file(run.checkpoint("last"), run.checkpoint("best"),
                                   std::filesystem::copy_options::overwrite_existing);
      }
      return true;
    };

    if (validation_pending) {
      if (!validate()) return stopped("validation");
      save_last(false);
    }
    while (p.iteration < total) {
      train_loader.start_epoch(static_cast<uint64_t>(p.epoch), p.batch);
      while (p.iteration < total) {
        std::optional<data::Batch> batch = train_loader.next();
        if (!batch) break;
        model->module().train();
        const Tensor images = batch->at("image").to(device.device());
        const Tensor labels = batch->at("label").to(device.device());
        CrossEntropyOptions ce;
        ce.ignore_index = kIgnoreIndex;
        const SegmentationModel::Output out = model->forward(images, /*upsample=*/true);
        Tensor loss = cross_entropy(out.out, labels, ce);
        if (out.aux.defined()) loss = loss + ex.aux_weight * cross_entropy(out.aux, labels, ce);
        const double value = loss.item();
        if (!std::isfinite(value)) {
          std::string ids;
          for (const std::string& id : batch->ids) ids += (ids.empty() ? "" : ", ") + id;
          const std::filesystem::path last = run.checkpoint("last");
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
        if (schedule.scheduler && schedule.per_iteration) schedule.scheduler->step();
        meter.step(images.size(0));
        window_sum += value;
        ++window_count;
        if (p.iteration % ex.log_every == 0 || p.iteration == total) {
          const double mean = window_sum / static_cast<double>(window_count);
          run.log({{"type", "train"},
                   {"epoch", p.epoch},
                   {"iteration", p.iteration},
                   {"loss", mean},
                   {"lr", optimizer->lrs()},
                   {"images_per_second", meter.images_per_second()}});
          std::printf("epoch %lld/%lld  iter %lld/%lld  loss %.4f  lr %s  %.2f img/s  ETA %s\n",
                      static_cast<long long>(p.epoch + 1), static_cast<long long>(epochs),
                      static_cast<long long>(p.iteration), static_cast<long long>(total), mean,
                      lr_text(*optimizer).c_str(), meter.images_per_second(),
                      format_duration(meter.eta_seconds()).c_str());
          std::fflush(stdout);
          window_sum = 0.0;
          window_count = 0;
        }
        const bool epoch_end = p.batch == per_epoch;
        if (epoch_end) {
          ++p.epoch;
          p.batch = 0;
          if (schedule.scheduler && !schedule.per_iteration) schedule.scheduler->step();
        }
        const bool due =
            p.iteration == total ||
            (ex.val_every_iterations > 0 && p.iteration % ex.val_every_iterations == 0) ||
            (epoch_end && ex.val_every_epochs > 0 && p.epoch % ex.val_every_epochs == 0);
        if (due) {
          validation_pending = true;
          if (!validate()) return stopped("validation");
        }
        if (due || epoch_end || p.iteration == total ||
            (ex.checkpoint_every > 0 && p.iteration % ex.checkpoint_every == 0)) {
          save_last(false);
        }
        if (signals.received()) return stopped("training");
        if (epoch_end) break;
      }
    }
    std::printf("done: %lld iterations; best val mIoU %.4f at iteration %lld; checkpoints %s, %s\n",
                static_cast<long long>(p.iteration), p.best_score,
                static_cast<long long>(p.best_iteration), run.checkpoint("last").string().c_str(),
                run.checkpoint("best").string().c_str());
    return 0;
  }
};

int train_body(const char* program, const char* arch, int argc, const char* const* argv) {
  CommandLine cli(
      program, std::string("Trains a ") + arch + " segmentation model on Cityscapes (19 classes).");
  cli.option("config", "FILE", "experiment config (JSON); with --resume, the run's config.json")
      .option("data", "ROOT", "Cityscapes root (leftImg8bit/, gtFine/)", true)
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
  SegmentationExperiment ex = read_segmentation_experiment(config);
  config.check_all_read();
  SEG_CHECK(ex.arch == arch, program, " trains model.arch '", arch, "', but ", config.origin(),
            " names '", ex.arch, "'");
  if (resume && cli.given("config")) {
    Config saved = Config::load(run.config_path());
    read_segmentation_experiment(saved);
    check_same_config(saved.resolved(), config.resolved(), run.config_path().string());
  }
  AppDevice device(ex.device);
  Trainer trainer{ex, run, device, cli.value("data")};
  return trainer.train(config, resume);
}

}  // namespace

int train_segmentation_main(const char* program, const char* arch, int argc,
                            const char* const* argv) {
  return run_app(program, [&] { return train_body(program, arch, argc, argv); });
}

}  // namespace seg::app
