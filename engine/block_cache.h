// BlockCache: the bounded free list of the host allocators (CachingHostAllocator in
// engine/storage.h, and the CUDA context's PinnedHostAllocator).
//
// Design notes
// - Freed blocks are kept by size class and handed out again most recently freed first (their
//   pages are the warmest).
// - The bytes held are bounded. Putting a block in when that would exceed the bound first pushes
//   out the least recently freed blocks, of any size, and hands them back to the caller to release;
//   a block larger than the whole bound is handed straight back. Without a bound a long run that
//   allocates many shapes (random crops, a last smaller batch, evaluation at another size) would
//   keep a block of every size class it ever freed, for good.
// - Lowering the bound evicts at once; a bound of 0 keeps nothing.
// - Not thread-safe: the owning allocator's mutex guards it.
#pragma once

#include <cstddef>
#include <iterator>
#include <list>
#include <optional>
#include <unordered_map>
#include <utility>
#include <vector>

namespace seg {

template <class Block>
class BlockCache {
 public:
  struct Entry {
    size_t size = 0;
    Block block{};
  };

  explicit BlockCache(size_t max_bytes) : max_bytes_(max_bytes) {}

  size_t bytes() const { return bytes_; }
  size_t max_bytes() const { return max_bytes_; }
  size_t count() const { return lru_.size(); }

  // Keeps a freed block of `size` bytes; returns the blocks to release (evicted ones, or this one
  // when it alone exceeds the bound), least recently freed first.
  std::vector<Entry> put(size_t size, Block block) {
    std::vector<Entry> out;
    if (size > max_bytes_) {
      out.push_back(Entry{size, std::move(block)});
      return out;
    }
    evict_until(max_bytes_ - size, out);
    lru_.push_back(Entry{size, std::move(block)});
    by_size_[size].push_back(std::prev(lru_.end()));
    bytes_ += size;
    return out;
  }

  // Takes the most recently freed block of `size` for which `usable(block)` holds, if any.
  template <class Usable>
  std::optional<Block> take(size_t size, Usable usable) {
    auto it = by_size_.find(size);
    if (it == by_size_.end()) return std::nullopt;
    std::vector<Iter>& entries = it->second;
    for (size_t i = entries.size(); i-- > 0;) {
      if (!usable(entries[i]->block)) continue;
      Block block = std::move(entries[i]->block);
      lru_.erase(entries[i]);
      entries.erase(entries.begin() + static_cast<std::ptrdiff_t>(i));
      if (entries.empty()) by_size_.erase(it);
      bytes_ -= size;
      return block;
    }
    return std::nullopt;
  }
  std::optional<Block> take(size_t size) {
    return take(size, [](const Block&) { return true; });
  }

  // Sets the bound; returns the blocks evicted to meet it.
  std::vector<Entry> set_max_bytes(size_t max_bytes) {
    max_bytes_ = max_bytes;
    std::vector<Entry> out;
    evict_until(max_bytes_, out);
    return out;
  }

  // Every block, to release.
  std::vector<Entry> drain() {
    std::vector<Entry> out;
    evict_until(0, out);
    return out;
  }

 private:
  using Iter = typename std::list<Entry>::iterator;

  // Evicts the least recently freed blocks until at most `limit` bytes are held.
  void evict_until(size_t limit, std::vector<Entry>& out) {
    while (bytes_ > limit) {
      Entry& oldest = lru_.front();
      // Blocks of one size enter in the order they were freed, so the oldest overall is the
      // first of its size.
      auto it = by_size_.find(oldest.size);
      it->second.erase(it->second.begin());
      if (it->second.empty()) by_size_.erase(it);
      bytes_ -= oldest.size;
      out.push_back(std::move(oldest));
      lru_.pop_front();
    }
  }

  std::list<Entry> lru_;                                   // least recently freed first
  std::unordered_map<size_t, std::vector<Iter>> by_size_;  // each size's entries, oldest first
  size_t bytes_ = 0;
  size_t max_bytes_;
};

}  // namespace seg
