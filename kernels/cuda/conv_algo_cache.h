// Per-shape cache of cuDNN algorithm choices, owned by the CudaContext: the first convolution of a
// shape benchmarks the candidates (cudnnFind*), every later one reuses the winner.
#pragma once

#include <cstddef>
#include <mutex>
#include <optional>
#include <string>
#include <unordered_map>

namespace seg::cuda {

struct ConvAlgoChoice {
  int algo = 0;               // cudnnConvolution{Fwd,BwdData,BwdFilter}Algo_t
  size_t workspace_bytes = 0;
  int math_type = 0;          // cudnnMathType_t
};

class ConvAlgoCache {
 public:
  // `key` describes direction, shapes, strides, dtype and math mode completely.
  std::optional<ConvAlgoChoice> find(const std::string& key) const {
    std::lock_guard<std::mutex> lock(mutex_);
    auto it = choices_.find(key);
    if (it == choices_.end()) return std::nullopt;
    return it->second;
  }
  void insert(const std::string& key, const ConvAlgoChoice& choice) {
    std::lock_guard<std::mutex> lock(mutex_);
    choices_[key] = choice;
  }
  size_t size() const {
    std::lock_guard<std::mutex> lock(mutex_);
    return choices_.size();
  }

 private:
  mutable std::mutex mutex_;
  std::unordered_map<std::string, ConvAlgoChoice> choices_;
};

}  // namespace seg::cuda
