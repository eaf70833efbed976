#include "data/loader.h"

#include <algorithm>
#include <cstring>
#include <numeric>
#include <sstream>

#include "engine/error.h"

namespace seg::data {

namespace {

// The order's Philox key is the loader seed plus this constant, so that a loader and a dataset
// given the same seed do not draw the same numbers.
constexpr uint64_t kOrderKeySalt = 0x9E3779B97F4A7C15ull;

std::string key_list(const std::map<std::string, Tensor>& tensors) {
  std::ostringstream os;
  for (const auto& [k, v] : tensors) os << (os.tellp() > 0 ? ", " : "") << k;
  return os.str();
}

}  // namespace

const Tensor& Batch::at(const std::string& name) const {
  auto it = tensors.find(name);
  SEG_CHECK(it != tensors.end(), "batch ", index, ": no tensor '", name,
            "' (it has: ", key_list(tensors), ")");
  return it->second;
}

Batch stack_samples(const std::vector<Sample>& samples, Allocator& allocator) {
  SEG_CHECK(!samples.empty(), "loader: cannot stack an empty batch");
  Batch batch;
  const Sample& first = samples.front();
  for (const Sample& s : samples) {
    batch.ids.push_back(s.id);
    SEG_CHECK(s.tensors.size() == first.tensors.size(), "loader: sample ", s.id, " has tensors (",
              key_list(s.tensors), "), sample ", first.id, " has (", key_list(first.tensors), ")");
  }
  const int64_t n = static_cast<int64_t>(samples.size());
  for (const auto& [name, t0] : first.tensors) {
    Shape shape{n};
    shape.insert(shape.end(), t0.sizes().begin(), t0.sizes().end());
    const size_t bytes = static_cast<size_t>(t0.numel()) * dtype_size(t0.dtype());
    Tensor out = empty(shape, t0.dtype(), allocator);
    auto* dst = static_cast<uint8_t*>(out.data_ptr());
    for (int64_t i = 0; i < n; ++i) {
      const Sample& s = samples[static_cast<size_t>(i)];
      auto it = s.tensors.find(name);
      SEG_CHECK(it != s.tensors.end(), "loader: sample ", s.id, " has no tensor '", name,
                "' (it has: ", key_list(s.tensors), ")");
      const Tensor& t = it->second;
      SEG_CHECK(t.sizes() == t0.sizes() && t.dtype() == t0.dtype(), "loader: tensor '", name,
                "' of sample ", s.id, " is ", t.str(), ", of sample ", first.id, " ", t0.str(),
                ": samples of a batch must match");
      SEG_CHECK(t.device().is_cpu(), "loader: tensor '", name, "' of sample ", s.id,
                " is not on the CPU");
      const Tensor c = t.contiguous();
      if (bytes > 0) std::memcpy(dst + static_cast<size_t>(i) * bytes, c.data_ptr(), bytes);
    }
    batch.tensors.emplace(name, std::move(out));
  }
  return batch;
}

std::vector<int64_t> epoch_order(int64_t dataset_size, const LoaderOptions& options,
                                 uint64_t epoch) {
  SEG_CHECK(dataset_size > 0, "loader: the dataset is empty");
  SEG_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
            "loader: rank ", options.rank, " outside a world of size ", options.world_size);
  std::vector<int64_t> all(static_cast<size_t>(dataset_size));
  std::iota(all.begin(), all.end(), 0);
  if (options.shuffle) {
    // Fisher-Yates from the back; every swap draws from the epoch's own stream.
    SampleRandom rng(options.seed + kOrderKeySalt, epoch, 0);
    for (int64_t i = dataset_size - 1; i > 0; --i) {
      SEG_CHECK(i < INT32_MAX, "loader: dataset of ", dataset_size,
                " samples too large to shuffle");
      const int64_t j = rng.uniform_int(0, static_cast<int>(i));
      std::swap(all[static_cast<size_t>(i)], all[static_cast<size_t>(j)]);
    }
  }
  const int64_t w = options.world_size;
  if (options.shard_drop_tail) {
    all.resize(static_cast<size_t>(dataset_size / w * w));
  } else {
    const int64_t total = (dataset_size + w - 1) / w * w;
    for (int64_t k = 0; static_cast<int64_t>(all.size()) < total; ++k)
      all.push_back(all[static_cast<size_t>(k % dataset_size)]);
  }
  std::vector<int64_t> mine;
  for (size_t i = static_cast<size_t>(options.rank); i < all.size(); i += static_cast<size_t>(w))
    mine.push_back(all[i]);
  return mine;
}

Loader::Loader(const Dataset& dataset, const LoaderOptions& options, Allocator& allocator)
    : dataset_(dataset), options_(options), allocator_(allocator) {
  SEG_CHECK(options.batch_size >= 1, "loader: batch_size ", options.batch_size, " must be >= 1");
  SEG_CHECK(options.num_workers >= 0, "loader: num_workers ", options.num_workers, " must be >= 0");
  SEG_CHECK(options.prefetch >= 0, "loader: prefetch ", options.prefetch, " must be >= 0");
  SEG_CHECK(allocator.device().is_cpu(), "loader: batches need host memory, the allocator gives ",
            allocator.device().str());
  SEG_CHECK(dataset.size() > 0, "loader: the dataset is empty");
  SEG_CHECK(options.world_size >= 1 && options.rank >= 0 && options.rank < options.world_size,
            "loader: rank ", options.rank, " outside a world of size ", options.world_size);
  prefetch_ = options.prefetch > 0 ? options.prefetch : std::max(2, 2 * options.num_workers);
  for (int i = 0; i < options.num_workers; ++i) workers_.emplace_back([this] { worker_loop(); });
}

Loader::~Loader() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  work_cv_.notify_all();
  for (std::thread& t : workers_) t.join();
}

int64_t Loader::samples_per_epoch() const {
  const int64_t n = dataset_.size(), w = options_.world_size;
  return options_.shard_drop_tail ? n / w : (n + w - 1) / w;
}

int64_t Loader::batches_per_epoch() const {
  const int64_t n = samples_per_epoch(), b = options_.batch_size;
  return options_.drop_last ? n / b : (n + b - 1) / b;
}

Loader::Result Loader::make_batch(int64_t batch, uint64_t epoch,
                                  const std::vector<int64_t>& order) const {
  const int64_t begin = batch * options_.batch_size;
  const int64_t end =
      std::min<int64_t>(begin + options_.batch_size, static_cast<int64_t>(order.size()));
  std::vector<Sample> samples;
  std::vector<int64_t> indices;
  int64_t current = -1;
  try {
    for (int64_t k = begin; k < end; ++k) {
      current = order[static_cast<size_t>(k)];
      samples.push_back(dataset_.get(current, epoch));
      indices.push_back(current);
    }
    current = -1;
    Batch b = stack_samples(samples, allocator_);
    b.index = batch;
    b.epoch = epoch;
    b.samples = std::move(indices);
    return b;
  } catch (const std::exception& e) {
    std::string where;
    if (current >= 0) {
      try {
        where = ", sample " + std::to_string(current) + " (" + dataset_.describe(current) + ")";
      } catch (const std::exception&) {
        where = ", sample " + std::to_string(current);
      }
    }
    return std::make_exception_ptr(
        Error(detail::concat("loader: epoch ", epoch, " batch ", batch, where, ": ", e.what())));
  } catch (...) {
    return std::current_exception();
  }
}

void Loader::worker_loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    work_cv_.wait(lock, [&] {
      return stop_ ||
             (active_ && next_claim_ < num_batches_ && next_claim_ < next_deliver_ + prefetch_);
    });
    if (stop_) return;
    const int64_t b = next_claim_++;
    const uint64_t generation = generation_, epoch = epoch_;
    const std::shared_ptr<const std::vector<int64_t>> order = order_;
    lock.unlock();
    Result r = make_batch(b, epoch, *order);
    lock.lock();
    if (generation == generation_) {
      ready_.emplace(b, std::move(r));
      ready_cv_.notify_all();
    }
  }
}

void Loader::start_epoch(uint64_t epoch, int64_t first_batch) {
  SEG_CHECK(first_batch >= 0 && first_batch <= batches_per_epoch(), "loader: cannot start epoch ",
            epoch, " at batch ", first_batch, " of ", batches_per_epoch());
  auto order =
      std::make_shared<const std::vector<int64_t>>(epoch_order(dataset_.size(), options_, epoch));
  {
    std::lock_guard<std::mutex> lock(mutex_);
    ++generation_;
    ready_.clear();
    epoch_ = epoch;
    order_ = std::move(order);
    num_batches_ = batches_per_epoch();
    next_claim_ = next_deliver_ = first_batch;
    active_ = true;
    started_ = true;
  }
  work_cv_.notify_all();
}

std::optional<Batch> Loader::next() {
  std::unique_lock<std::mutex> lock(mutex_);
  SEG_CHECK(started_, "loader: next() called before start_epoch()");
  if (!active_ || next_deliver_ >= num_batches_) {
    active_ = false;
    return std::nullopt;
  }
  const int64_t b = next_deliver_;
  Result r;
  if (options_.num_workers == 0) {
    const uint64_t epoch = epoch_;
    const std::shared_ptr<const std::vector<int64_t>> order = order_;
    ++next_deliver_;
    lock.unlock();
    r = make_batch(b, epoch, *order);
    lock.lock();
  } else {
    ready_cv_.wait(lock, [&] { return ready_.count(b) > 0; });
    auto it = ready_.find(b);
    r = std::move(it->second);
    ready_.erase(it);
    ++next_deliver_;
    work_cv_.notify_all();
  }
  if (std::holds_alternative<std::exception_ptr>(r)) {
    // The epoch ends here: batches being made for it are dropped when they arrive.
    active_ = false;
    ++generation_;
    ready_.clear();
    lock.unlock();
    std::rethrow_exception(std::get<std::exception_ptr>(r));
  }
  return std::move(std::get<Batch>(r));
}

Loader::Iterator Loader::EpochRange::begin() {
  loader_->start_epoch(epoch_);
  Iterator it;
  it.loader_ = loader_;
  it.batch_ = loader_->next();
  return it;
}

Loader::EpochRange Loader::epoch(uint64_t e) {
  EpochRange r;
  r.loader_ = this;
  r.epoch_ = e;
  return r;
}

}  // namespace seg::data
