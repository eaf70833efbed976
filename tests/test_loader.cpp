// The threaded loader: sample order (shuffle, DistributedSampler-style shards), batching and
// drop_last, in-order delivery with workers finishing out of order, determinism with 0, 1 and 3
// workers, the prefetch bound, batch memory from a given allocator, errors from workers rethrown
// with the file name, restarting and shutting down mid-epoch; then the real datasets through it on
// a small Cityscapes tree.
#include <doctest/doctest.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <filesystem>
#include <set>
#include <thread>

#include "data/datasets.h"
#include "data/loader.h"
#include "data/png.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::test;
using namespace seg::data;
namespace fs = std::filesystem;

namespace {

// A dataset of small tensors that can sleep (so workers finish out of order) and fail at one index.
class ToyDataset final : public Dataset {
 public:
  ToyDataset(int64_t n, uint64_t seed, int64_t fail_at = -1, int max_sleep_ms = 0)
      : n_(n), seed_(seed), fail_at_(fail_at), max_sleep_ms_(max_sleep_ms) {}
  int64_t size() const override { return n_; }
  Sample get(int64_t index, uint64_t epoch) const override {
    calls_++;
    SampleRandom rng(seed_, epoch, static_cast<uint64_t>(index));
    const float u = rng.uniform();
    if (max_sleep_ms_ > 0)
      std::this_thread::sleep_for(
          std::chrono::microseconds(static_cast<int>(u * 1000.0f * max_sleep_ms_)));
    if (index == fail_at_)
      throw Error(describe(index) + ": corrupt or truncated PNG (bad zlib header)");
    Sample s;
    s.id = "toy_" + std::to_string(index);
    s.tensors["x"] = from_vector(
        std::vector<float>{static_cast<float>(index), static_cast<float>(epoch), u}, {3});
    s.tensors["y"] = full({}, static_cast<double>(index), DType::i32);
    return s;
  }
  std::string describe(int64_t index) const override {
    return "toy/" + std::to_string(index) + ".png";
  }
  const ScanReport& report() const override { return report_; }
  int64_t calls() const { return calls_.load(); }

 private:
  int64_t n_;
  uint64_t seed_;
  int64_t fail_at_;
  int max_sleep_ms_;
  ScanReport report_;
  mutable std::atomic<int64_t> calls_{0};
};

// Host memory that counts its allocations (stands in for a CUDA context's pinned allocator).
class CountingAllocator final : public Allocator {
 public:
  explicit CountingAllocator(Device device = Device::cpu()) : device_(device) {}
  void* allocate(size_t nbytes) override {
    allocations++;
    return cpu_allocator().allocate(nbytes);
  }
  void deallocate(void* ptr, size_t nbytes) override { cpu_allocator().deallocate(ptr, nbytes); }
  Device device() const override { return device_; }
  AllocatorStats stats() const override { return {}; }
  void empty_cache() override {}
  std::atomic<int64_t> allocations{0};

 private:
  Device device_;
};

LoaderOptions opts(int64_t batch, int workers, bool shuffle = true, uint64_t seed = 1) {
  LoaderOptions o;
  o.batch_size = batch;
  o.num_workers = workers;
  o.shuffle = shuffle;
  o.seed = seed;
  return o;
}

std::vector<Batch> all_batches(Loader& loader, uint64_t epoch) {
  std::vector<Batch> out;
  for (Batch& b : loader.epoch(epoch)) out.push_back(std::move(b));
  return out;
}

}  // namespace

TEST_CASE("epoch order: a permutation from (seed, epoch); shards as DistributedSampler") {
  LoaderOptions o = opts(1, 0, false);
  std::vector<int64_t> plain = epoch_order(10, o, 0);
  CHECK(plain == std::vector<int64_t>{0, 1, 2, 3, 4, 5, 6, 7, 8, 9});
  o.shuffle = true;
  const std::vector<int64_t> a = epoch_order(100, o, 0);
  std::vector<int64_t> sorted = a;
  std::sort(sorted.begin(), sorted.end());
  for (int64_t i = 0; i < 100; ++i) REQUIRE(sorted[static_cast<size_t>(i)] == i);
  CHECK(a == epoch_order(100, o, 0));
  CHECK(a != epoch_order(100, o, 1));
  o.seed = 2;
  CHECK(a != epoch_order(100, o, 0));

  // 10 samples over 3 ranks, padded: 12 = the permutation and its first 2 again, rank r takes r::3.
  o.world_size = 3;
  std::vector<int64_t> full_order = epoch_order(10, opts(1, 0, true, 2), 5);
  full_order.push_back(full_order[0]);
  full_order.push_back(full_order[1]);
  std::multiset<int64_t> seen;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    const std::vector<int64_t> mine = epoch_order(10, o, 5);
    REQUIRE(mine.size() == 4);
    for (size_t k = 0; k < 4; ++k) CHECK(mine[k] == full_order[static_cast<size_t>(r) + 3 * k]);
    seen.insert(mine.begin(), mine.end());
  }
  CHECK(seen.size() == 12);
  CHECK(std::set<int64_t>(seen.begin(), seen.end()).size() == 10);
  // Dropping the tail: 3 each, disjoint.
  o.shard_drop_tail = true;
  std::set<int64_t> disjoint;
  for (int r = 0; r < 3; ++r) {
    o.rank = r;
    const std::vector<int64_t> mine = epoch_order(10, o, 5);
    REQUIRE(mine.size() == 3);
    disjoint.insert(mine.begin(), mine.end());
  }
  CHECK(disjoint.size() == 9);
  // Fewer samples than ranks, padded: every rank still gets one.
  o.shard_drop_tail = false;
  o.world_size = 4;
  o.rank = 3;
  CHECK(epoch_order(2, o, 0).size() == 1);
  o.rank = 4;
  CHECK(contains(error_of([&] { epoch_order(10, o, 0); }), "rank 4 outside a world of size 4"));
}

TEST_CASE("batches: stacked along dim 0, drop_last, the range-for and next() APIs") {
  ToyDataset ds(10, 3);
  Loader loader(ds, opts(4, 2, false));
  CHECK(loader.batches_per_epoch() == 3);
  const std::vector<Batch> batches = all_batches(loader, 0);
  REQUIRE(batches.size() == 3);
  CHECK(batches[0].at("x").sizes() == Shape{4, 3});
  CHECK(batches[0].at("y").sizes() == Shape{4});
  CHECK(batches[2].at("x").sizes() == Shape{2, 3});
  CHECK(to_vector<int32_t>(batches[2].at("y")) == std::vector<int32_t>{8, 9});
  CHECK(batches[1].samples == std::vector<int64_t>{4, 5, 6, 7});
  CHECK(batches[1].ids[0] == "toy_4");
  CHECK(batches[1].index == 1);
  const std::vector<float> x = to_vector<float>(batches[1].at("x"));
  const Sample s5 = ds.get(5, 0);
  CHECK(x[3] == 5.0f);
  CHECK(x[5] == to_vector<float>(s5.at("x"))[2]);
  CHECK(contains(error_of([&] { (void)batches[0].at("z"); }), "no tensor 'z' (it has: x, y)"));

  LoaderOptions o = opts(4, 2, false);
  o.drop_last = true;
  Loader dropping(ds, o);
  CHECK(dropping.batches_per_epoch() == 2);
  CHECK(all_batches(dropping, 0).size() == 2);

  // next(): nullopt at the end, and again after.
  Loader manual(ds, opts(6, 1, false));
  CHECK(contains(error_of([&] { manual.next(); }), "before start_epoch"));
  manual.start_epoch(0);
  CHECK(manual.next().has_value());
  CHECK(manual.next().has_value());
  CHECK_FALSE(manual.next().has_value());
  CHECK_FALSE(manual.next().has_value());
}

TEST_CASE("the same batches, in order, with 0, 1 and 3 workers finishing out of order") {
  ToyDataset ds(23, 9, -1, 3);  // up to 3 ms per sample, from the sample's own random stream
  std::vector<std::vector<float>> reference;
  for (int workers : {0, 1, 3}) {
    Loader loader(ds, opts(3, workers, true, 42));
    for (uint64_t epoch : {0u, 1u}) {
      const std::vector<Batch> batches = all_batches(loader, epoch);
      REQUIRE(batches.size() == 8);
      std::set<int64_t> samples;
      for (size_t b = 0; b < batches.size(); ++b) {
        CHECK(batches[b].index == static_cast<int64_t>(b));
        CHECK(batches[b].epoch == epoch);
        samples.insert(batches[b].samples.begin(), batches[b].samples.end());
        const std::vector<float> x = to_vector<float>(batches[b].at("x"));
        if (workers == 0) {
          reference.push_back(x);
        } else {
          CHECK(x == reference[epoch * 8 + b]);
        }
      }
      CHECK(samples.size() == 23);
    }
  }
  // The two epochs differ in order.
  CHECK(reference[0] != reference[8]);
}

TEST_CASE("sharding through the loader: equal, disjoint shares") {
  ToyDataset ds(20, 1);
  std::set<int64_t> seen;
  for (int rank = 0; rank < 4; ++rank) {
    LoaderOptions o = opts(2, 2, true, 7);
    o.rank = rank;
    o.world_size = 4;
    Loader loader(ds, o);
    CHECK(loader.samples_per_epoch() == 5);
    CHECK(loader.batches_per_epoch() == 3);
    for (const Batch& b : all_batches(loader, 3)) seen.insert(b.samples.begin(), b.samples.end());
  }
  CHECK(seen.size() == 20);
}

TEST_CASE("a worker's exception reaches the consumer with the file name") {
  ToyDataset ds(12, 1, 7);
  for (int workers : {0, 3}) {
    Loader loader(ds, opts(2, workers, false));
    loader.start_epoch(0);
    for (int b = 0; b < 3; ++b) REQUIRE(loader.next().has_value());
    const std::string e = error_of([&] { loader.next(); });
    CHECK(contains(
        e, "loader: epoch 0 batch 3, sample 7 (toy/7.png): toy/7.png: corrupt or truncated PNG"));
    CHECK_FALSE(loader.next().has_value());  // the epoch ended
    // A new epoch starts cleanly.
    loader.start_epoch(1);
    CHECK(loader.next()->samples == std::vector<int64_t>{0, 1});
  }
  // Mismatched samples in a batch: an error naming both.
  std::vector<Sample> samples(2);
  samples[0].id = "a";
  samples[0].tensors["x"] = zeros({2});
  samples[1].id = "b";
  samples[1].tensors["x"] = zeros({3});
  CHECK(contains(error_of([&] { stack_samples(samples, cpu_allocator()); }),
                 "tensor 'x' of sample b is f32 (3) cpu, of sample a f32 (2) cpu"));
}

TEST_CASE("prefetch bounds the work ahead of the consumer") {
  ToyDataset ds(50, 1);
  LoaderOptions o = opts(1, 3, false);
  o.prefetch = 2;
  Loader loader(ds, o);
  loader.start_epoch(0);
  REQUIRE(loader.next().has_value());
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  // Delivered 1; batches 1 and 2 may be made, no more.
  CHECK(ds.calls() <= 3);
  CHECK(ds.calls() >= 2);
}

TEST_CASE("batch memory comes from the given allocator, which must be host memory") {
  ToyDataset ds(8, 1);
  CountingAllocator counting;
  {
    Loader loader(ds, opts(4, 2, false), counting);
    const std::vector<Batch> batches = all_batches(loader, 0);
    CHECK(batches.size() == 2);
  }
  CHECK(counting.allocations.load() == 4);  // two tensors per batch
  CountingAllocator device(Device::cuda(0));
  CHECK(contains(error_of([&] { Loader(ds, opts(1, 1), device); }), "batches need host memory"));
  CHECK(contains(error_of([&] { Loader(ToyDataset(0, 1), opts(1, 1)); }), "the dataset is empty"));
}

TEST_CASE("restarting and shutting down mid-epoch") {
  ToyDataset slow(300, 1, -1, 40);  // up to 40 ms a sample
  {
    Loader loader(slow, opts(1, 3, true));
    loader.start_epoch(0);
    REQUIRE(loader.next().has_value());
    // A new epoch abandons the old one: its batches are those of epoch 1 from the start.
    loader.start_epoch(1);
    const std::vector<int64_t> order = epoch_order(300, loader.options(), 1);
    for (int64_t b = 0; b < 3; ++b) {
      const std::optional<Batch> batch = loader.next();
      REQUIRE(batch.has_value());
      CHECK(batch->epoch == 1);
      CHECK(batch->index == b);
      CHECK(batch->samples[0] == order[static_cast<size_t>(b)]);
    }
  }
  // Destroyed mid-epoch: the destructor joins; workers finish their sample and start nothing new.
  const auto t0 = std::chrono::steady_clock::now();
  {
    Loader loader(slow, opts(1, 3, true));
    loader.start_epoch(0);
    REQUIRE(loader.next().has_value());
  }
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  // All 300 samples would take about 2 s with 3 workers; one each in flight takes 40 ms at most.
  CHECK(seconds < 1.0);
  { Loader never_started(slow, opts(1, 3, true)); }
}

// ---- the real datasets through the loader ----

namespace {

void write_frame(const fs::path& file, int frame, int w, int h) {
  fs::create_directories(file.parent_path());
  std::vector<uint8_t> rgb(static_cast<size_t>(w) * h * 3);
  for (size_t i = 0; i < rgb.size(); ++i)
    rgb[i] = static_cast<uint8_t>((i * 7 + static_cast<size_t>(frame) * 13) % 251);
  write_png_rgb(file, w, h, rgb.data());
}

// 3 cities x 2 annotated images (with labelIds) and 2 snippets each, 24x12 frames.
void build_tree(const fs::path& root) {
  constexpr int w = 24, h = 12;
  for (const char* city : {"aachen", "bochum", "cologne"}) {
    for (int seq = 0; seq < 2; ++seq) {
      const std::string stem = frame_stem(city, seq, 19);
      write_frame(root / "leftImg8bit/train" / city / (stem + "_leftImg8bit.png"), 19 + seq, w, h);
      std::vector<uint8_t> ids(static_cast<size_t>(w) * h);
      for (size_t i = 0; i < ids.size(); ++i)
        ids[i] = static_cast<uint8_t>((i + static_cast<size_t>(seq)) % 34);
      fs::create_directories(root / "gtFine/train" / city);
      write_png_grey8(root / "gtFine/train" / city / (stem + "_gtFine_labelIds.png"), w, h,
                      ids.data());
      for (int f = 0; f < kSnippetLength; ++f)
        write_frame(root / "leftImg8bit_sequence/train" / city /
                        (frame_stem(city, seq, f) + "_leftImg8bit.png"),
                    f, w, h);
    }
  }
}

}  // namespace

TEST_CASE("Cityscapes datasets through the loader: same batches with 1 and 3 workers") {
  TempDir tmp;
  build_tree(tmp.path);
  CityscapesOptions where;
  where.root = tmp.path;
  SegmentationOptions so;
  so.resize = ResizeOptions{2, 0, 0, Interp::area};
  so.flip = true;
  so.crop_h = 8;
  so.crop_w = 8;
  so.scale_min = 0.75f;
  so.scale_max = 1.5f;
  so.seed = 3;
  SegmentationDataset seg_ds(where, so);
  REQUIRE(seg_ds.size() == 6);
  VideoOptions vo;
  vo.resize = ResizeOptions{1, 6, 12, Interp::area};
  vo.seed = 4;
  TripletDataset triplet(where, vo);
  FrameOrderDataset order(where, vo);
  ColorizationDataset color(where, vo);
  FutureFrameDataset future(where, vo);
  REQUIRE(triplet.size() == 6);

  auto run = [](const Dataset& ds, int workers) {
    CountingAllocator alloc;
    Loader loader(ds, opts(4, workers, true, 11), alloc);
    std::vector<std::map<std::string, std::vector<float>>> out;
    for (uint64_t epoch = 0; epoch < 2; ++epoch)
      for (Batch& b : loader.epoch(epoch)) {
        std::map<std::string, std::vector<float>> m;
        for (const auto& [name, t] : b.tensors) m[name] = to_vector<float>(t);
        out.push_back(std::move(m));
      }
    CHECK(alloc.allocations.load() > 0);
    return out;
  };
  for (const Dataset* ds :
       std::vector<const Dataset*>{&seg_ds, &triplet, &order, &color, &future}) {
    const auto one = run(*ds, 1);
    const auto three = run(*ds, 3);
    REQUIRE(one.size() == 4);  // 6 samples in batches of 4, two epochs
    CHECK(one == three);
  }
  Loader loader(seg_ds, opts(4, 2, false));
  loader.start_epoch(0);
  const Batch b = *loader.next();
  CHECK(b.at("image").sizes() == Shape{4, 3, 8, 8});
  CHECK(b.at("label").sizes() == Shape{4, 8, 8});
  CHECK(b.at("label").dtype() == DType::i32);
  Loader ordered(order, opts(2, 2, false));
  ordered.start_epoch(0);
  const Batch ob = *ordered.next();
  CHECK(ob.at("frames").sizes() == Shape{2, 3, 3, 6, 12});
  CHECK(ob.at("label").sizes() == Shape{2});
  // A file that breaks mid-epoch: the consumer gets its name.
  const fs::path broken =
      tmp.path / "leftImg8bit/train/bochum" / (frame_stem("bochum", 0, 19) + "_leftImg8bit.png");
  fs::resize_file(broken, 50);
  Loader failing(seg_ds, opts(1, 3, false));
  std::string e;
  try {
    for (Batch& fb : failing.epoch(0)) (void)fb;
  } catch (const std::exception& ex) {
    e = ex.what();
  }
  CHECK(contains(e, "sample 2 (" + broken.string() + "): " + broken.string() + ": truncated PNG"));
}

TEST_CASE("an epoch started mid-way gives the same batches without making the earlier ones") {
  ToyDataset ds(23, 1);
  for (int workers : {0, 2}) {
    CAPTURE(workers);
    LoaderOptions o = opts(3, workers, true);
    Loader whole(ds, o);
    std::vector<Batch> all;
    whole.start_epoch(4);
    while (auto b = whole.next()) all.push_back(std::move(*b));
    REQUIRE(all.size() == 8);
    const int64_t calls_before = ds.calls();
    Loader resumed(ds, o);
    resumed.start_epoch(4, 5);
    for (size_t b = 5; b < all.size(); ++b) {
      std::optional<Batch> got = resumed.next();
      REQUIRE(got.has_value());
      CHECK(got->index == static_cast<int64_t>(b));
      CHECK(got->samples == all[b].samples);
    }
    CHECK_FALSE(resumed.next().has_value());
    CHECK(ds.calls() - calls_before == 23 - 15);  // batches 0..4 (15 samples) were never made
    resumed.start_epoch(4, 8);                    // at the end: an empty epoch
    CHECK_FALSE(resumed.next().has_value());
    CHECK(contains(error_of([&] { resumed.start_epoch(4, 9); }), "at batch 9 of 8"));
  }
}
