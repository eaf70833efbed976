// safetensors reader and writer (format and design notes in safetensors.h).
//
// Validation order on read, so that the first error is the most telling one: file size, header
// length, JSON syntax, top-level object, duplicate names, "__metadata__", then each tensor in
// header order (dtype, shape, data_offsets: form, order, range, size), then the tiling of the data
// section (overlaps, holes, trailing bytes).
#include "engine/io/safetensors.h"

#include "engine/io/atomic_file.h"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <bit>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <set>

namespace seg {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian data; this reader assumes a little-endian host");

namespace {

using OrderedJson = nlohmann::ordered_json;

constexpr uint64_t kLengthBytes = 8;  // the u64 header length in front of the JSON
// The reference implementation's limit: a larger header is corrupt or hostile, not a checkpoint
// (a ResNet-101 header is about 60 KB).
constexpr uint64_t kMaxHeaderBytes = 100'000'000;

struct DTypeName {
  DType dtype;
  const char* name;
};
constexpr DTypeName kDTypeNames[] = {
    {DType::f32, "F32"}, {DType::f64, "F64"}, {DType::f16, "F16"}, {DType::bf16, "BF16"},
    {DType::i32, "I32"}, {DType::i64, "I64"}, {DType::u8, "U8"},
};

std::string supported_dtypes() {
  std::string s;
  for (const DTypeName& d : kDTypeNames) s += (s.empty() ? "" : ", ") + std::string(d.name);
  return s;
}

std::string file_prefix(const std::filesystem::path& path) {
  return "safetensors: " + path.string() + ": ";
}

std::string tensor_prefix(const std::filesystem::path& path, const std::string& name) {
  return file_prefix(path) + "tensor '" + name + "': ";
}

std::string offsets_str(uint64_t begin, uint64_t end) {
  return "[" + std::to_string(begin) + ", " + std::to_string(end) + "]";
}

// A JSON value as a non-negative integer, or false.
bool as_u64(const OrderedJson& v, uint64_t* out) {
  if (!v.is_number_integer()) return false;  // rejects floats, strings, booleans
  if (v.is_number_unsigned()) {
    *out = v.get<uint64_t>();
    return true;
  }
  int64_t s = v.get<int64_t>();
  if (s < 0) return false;
  *out = static_cast<uint64_t>(s);
  return true;
}

SafetensorsEntry parse_entry(const std::filesystem::path& path, const std::string& name,
                             const OrderedJson& info, uint64_t data_bytes) {
  const std::string where = tensor_prefix(path, name);
  SEG_CHECK(info.is_object(), where, "header entry is a JSON ", info.type_name(),
            ", expected an object with dtype, shape and data_offsets");
  SafetensorsEntry e;
  e.name = name;

  auto dtype_it = info.find("dtype");
  SEG_CHECK(dtype_it != info.end(), where, "header entry has no \"dtype\"");
  SEG_CHECK(dtype_it->is_string(), where, "\"dtype\" is a JSON ", dtype_it->type_name(),
            ", expected a string");
  const std::string dtype_name = dtype_it->get<std::string>();
  std::optional<DType> dtype = parse_safetensors_dtype(dtype_name);
  SEG_CHECK(dtype.has_value(), where, "unknown dtype '", dtype_name,
            "' (supported: ", supported_dtypes(), ")");
  e.dtype = *dtype;

  auto shape_it = info.find("shape");
  SEG_CHECK(shape_it != info.end(), where, "header entry has no \"shape\"");
  SEG_CHECK(shape_it->is_array(), where, "\"shape\" is a JSON ", shape_it->type_name(),
            ", expected an array of sizes");
  SEG_CHECK(shape_it->size() <= static_cast<size_t>(kMaxDims), where, "shape ", shape_it->dump(),
            " has ", shape_it->size(), " dims; at most ", kMaxDims, " are supported");
  // numel * element size, with overflow checks (a hostile header must not wrap around).
  uint64_t nbytes = dtype_size(e.dtype);
  for (const OrderedJson& s : *shape_it) {
    uint64_t size = 0;
    SEG_CHECK(as_u64(s, &size), where, "shape ", shape_it->dump(),
              " has an entry that is not a non-negative integer");
    SEG_CHECK(size <= static_cast<uint64_t>(std::numeric_limits<int64_t>::max()), where, "shape ",
              shape_it->dump(), " has a size too large");
    e.shape.push_back(static_cast<int64_t>(size));
    if (nbytes != 0 && size != 0) {
      SEG_CHECK(nbytes <= std::numeric_limits<uint64_t>::max() / size, where, "shape ",
                shape_it->dump(), " is too large (byte count overflows)");
    }
    nbytes *= size;
  }

  auto off_it = info.find("data_offsets");
  SEG_CHECK(off_it != info.end(), where, "header entry has no \"data_offsets\"");
  SEG_CHECK(off_it->is_array() && off_it->size() == 2 && as_u64((*off_it)[0], &e.begin) &&
                as_u64((*off_it)[1], &e.end),
            where, "data_offsets ", off_it->dump(), " are not two non-negative integers");
  SEG_CHECK(e.begin <= e.end, where, "data_offsets ", offsets_str(e.begin, e.end),
            " are reversed (begin after end)");
  SEG_CHECK(e.end <= data_bytes, where, "data_offsets ", offsets_str(e.begin, e.end),
            " run past the end of the data section (", data_bytes,
            " bytes): the file is truncated or the offsets are out of range");
  SEG_CHECK(e.end - e.begin == nbytes, where, "data_offsets ", offsets_str(e.begin, e.end),
            " hold ", e.end - e.begin, " bytes but dtype ", dtype_name, " and shape ",
            shape_str(e.shape), " need ", nbytes, " bytes");
  return e;
}

// Checks that the entries tile [0, data_bytes) exactly.
void check_tiling(const std::filesystem::path& path, const std::vector<SafetensorsEntry>& entries,
                  uint64_t data_bytes) {
  std::vector<const SafetensorsEntry*> sorted;
  for (const SafetensorsEntry& e : entries) sorted.push_back(&e);
  std::stable_sort(sorted.begin(), sorted.end(), [](const auto* a, const auto* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t expected = 0;
  const SafetensorsEntry* previous = nullptr;
  for (const SafetensorsEntry* e : sorted) {
    SEG_CHECK(e->begin >= expected, tensor_prefix(path, e->name), "data_offsets ",
              offsets_str(e->begin, e->end), " overlap tensor '", previous ? previous->name : "",
              "' at ", previous ? offsets_str(previous->begin, previous->end) : "");
    SEG_CHECK(e->begin == expected, tensor_prefix(path, e->name), "data_offsets ",
              offsets_str(e->begin, e->end), " leave a hole: bytes [", expected, ", ", e->begin,
              ") of the data section belong to no tensor");
    expected = e->end;
    previous = e;
  }
  SEG_CHECK(expected == data_bytes, file_prefix(path), "the data section has ", data_bytes,
            " bytes but the tensors cover only ", expected, " (", data_bytes - expected,
            " trailing bytes)");
}

// Writes all of [data, data + n) or returns false.

}  // namespace

const char* safetensors_dtype_name(DType dtype) {
  for (const DTypeName& d : kDTypeNames) {
    if (d.dtype == dtype) return d.name;
  }
  return "?";
}

std::optional<DType> parse_safetensors_dtype(const std::string& name) {
  for (const DTypeName& d : kDTypeNames) {
    if (name == d.name) return d.dtype;
  }
  return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// writing

void save_safetensors(const std::filesystem::path& path, const NamedTensors& tensors,
                      const SafetensorsMetadata& metadata) {
  const std::string where = file_prefix(path);
  std::set<std::string> seen;
  std::vector<Tensor> host;  // contiguous CPU copies, in order
  host.reserve(tensors.size());
  for (const auto& [name, t] : tensors) {
    SEG_CHECK(!name.empty(), where, "a tensor has an empty name");
    SEG_CHECK(name != "__metadata__", where, "a tensor may not be called \"__metadata__\"");
    SEG_CHECK(seen.insert(name).second, where, "tensor '", name, "' appears twice");
    SEG_CHECK(t.defined(), where, "tensor '", name, "' is undefined");
    // (An empty tensor needs no copy; Tensor::is_contiguous() is false for some empty shapes.)
    host.push_back(t.numel() == 0 ? empty(t.sizes(), t.dtype())
                                  : t.detach().to(Device::cpu()).contiguous());
  }

  OrderedJson header = OrderedJson::object();
  if (!metadata.empty()) {
    OrderedJson meta = OrderedJson::object();
    for (const auto& [k, v] : metadata) meta[k] = v;
    header["__metadata__"] = std::move(meta);
  }
  uint64_t offset = 0;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const Tensor& t = host[i];
    const uint64_t nbytes = static_cast<uint64_t>(t.numel()) * dtype_size(t.dtype());
    header[tensors[i].first] = OrderedJson{
        {"dtype", safetensors_dtype_name(t.dtype())},
        {"shape", t.sizes()},
        {"data_offsets", {offset, offset + nbytes}},
    };
    offset += nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {  // e.g. a name that is not valid UTF-8
    SEG_CHECK(false, where, "cannot encode the header: ", e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');
  const uint64_t length = text.size();

  AtomicFile file(path, "safetensors file");
  file.write(&length, sizeof(length));
  file.write(text);
  for (const Tensor& t : host) {
    file.write(t.data_ptr(), static_cast<size_t>(t.numel()) * dtype_size(t.dtype()));
  }
  file.commit();
}

// ---------------------------------------------------------------------------------------------
// reading

SafetensorsFile::SafetensorsFile(std::filesystem::path path) : path_(std::move(path)) {
  const std::string where = file_prefix(path_);
  std::error_code ec;
  SEG_CHECK(std::filesystem::is_regular_file(path_, ec), where,
            std::filesystem::exists(path_, ec) ? "not a regular file" : "no such file");
  const uint64_t file_bytes = std::filesystem::file_size(path_, ec);
  SEG_CHECK(!ec, where, "cannot read the file size: ", ec.message());
  SEG_CHECK(file_bytes >= kLengthBytes, where, "the file has ", file_bytes,
            " bytes, fewer than the 8-byte header length: truncated or not a safetensors file");

  std::ifstream in(path_, std::ios::binary);
  SEG_CHECK(in.good(), where, "cannot open: ", std::strerror(errno));
  uint64_t length = 0;
  in.read(reinterpret_cast<char*>(&length), sizeof(length));
  SEG_CHECK(in.good(), where, "cannot read the header length");
  SEG_CHECK(length <= file_bytes - kLengthBytes, where, "the header length ", length,
            " is larger than the rest of the file (", file_bytes - kLengthBytes,
            " bytes): truncated or not a safetensors file");
  SEG_CHECK(length <= kMaxHeaderBytes, where, "the header length ", length,
            " exceeds the limit of ", kMaxHeaderBytes, " bytes: corrupt or not a safetensors file");
  std::string text(static_cast<size_t>(length), '\0');
  in.read(text.data(), static_cast<std::streamsize>(length));
  SEG_CHECK(in.good() || length == 0, where, "cannot read the ", length, "-byte header");
  data_start_ = kLengthBytes + length;
  const uint64_t data_bytes = file_bytes - data_start_;

  // Parse, noting repeated top-level keys (the parser itself would keep only the last one).
  std::vector<std::string> duplicates;
  std::set<std::string> keys;
  OrderedJson header;
  try {
    header = OrderedJson::parse(
        text, [&](int depth, OrderedJson::parse_event_t event, OrderedJson& parsed) {
          if (depth == 1 && event == OrderedJson::parse_event_t::key && parsed.is_string()) {
            if (!keys.insert(parsed.get<std::string>()).second) {
              duplicates.push_back(parsed.get<std::string>());
            }
          }
          return true;
        });
  } catch (const nlohmann::json::exception& e) {
    // parse_error for bad syntax, out_of_range for a number beyond a double (1e7904).
    SEG_CHECK(false, where, "the header is not valid JSON: ", e.what());
  }
  SEG_CHECK(header.is_object(), where, "the header is a JSON ", header.type_name(),
            ", expected an object");
  SEG_CHECK(duplicates.empty(), where, "tensor '", duplicates.empty() ? "" : duplicates.front(),
            "' appears more than once in the header");

  for (const auto& [name, info] : header.items()) {
    if (name == "__metadata__") {
      SEG_CHECK(info.is_object(), where, "\"__metadata__\" is a JSON ", info.type_name(),
                ", expected an object of strings");
      for (const auto& [k, v] : info.items()) {
        SEG_CHECK(v.is_string(), where, "\"__metadata__\" value of '", k, "' is a JSON ",
                  v.type_name(), ", expected a string");
        metadata_[k] = v.get<std::string>();
      }
      continue;
    }
    entries_.push_back(parse_entry(path_, name, info, data_bytes));
  }
  check_tiling(path_, entries_, data_bytes);
}

const SafetensorsEntry* SafetensorsFile::find(const std::string& name) const {
  for (const SafetensorsEntry& e : entries_) {
    if (e.name == name) return &e;
  }
  return nullptr;
}

std::ifstream SafetensorsFile::open_data() const {
  std::ifstream in(path_, std::ios::binary);
  SEG_CHECK(in.good(), file_prefix(path_), "cannot open: ", std::strerror(errno));
  return in;
}

Tensor SafetensorsFile::read_entry(std::ifstream& in, const SafetensorsEntry& e) const {
  Tensor t = empty(e.shape, e.dtype);
  const uint64_t nbytes = e.end - e.begin;
  if (nbytes == 0) return t;
  in.seekg(static_cast<std::streamoff>(data_start_ + e.begin));
  in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(nbytes));
  SEG_CHECK(in.good() && static_cast<uint64_t>(in.gcount()) == nbytes, tensor_prefix(path_, e.name),
            "read only ", in.gcount(), " of ", nbytes,
            " bytes: the file was truncated after its header was read");
  return t;
}

Tensor SafetensorsFile::read(const std::string& name) const {
  const SafetensorsEntry* e = find(name);
  if (e == nullptr) {
    std::string names;
    for (size_t i = 0; i < entries_.size() && i < 8; ++i)
      names += (i ? ", " : "") + entries_[i].name;
    if (entries_.size() > 8) names += ", ...";
    SEG_CHECK(false, tensor_prefix(path_, name), "no such tensor in the file (it has ",
              entries_.size(), " tensors: ", names, ")");
  }
  std::ifstream in = open_data();
  return read_entry(in, *e);
}

NamedTensors SafetensorsFile::read_all() const {
  NamedTensors out;
  out.reserve(entries_.size());
  std::ifstream in = open_data();
  for (const SafetensorsEntry& e : entries_) out.emplace_back(e.name, read_entry(in, e));
  return out;
}

NamedTensors load_safetensors(const std::filesystem::path& path) {
  return SafetensorsFile(path).read_all();
}

Tensor load_safetensors_tensor(const std::filesystem::path& path, const std::string& name) {
  return SafetensorsFile(path).read(name);
}

SafetensorsMetadata load_safetensors_metadata(const std::filesystem::path& path) {
  return SafetensorsFile(path).metadata();
}

}  // namespace seg
