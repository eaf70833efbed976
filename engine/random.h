// Generator: a seed and a call counter for the counter-based Philox stream (kernels/common/philox.h).
// Every random op takes a Generator explicitly; there is no global generator. Each op call consumes
// one counter value, so a sequence of ops is reproducible from the seed alone, on CPU and CUDA alike.
#pragma once

#include <cstdint>

namespace seg {

class Generator {
 public:
  explicit Generator(uint64_t seed = 0) : seed_(seed) {}
  uint64_t seed() const { return seed_; }
  uint64_t calls() const { return calls_; }
  // Returns the counter for the next op and advances.
  uint64_t next_call() { return calls_++; }
  // For checkpoint/resume.
  void set_state(uint64_t seed, uint64_t calls) {
    seed_ = seed;
    calls_ = calls;
  }

 private:
  uint64_t seed_;
  uint64_t calls_ = 0;
};

}  // namespace seg
