// safetensors: the checkpoint format shared with PyTorch / Hugging Face.
//
// Layout: an 8-byte little-endian header length N, N bytes of JSON
//   {"__metadata__": {string: string}, name: {"dtype": "F32", "shape": [2, 3], "data_offsets": [b,
//   e]}}
// (padded with spaces to a multiple of 8), then the data section: each tensor's raw little-endian
// bytes at [b, e) relative to the start of the data section.
//
// Design notes
// - Writing is atomic: the file is written to "<path>.tmp.<pid>", flushed (fsync) and renamed over
//   `path`, so a failed or interrupted write leaves the previous file intact. Names keep the order
//   given; "__metadata__" comes first, as in the reference (Rust) writer.
// - Reading validates the whole header before any data is read: every tensor's dtype, shape and
//   data_offsets, and that the tensors tile the data section exactly (no overlaps, no holes, no
//   trailing bytes: the format's own rule, which rejects polyglot files). Every error is a
//   seg::Error naming the file and, where one is involved, the tensor.
// - Tensors are read into new contiguous CPU tensors (one read per tensor, straight into its
//   storage: no second copy of the file in memory). Header order is kept (ordered JSON).
// - The host must be little-endian (checked at compile time).
#pragma once

#include <cstdint>
#include <filesystem>
#include <fstream>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "engine/tensor.h"

namespace seg {

// Tensors with names, in a meaningful order (a state_dict, the contents of a file).
using NamedTensors = std::vector<std::pair<std::string, Tensor>>;
// The optional "__metadata__" string map.
using SafetensorsMetadata = std::map<std::string, std::string>;

// "F32", "BF16", ... for a dtype; and back (nullopt for a name we do not support).
const char* safetensors_dtype_name(DType dtype);
std::optional<DType> parse_safetensors_dtype(const std::string& name);

// Writes `tensors` (any device, any strides: copied to contiguous host memory) to `path`,
// atomically. Throws when a name is empty, repeated or "__metadata__", a tensor is undefined, or
// any file operation fails (the previous file at `path`, if any, is then untouched).
void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const SafetensorsMetadata& metadata = {});

// One tensor's header entry.
struct SafetensorsEntry {
  std::string name;
  DType dtype = DType::f32;
  Shape shape;
  uint64_t begin = 0;  // data_offsets, relative to the data section
  uint64_t end = 0;
};

// An opened, fully validated safetensors file. Cheap to keep: holds the header only; each read
// or read_all() opens the file again.
class SafetensorsFile {
 public:
  // Reads and validates the header; throws a seg::Error naming the file (and tensor) on any
  // problem.
  explicit SafetensorsFile(std::filesystem::path path);

  const std::filesystem::path& path() const { return path_; }
  const std::vector<SafetensorsEntry>& entries() const { return entries_; }  // header order
  const SafetensorsMetadata& metadata() const { return metadata_; }
  // The entry called `name`, or null.
  const SafetensorsEntry* find(const std::string& name) const;
  bool contains(const std::string& name) const { return find(name) != nullptr; }

  // One tensor (a new CPU tensor); throws naming the file and the tensor when it is absent.
  Tensor read(const std::string& name) const;
  // Every tensor, in header order.
  NamedTensors read_all() const;

 private:
  std::ifstream open_data() const;
  Tensor read_entry(std::ifstream& in, const SafetensorsEntry& entry) const;

  std::filesystem::path path_;
  uint64_t data_start_ = 0;  // 8 + header length
  std::vector<SafetensorsEntry> entries_;
  SafetensorsMetadata metadata_;
};

// Shorthands over SafetensorsFile.
NamedTensors load_safetensors(const std::filesystem::path& path);
Tensor load_safetensors_tensor(const std::filesystem::path& path, const std::string& name);
SafetensorsMetadata load_safetensors_metadata(const std::filesystem::path& path);

}  // namespace seg
