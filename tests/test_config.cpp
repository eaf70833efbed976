// Experiment configs, the apps' command line, and the training-state checkpoint.
#include <doctest/doctest.h>
#include <sys/resource.h>

#include <csignal>
#include <fstream>
#include <nlohmann/json.hpp>

#include "apps/common/cli.h"
#include "apps/common/config.h"
#include "apps/common/segmentation.h"
#include "apps/common/video_tasks.h"
#include "engine/io/safetensors.h"
#include "engine/ops.h"
#include "engine/train_state.h"
#include "models/unet.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::app;
using namespace seg::test;

namespace {

std::string config_error(const std::string& text, const std::vector<std::string>& sets = {}) {
  return error_of([&] {
    Config c = Config::parse(text, "cfg.json");
    for (const std::string& s : sets) c.apply_override(s);
    read_segmentation_experiment(c);
    c.check_all_read();
  });
}

}  // namespace

TEST_CASE("config: typed getters, fallbacks recorded, overrides") {
  Config c =
      Config::parse(R"({"a": {"b": 3, "f": 2.5, "s": "x", "l": [1, 2]}, "t": true})", "c.json");
  c.apply_override("a.f=0.125");
  c.apply_override("new.deep.key=[1.5, 2]");
  c.apply_override("a.s=word");
  CHECK(c.get_int("a.b", 0) == 3);
  CHECK(c.get_double("a.f", 0) == 0.125);
  CHECK(c.get_string("a.s", "") == "word");
  CHECK(c.get_int_list("a.l", {}, 0, 10) == std::vector<int64_t>{1, 2});
  CHECK(c.get_bool("t", false));
  CHECK(c.get_double_list("new.deep.key", {}, 0, 10) == std::vector<double>{1.5, 2.0});
  CHECK(c.get_int("absent.x", 7) == 7);
  c.check_all_read();
  CHECK(c.resolved()["absent"]["x"] == 7);
  CHECK(c.resolved()["a"]["f"] == 0.125);
  // The resolved config is a config that reads back the same.
  Config again = Config::from_json(c.resolved(), "resolved");
  CHECK(again.get_int("absent.x", 0) == 7);
}

TEST_CASE("config: every kind of bad input names the key and where it came from") {
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "optim": {"lrr": 0.1}})"),
                 "key 'optim.lrr' (in cfg.json)"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "optim": {"lrr": 0.1}})"),
                 "known under 'optim': "));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}})", {"train.epoch=3"}),
                 "key 'train.epoch' (from --set train.epoch=3)"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "train": {"batch_size": "8"}})"),
                 "key 'train.batch_size' (in cfg.json) must be an integer, got \"8\""));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "train": {"batch_size": 2.5}})"),
                 "must be an integer, got 2.5"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "train": {"batch_size": 0}})"),
                 "must be in [1, 4096], got 0"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}})", {"optim.lr=fast"}),
                 "key 'optim.lr' (from --set optim.lr=fast) must be a number, got \"fast\""));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}})", {"optim.lr=-1"}),
                 "must be in [0, 100], got -1"));
  CHECK(contains(config_error(R"({"model": {"arch": "vgg"}})"),
                 "must be one of unet, deeplabv3, got 'vgg'"));
  CHECK(contains(config_error(R"({"data": {}})"), "lacks the required key 'model.arch'"));
  CHECK(contains(config_error(R"({"model": 3})"), "key 'model' (in cfg.json) must be an object"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "train": {"flip": 1}})"),
                 "unknown key"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "data": {"flip": 1}})"),
                 "must be true or false, got 1"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "data": {"crop": [5]}})"),
                 "must hold 2 values, got 1"));
  CHECK(contains(
      config_error(R"({"model": {"arch": "unet"}, "optim": {"name": "adam", "momentum": 0.9}})"),
      "'optim.momentum'"));
  CHECK(
      contains(config_error(R"({"model": {"arch": "unet"}, "train": {"device": "tpu"}})"), "tpu"));
  CHECK(contains(error_of([] { Config::parse("{\"a\": 1,}", "bad.json"); }),
                 "config bad.json is not valid JSON"));
  CHECK(contains(error_of([] { Config::parse("[1, 2]", "list.json"); }),
                 "config list.json must hold a JSON object, not a list"));
  CHECK(contains(error_of([] { Config::load("/nonexistent/x.json"); }),
                 "config file /nonexistent/x.json does not exist"));
  TempDir dir("config");
  CHECK(contains(error_of([&] { Config::load(dir.path); }), "is a directory"));
  CHECK(contains(error_of([] {
                   Config c = Config::parse("{}", "c");
                   c.apply_override("novalue");
                 }),
                 "expected key=value"));
  CHECK(contains(error_of([] {
                   Config c = Config::parse(R"({"a": 1})", "c");
                   c.apply_override("a.b=2");
                 }),
                 "'a' is not an object"));
  CHECK(contains(error_of([] { split_key("a..b"); }), "not a valid key"));
  // Found by fuzzing: a --set value that is neither JSON nor UTF-8 made the type error's own
  // message throw.
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}})", {"data.crop=[4\xff"
                                                                 "3,4]"}),
                 "not valid UTF-8"));
  // And a number beyond a double's range, in the file or in a --set.
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}, "optim": {"lr": 1e400}})"),
                 "is not valid JSON"));
  CHECK(contains(config_error(R"({"model": {"arch": "unet"}})", {"optim.lr=1e400"}),
                 "--set optim.lr=1e400: "));
}

TEST_CASE("config: every shipped config reads completely") {
  const std::filesystem::path dir = std::filesystem::path(SEG_SOURCE_DIR) / "configs";
  int checked = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".json" || entry.path().filename() == "train_shapes.json")
      continue;
    CAPTURE(entry.path().string());
    Config fresh = Config::load(entry.path());
    // The app that reads it: segmentation configs name model.arch, the video tasks' their task.
    const std::string name = entry.path().stem().string();
    const auto names = [&](const char* task) { return name.find(task) != std::string::npos; };
    bool segmentation = false;
    {
      std::ifstream in(entry.path());
      const nlohmann::json j = nlohmann::json::parse(in);
      segmentation = j.contains("model") && j["model"].contains("arch");
    }
    if (segmentation) {
      CHECK_NOTHROW(read_segmentation_experiment(fresh));
    } else if (names("triplet")) {
      CHECK_NOTHROW(read_triplet_task(fresh));
    } else if (names("order")) {
      CHECK_NOTHROW(read_order_task(fresh));
    } else if (names("colorize")) {
      CHECK_NOTHROW(read_colorize_task(fresh));
    } else if (names("future")) {
      CHECK_NOTHROW(read_future_task(fresh));
    } else {
      FAIL("no app reads this config: name its task (triplet, order, colorize, future) or set "
           "model.arch");
    }
    CHECK_NOTHROW(fresh.check_all_read());
    ++checked;
  }
  CHECK(checked >= 19);
}

TEST_CASE("command line: options, lists, flags and their errors") {
  const auto make = [] {
    CommandLine cli("app", "An app.");
    cli.option("config", "FILE", "the config", true)
        .list("set", "K=V", "override")
        .flag("resume", "go on");
    return cli;
  };
  {
    CommandLine cli = make();
    const char* argv[] = {"app", "--config", "a.json", "--set", "x=1", "--set=y=2", "--resume"};
    cli.parse(7, argv);
    CHECK(cli.value("config") == "a.json");
    CHECK(cli.values("set") == std::vector<std::string>{"x=1", "y=2"});
    CHECK(cli.is_set("resume"));
  }
  const auto parse_error = [&](std::vector<const char*> args) {
    CommandLine cli = make();
    args.insert(args.begin(), "app");
    return error_of([&] { cli.parse(static_cast<int>(args.size()), args.data()); });
  };
  CHECK(contains(parse_error({"--config", "a", "--bogus", "1"}), "unknown option --bogus"));
  CHECK(contains(parse_error({"--config"}), "option --config needs a value"));
  CHECK(contains(parse_error({}), "option --config is required"));
  CHECK(contains(parse_error({"--config", "a", "--config", "b"}), "given twice"));
  CHECK(contains(parse_error({"--config", "a", "stray"}), "unexpected argument 'stray'"));
  CHECK(contains(parse_error({"--config", "a", "--resume=1"}), "takes no value"));
  CHECK(contains(make().usage(), "--set K=V ..."));
}

namespace {

struct Setup {
  Generator gen{3};
  models::UNet net{{3, 5, 4, 2, false, true}, gen};
  SGD opt{net.parameters(), SGDOptions{.lr = 0.1, .momentum = 0.9}};
  PolynomialLR poly{opt, 10, 0.9};
  Generator dropout{11};
  TrainState state{net, opt};
  Setup() {
    state.set_scheduler(&poly);
    state.add_generator("dropout", &dropout);
  }
  // One training step on fixed data.
  double step() {
    Generator data(5);
    Tensor x = randn({2, 3, 16, 16}, data);
    Tensor y = cross_entropy(net.forward(x), zeros({2, 16, 16}, DType::i32));
    opt.zero_grad();
    y.backward();
    opt.step();
    poly.step();
    dropout.next_call();
    return y.item();
  }
};

}  // namespace

TEST_CASE("train state: a checkpoint resumes the same trajectory") {
  TempDir dir("state");
  Setup a;
  a.step();
  a.step();
  a.state.progress = {1, 3, 2, 0.5, 2};
  a.state.extra = {{"note", "x"}};
  a.state.save(dir / "ckpt.safetensors");
  const double a3 = a.step(), a4 = a.step();

  Setup b;  // different weights until loaded? same seed: make them differ first
  b.step();
  b.state.load(dir / "ckpt.safetensors");
  CHECK(b.state.progress.epoch == 1);
  CHECK(b.state.progress.batch == 3);
  CHECK(b.state.progress.iteration == 2);
  CHECK(b.state.progress.best_score == 0.5);
  CHECK(b.state.extra["note"] == "x");
  CHECK(b.dropout.calls() == 2);
  CHECK(b.poly.last_epoch() == 2);
  CHECK(b.step() == a3);
  CHECK(b.step() == a4);

  // The weights alone initialise another model.
  Generator g(99);
  models::UNet other({3, 5, 4, 2, false, true}, g);
  const nn::LoadReport r = load_model_weights(other, dir / "ckpt.safetensors");
  CHECK(r.ok());
}

TEST_CASE("train state: bad checkpoints are errors naming the file and the tensors") {
  TempDir dir("state_bad");
  Setup a;
  a.state.save(dir / "ckpt.safetensors");
  // A model of another width: every mismatch in a table.
  {
    Generator g(1);
    models::UNet wide({3, 5, 6, 2, false, true}, g);
    const std::string e = error_of([&] { load_model_weights(wide, dir / "ckpt.safetensors"); });
    CHECK(contains(e, "checkpoint " + (dir / "ckpt.safetensors").string()));
    CHECK(contains(e, "inc.double_conv.0.weight"));
    CHECK(contains(e, "(6,3,3,3)"));
    CHECK(contains(e, "shape differs"));
  }
  // Truncated at several lengths.
  const std::vector<unsigned char> bytes = file_bytes(dir / "ckpt.safetensors");
  for (size_t len : {size_t{0}, size_t{7}, size_t{100}, bytes.size() / 2, bytes.size() - 1}) {
    CAPTURE(len);
    write_bytes(dir / "cut.safetensors", {bytes.begin(), bytes.begin() + static_cast<long>(len)});
    Setup b;
    CHECK(contains(error_of([&] { b.state.load(dir / "cut.safetensors"); }),
                   (dir / "cut.safetensors").string()));
  }
  // A plain state_dict is no training state (but initialises a model).
  a.net.save_state_dict(dir / "weights.safetensors");
  {
    Setup b;
    CHECK(contains(error_of([&] { b.state.load(dir / "weights.safetensors"); }),
                   "holds no training state"));
    CHECK(load_model_weights(b.net, dir / "weights.safetensors").ok());
  }
  // Missing file.
  {
    Setup b;
    CHECK(contains(error_of([&] { b.state.load(dir / "absent.safetensors"); }),
                   "absent.safetensors"));
  }
  // Another optimiser.
  {
    Generator g(3);
    models::UNet net({3, 5, 4, 2, false, true}, g);
    Adam adam(net.parameters(), AdamOptions{});
    TrainState s(net, adam);
    CHECK(contains(error_of([&] { s.load(dir / "ckpt.safetensors"); }), "optimiser \"SGD\""));
  }
}

TEST_CASE(
    "train state: a write that fails (file-size limit, as a full disk) keeps the last checkpoint") {
  TempDir dir("state_full");
  Setup a;
  a.state.progress.iteration = 1;
  a.state.save(dir / "last.safetensors");
  const std::vector<unsigned char> before = file_bytes(dir / "last.safetensors");
  a.step();
  a.state.progress.iteration = 2;
  // RLIMIT_FSIZE makes writes past the limit fail (EFBIG) as ENOSPC would; SIGXFSZ ignored.
  struct rlimit old {};
  REQUIRE(getrlimit(RLIMIT_FSIZE, &old) == 0);
  auto previous = std::signal(SIGXFSZ, SIG_IGN);
  struct rlimit small = old;
  small.rlim_cur = 4096;
  REQUIRE(setrlimit(RLIMIT_FSIZE, &small) == 0);
  const std::string e = error_of([&] { a.state.save(dir / "last.safetensors"); });
  setrlimit(RLIMIT_FSIZE, &old);
  std::signal(SIGXFSZ, previous);
  CHECK(contains(e, "failed"));
  CHECK(contains(e, "the previous file, if any, is unchanged"));
  CHECK(file_bytes(dir / "last.safetensors") == before);
  int leftovers = 0;
  for (const auto& entry : std::filesystem::directory_iterator(dir.path))
    leftovers += entry.path().filename() != "last.safetensors";
  CHECK(leftovers == 0);
  Setup b;
  b.state.load(dir / "last.safetensors");
  CHECK(b.state.progress.iteration == 1);
}
