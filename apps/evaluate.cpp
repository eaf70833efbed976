// evaluate: scores a segmentation checkpoint on a Cityscapes split as cityscapesScripts does.
//
//   evaluate --config FILE --checkpoint CKPT --data ROOT [--split val] [--out DIR]
//            [--set key=value ...]
//
// The config is the one the model was trained with (its model and data.val_resize keys are used;
// every key is checked). CKPT is a run's last or best checkpoint, or a plain state_dict file. The
// confusion matrix over trainIds (ignore 255) is counted by the fused kernel, from the network's
// own logits upsampled on the fly to the labels' size; the per-class IoU table, the pixel accuracy
// and, as the last line, "mIoU: X" (the mean over the classes whose IoU is defined) are printed.
// --out writes, per image, the prediction as a labelIds PNG (what cityscapesScripts evaluates) and
// as a colour PNG in the palette: DIR/<split>/<city>/<id>_pred_labelIds.png and _pred_color.png.
#include <cmath>
#include <cstdio>

#include "apps/common/cli.h"
#include "apps/common/device.h"
#include "apps/common/train_segmentation.h"
#include "data/predictions.h"
#include "engine/error.h"
#include "engine/ops.h"
#include "engine/train_state.h"

using namespace seg;
using namespace seg::app;

namespace {

int evaluate_main(int argc, const char* const* argv) {
  CommandLine cli("evaluate", "Scores a segmentation checkpoint on a Cityscapes split.");
  cli.option("config", "FILE", "the experiment config the model was trained with", true)
      .option("checkpoint", "CKPT", "a run's checkpoint or a state_dict (safetensors)", true)
      .option("data", "ROOT", "Cityscapes root", true)
      .option("split", "SPLIT", "train, val or test (default val)")
      .option("out", "DIR", "write the predictions as labelIds and colour PNGs")
      .list("set", "KEY=VALUE", "override a config key");
  cli.parse(argc, argv);
  Config config = load_config(cli);
  SegmentationExperiment ex = read_segmentation_experiment(config);
  config.check_all_read();
  const data::Split split = data::parse_split(cli.value_or_none("split").value_or("val"));

  AppDevice device(ex.train.device);
  Generator gen(ex.train.seed);
  std::unique_ptr<SegmentationModel> model = make_segmentation_model(ex, gen);
  const nn::LoadReport report = load_model_weights(model->module(), cli.value("checkpoint"));
  model->module().to(device.device());
  std::printf("%s on %s: loaded %zu tensors from %s\n", model->describe().c_str(),
              device.describe().c_str(), report.loaded.size(), cli.value("checkpoint").c_str());

  std::unique_ptr<data::Dataset> set =
      make_segmentation_dataset(ex, cli.value("data"), split, /*training=*/false);
  data::LoaderOptions lo;
  lo.batch_size = ex.train.val_batch_size;
  lo.num_workers = ex.train.workers;
  lo.shuffle = false;
  data::Loader loader(*set, lo, device.batch_allocator());

  std::function<void(const Tensor&, const data::Batch&)> write;
  std::filesystem::path out;
  if (auto dir = cli.value_or_none("out")) {
    out = std::filesystem::path(*dir) / data::split_name(split);
    write = [&](const Tensor& logits, const data::Batch& batch) {
      const Tensor prediction = argmax(logits, 1).to(Device::cpu());  // (n, h, w)
      for (int64_t i = 0; i < prediction.size(0); ++i) {
        const std::string& id = batch.ids[static_cast<size_t>(i)];
        const std::filesystem::path folder = out / id.substr(0, id.find('_'));
        std::filesystem::create_directories(folder);
        data::write_prediction_pngs(prediction.select(0, i), folder / (id + "_pred_labelIds.png"),
                                    folder / (id + "_pred_color.png"));
      }
    };
  }
  const EvaluationResult r = evaluate_segmentation(*model, loader, device.device(), ex.num_classes,
                                                   /*want_loss=*/false, {}, write);
  std::printf("%s split: %lld images\n", data::split_name(split), static_cast<long long>(r.images));
  std::fputs(scores_table(r.scores, segmentation_class_names(ex.num_classes)).c_str(), stdout);
  if (!out.empty()) std::printf("predictions: %s\n", out.string().c_str());
  std::printf("mIoU: %.4f\n", r.scores.mean_iou);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  return run_app("evaluate", [&] { return evaluate_main(argc, argv); });
}
