// A threaded loader: worker threads make batches of dataset samples (decode, augment, stack) into a
// bounded window of ready batches, which the consumer takes in order.
//
// Design notes
// - Order: this rank's sample indices for an epoch are a function of (seed, epoch, rank, world
//   size) only: a Philox Fisher-Yates permutation when shuffling (else 0..N-1), then sharded as
//   PyTorch's DistributedSampler: padded by repeating indices from the start to a multiple of the
//   world size (or the tail dropped, `shard_drop_tail`), rank r taking positions r, r + W, r + 2W,
//   ...; every rank gets the same number. Batches are consecutive runs of batch_size of those;
//   drop_last drops a final short batch. Samples themselves are deterministic from (dataset seed,
//   epoch, index), so the batches are the same with any number of workers.
// - Threads: a worker claims the next batch number, makes it, and files it under that number; the
//   consumer waits for the batch it needs next, so batches come out in order whichever worker
//   finishes first. A worker claims batch b only while b < next_to_deliver + prefetch, which bounds
//   the memory held in ready or half-made batches. With num_workers = 0, next() makes each batch
//   itself (for debugging).
// - Batch tensors: each named tensor of the samples stacked along a new dim 0, allocated from the
//   given Allocator (a CUDA context's pinned host allocator when training on a GPU, so the copy to
//   the device can be asynchronous; the CPU allocator otherwise).
// - Errors: an exception in a worker is caught, stored with its batch and rethrown by next() when
//   the consumer reaches that batch, as a seg::Error that names the sample (its file) and keeps the
//   original message. The epoch then ends. Starting a new epoch while one is in flight abandons it.
// - Shutdown: the destructor stops the workers and joins them; a worker in the middle of a batch
//   finishes that batch first (decoding cannot be interrupted); nothing else is started.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <exception>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <variant>
#include <vector>

#include "data/datasets.h"
#include "engine/storage.h"
#include "engine/tensor.h"

namespace seg::data {

struct LoaderOptions {
  int64_t batch_size = 1;
  int num_workers = 2;  // 0: batches made by next() in the calling thread
  int prefetch = 0;     // batches ready or in the making at most; 0: 2 * num_workers (>= 2)
  bool shuffle = true;
  uint64_t seed = 0;       // the order's seed (the dataset has its own for augmentation)
  bool drop_last = false;  // drop a final batch shorter than batch_size
  int rank = 0, world_size = 1;
  // Shards: drop the tail (true) or pad by repeating (false, PyTorch's default).
  bool shard_drop_tail = false;
};

struct Batch {
  int64_t index = 0;  // batch number in the epoch
  uint64_t epoch = 0;
  std::vector<int64_t> samples;  // dataset indices, in batch order
  std::vector<std::string> ids;  // sample ids
  std::map<std::string, Tensor> tensors;
  // The tensor called `name`; an error lists the names present.
  const Tensor& at(const std::string& name) const;
};

// Stacks samples (same names, same shapes) into a batch from `allocator`; errors name the samples.
Batch stack_samples(const std::vector<Sample>& samples, Allocator& allocator);

// The sample order of one rank for one epoch (see the design notes).
std::vector<int64_t> epoch_order(int64_t dataset_size, const LoaderOptions& options,
                                 uint64_t epoch);

class Loader {
 public:
  Loader(const Dataset& dataset, const LoaderOptions& options,
         Allocator& allocator = cpu_allocator());
  ~Loader();
  Loader(const Loader&) = delete;
  Loader& operator=(const Loader&) = delete;

  int64_t batches_per_epoch() const;
  int64_t samples_per_epoch() const;  // this rank's, including padding, before drop_last
  const LoaderOptions& options() const { return options_; }

  // Starts an epoch (abandoning one in flight); next() then gives its batches in order, from batch
  // `first_batch` (a resumed run continues mid-epoch without making the batches before it).
  void start_epoch(uint64_t epoch, int64_t first_batch = 0);
  // The next batch of the current epoch; nullopt at its end. Rethrows a worker's error.
  std::optional<Batch> next();

  // for (Batch& b : loader.epoch(e)) { ... }: starts epoch e and iterates over its batches.
  class Iterator {
   public:
    Batch& operator*() { return *batch_; }
    Iterator& operator++() {
      batch_ = loader_->next();
      return *this;
    }
    bool operator!=(const Iterator& other) const {
      return batch_.has_value() != other.batch_.has_value();
    }

   private:
    friend class Loader;
    Loader* loader_ = nullptr;
    std::optional<Batch> batch_;
  };
  class EpochRange {
   public:
    Iterator begin();
    Iterator end() { return Iterator{}; }

   private:
    friend class Loader;
    Loader* loader_ = nullptr;
    uint64_t epoch_ = 0;
  };
  EpochRange epoch(uint64_t e);

 private:
  using Result = std::variant<Batch, std::exception_ptr>;
  Result make_batch(int64_t batch, uint64_t epoch, const std::vector<int64_t>& order) const;
  void worker_loop();

  const Dataset& dataset_;
  LoaderOptions options_;
  Allocator& allocator_;
  int prefetch_ = 2;

  std::mutex mutex_;
  std::condition_variable work_cv_, ready_cv_;
  bool stop_ = false;
  bool active_ = false;
  bool started_ = false;
  uint64_t generation_ = 0;  // bumped by each start_epoch; results of older ones are dropped
  uint64_t epoch_ = 0;
  std::shared_ptr<const std::vector<int64_t>> order_;  // this epoch's sample order
  int64_t num_batches_ = 0;
  int64_t next_claim_ = 0, next_deliver_ = 0;
  std::map<int64_t, Result> ready_;
  std::vector<std::thread> workers_;
};

}  // namespace seg::data
