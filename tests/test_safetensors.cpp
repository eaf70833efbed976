// safetensors: bit-exact round trips of every dtype (special values included), empty tensors and
// scalars, the header layout, atomic writes, every kind of corrupt or truncated file (each error
// must name the file and the tensor), and a file written by PyTorch (tests/reference/st_io.py).
#include <doctest/doctest.h>
#include <unistd.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "engine/io/safetensors.h"
#include "tests/support/reference.h"
#include "tests/support/test_util.h"

using namespace seg;
using namespace seg::test;
namespace fs = std::filesystem;

namespace {

// A fresh directory under the system temp dir, removed at the end of the test.
// A tensor of `dtype` and `shape` holding the raw values `raw` (sizeof(T) must be the dtype's
// size).
template <class T>
Tensor raw_tensor(DType dtype, const Shape& shape, const std::vector<T>& raw) {
  REQUIRE(sizeof(T) == dtype_size(dtype));
  REQUIRE(static_cast<int64_t>(raw.size()) == shape_numel(shape));
  Tensor t = empty(shape, dtype);
  if (!raw.empty()) std::memcpy(t.data_ptr(), raw.data(), raw.size() * sizeof(T));
  return t;
}

// The raw values of a contiguous CPU tensor.
template <class T>
std::vector<T> raw_values(const Tensor& t) {
  REQUIRE(sizeof(T) == dtype_size(t.dtype()));
  Tensor c = t.contiguous();
  std::vector<T> out(static_cast<size_t>(c.numel()));
  if (!out.empty()) std::memcpy(out.data(), c.data_ptr(), out.size() * sizeof(T));
  return out;
}

bool same_bytes(const Tensor& a, const Tensor& b) {
  if (a.dtype() != b.dtype() || a.sizes() != b.sizes()) return false;
  if (a.numel() == 0) return true;
  Tensor ca = a.contiguous(), cb = b.contiguous();
  return std::memcmp(ca.data_ptr(), cb.data_ptr(), ca.numel() * dtype_size(ca.dtype())) == 0;
}

std::string read_file(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

void write_file(const fs::path& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header text and a data section (header length written as given).
std::string st_bytes(const std::string& header, const std::string& data, uint64_t length) {
  std::string bytes(8, '\0');
  std::memcpy(bytes.data(), &length, 8);
  return bytes + header + data;
}
std::string st_bytes(const std::string& header, const std::string& data) {
  return st_bytes(header, data, header.size());
}

}  // namespace

TEST_CASE("safetensors: every dtype round-trips bit-exactly, in order, with metadata") {
  TempDir dir("roundtrip");
  const fs::path path = dir / "all.safetensors";

  // f32: +0, -0, 1.5, inf, -inf, a NaN with payload, the smallest subnormal, the largest finite.
  Tensor f32 = raw_tensor<uint32_t>(DType::f32, {2, 4},
                                    {0x00000000u, 0x80000000u, 0x3fc00000u, 0x7f800000u,
                                     0xff800000u, 0x7fc12345u, 0x00000001u, 0x7f7fffffu});
  Tensor f64 = raw_tensor<uint64_t>(
      DType::f64, {3}, {0x8000000000000000ull, 0x7ff8000000000abcull, 0x0000000000000001ull});
  // Every 16-bit pattern, as f16 and as bf16 (NaNs, infinities and subnormals included).
  std::vector<uint16_t> all16(65536);
  for (uint32_t i = 0; i < 65536; ++i) all16[i] = static_cast<uint16_t>(i);
  Tensor f16 = raw_tensor<uint16_t>(DType::f16, {256, 256}, all16);
  Tensor bf16 = raw_tensor<uint16_t>(DType::bf16, {65536}, all16);
  Tensor i32 = raw_tensor<int32_t>(
      DType::i32, {3},
      {std::numeric_limits<int32_t>::min(), -1, std::numeric_limits<int32_t>::max()});
  Tensor i64 = raw_tensor<int64_t>(
      DType::i64, {2, 1},
      {std::numeric_limits<int64_t>::min(), std::numeric_limits<int64_t>::max()});
  std::vector<uint8_t> bytes(256);
  for (int i = 0; i < 256; ++i) bytes[i] = static_cast<uint8_t>(i);
  Tensor u8 = raw_tensor<uint8_t>(DType::u8, {16, 16}, bytes);
  Tensor scalar = scalar_tensor(-7.25, DType::f64);
  Tensor empty_f32 = zeros({0, 5});
  Tensor empty_i64 = zeros({4, 0, 2}, DType::i64);
  Tensor scalar_i64 = raw_tensor<int64_t>(DType::i64, {}, {42});

  // Deliberately not sorted: the writer keeps the given order, the reader returns it.
  NamedTensors tensors = {{"z.f32", f32},
                          {"f64", f64},
                          {"a.f16", f16},
                          {"bf16", bf16},
                          {"i32", i32},
                          {"i64", i64},
                          {"u8", u8},
                          {"scalar", scalar},
                          {"empty", empty_f32},
                          {"empty_i64", empty_i64},
                          {"scalar_i64", scalar_i64}};
  SafetensorsMetadata meta = {{"format", "pt"}, {"step", "1200"}, {"note", "quotes \" and \\ ok"}};
  save_safetensors(path, tensors, meta);

  SafetensorsFile file(path);
  REQUIRE(file.entries().size() == tensors.size());
  CHECK(file.metadata() == meta);
  NamedTensors back = file.read_all();
  REQUIRE(back.size() == tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    CAPTURE(tensors[i].first);
    CHECK(back[i].first == tensors[i].first);
    CHECK(back[i].second.device() == Device::cpu());
    if (back[i].second.numel() > 0) CHECK(back[i].second.is_contiguous());
    CHECK(same_bytes(back[i].second, tensors[i].second));
    CHECK(file.entries()[i].name == tensors[i].first);
  }
  CHECK(back[7].second.dim() == 0);
  CHECK(back[7].second.item() == -7.25);
  CHECK(back[8].second.sizes() == Shape{0, 5});
  CHECK(back[9].second.sizes() == Shape{4, 0, 2});
  CHECK(back[10].second.sizes() == Shape{});
  CHECK(raw_values<int64_t>(back[10].second) == std::vector<int64_t>{42});

  // One tensor by name; the shorthands.
  CHECK(same_bytes(file.read("bf16"), bf16));
  CHECK(same_bytes(load_safetensors_tensor(path, "u8"), u8));
  CHECK(load_safetensors_metadata(path) == meta);
  CHECK(load_safetensors(path).size() == tensors.size());
  CHECK(file.contains("i64"));
  CHECK_FALSE(file.contains("nope"));
  const std::string missing = error_of([&] { file.read("nope"); });
  CHECK(contains(missing, path.string()));
  CHECK(contains(missing, "tensor 'nope'"));
  CHECK(contains(missing, "no such tensor"));
}

TEST_CASE("safetensors: views are written as their values; header layout is the standard one") {
  TempDir dir("layout");
  const fs::path path = dir / "layout.safetensors";
  Tensor base = from_vector(std::vector<float>{1, 2, 3, 4, 5, 6}, {2, 3});
  Tensor t = base.transpose(0, 1);  // (3, 2), non-contiguous
  save_safetensors(path, {{"t", t}, {"b", from_vector(std::vector<int32_t>{7}, {1})}});
  Tensor back = load_safetensors_tensor(path, "t");
  CHECK(back.sizes() == Shape{3, 2});
  CHECK(to_vector<float>(back) == std::vector<float>{1, 4, 2, 5, 3, 6});

  const std::string bytes = read_file(path);
  uint64_t n = 0;
  std::memcpy(&n, bytes.data(), 8);
  CHECK(n % 8 == 0);  // padded to 8 bytes, so the data section is aligned
  CHECK(bytes.size() == 8 + n + 6 * 4 + 4);
  const std::string header = bytes.substr(8, n);
  CHECK(header.front() == '{');
  CHECK(header[header.find_last_not_of(' ')] == '}');  // padded with spaces
  auto j = nlohmann::ordered_json::parse(header);
  CHECK(j.size() == 2);  // no metadata given: no "__metadata__"
  CHECK(j.begin().key() == "t");
  CHECK(j["t"]["dtype"] == "F32");
  CHECK(j["t"]["shape"] == nlohmann::json::array({3, 2}));
  CHECK(j["t"]["data_offsets"] == nlohmann::json::array({0, 24}));
  CHECK(j["b"]["dtype"] == "I32");
  CHECK(j["b"]["data_offsets"] == nlohmann::json::array({24, 28}));

  // With metadata, "__metadata__" comes first.
  save_safetensors(path, {{"t", t}}, {{"k", "v"}});
  const std::string bytes2 = read_file(path);
  std::memcpy(&n, bytes2.data(), 8);
  auto j2 = nlohmann::ordered_json::parse(bytes2.substr(8, n));
  CHECK(j2.begin().key() == "__metadata__");
  CHECK(j2["__metadata__"]["k"] == "v");
}

TEST_CASE("safetensors: writes are atomic and bad tensor lists are refused") {
  TempDir dir("atomic");
  const fs::path path = dir / "ckpt.safetensors";
  Tensor a = from_vector(std::vector<float>{1, 2, 3}, {3});
  save_safetensors(path, {{"a", a}});
  const std::string before = read_file(path);
  // No temporary file is left behind.
  int files = 0;
  for ([[maybe_unused]] const auto& e : fs::directory_iterator(dir.path)) ++files;
  CHECK(files == 1);

  // A write that fails (here: the temporary path is taken by a directory) throws and leaves the
  // previous file exactly as it was.
  const fs::path tmp = path.string() + ".tmp." + std::to_string(::getpid());
  fs::create_directories(tmp);
  std::string msg = error_of([&] { save_safetensors(path, {{"b", zeros({100})}}); });
  CHECK(contains(msg, path.string()));
  CHECK(contains(msg, "temporary file"));
  CHECK(read_file(path) == before);
  fs::remove(tmp);

  // A missing directory.
  msg = error_of([&] { save_safetensors(dir / "no/such/dir/x.safetensors", {{"a", a}}); });
  CHECK(contains(msg, "no/such/dir/x.safetensors"));

  // Names: empty, repeated, reserved; undefined tensors. Nothing is written.
  CHECK(contains(error_of([&] { save_safetensors(path, {{"", a}}); }), "empty name"));
  msg = error_of([&] { save_safetensors(path, {{"a", a}, {"a", a}}); });
  CHECK(contains(msg, "tensor 'a' appears twice"));
  CHECK(contains(msg, path.string()));
  CHECK(contains(error_of([&] { save_safetensors(path, {{"__metadata__", a}}); }), "__metadata__"));
  CHECK(contains(error_of([&] {
                   save_safetensors(path, {{"u", Tensor()}});
                 }),
                 "tensor 'u' is undefined"));
  CHECK(read_file(path) == before);

  // An empty file (no tensors) is valid.
  save_safetensors(path, {});
  CHECK(load_safetensors(path).empty());
  CHECK(read_file(path).size() == 16);  // length + "{}" padded to 8
}

TEST_CASE("safetensors: corrupt and truncated files give errors naming the file and the tensor") {
  TempDir dir("bad");
  const fs::path path = dir / "bad.safetensors";
  // The expected message parts of reading `bytes` (the file path is always checked too).
  auto expect_error = [&](const std::string& bytes, const std::vector<std::string>& parts) {
    write_file(path, bytes);
    const std::string msg = error_of([&] { SafetensorsFile f(path); });
    CAPTURE(msg);
    CHECK(contains(msg, path.string()));
    for (const std::string& p : parts) {
      CAPTURE(p);
      CHECK(contains(msg, p));
    }
  };
  const std::string f32x2 = std::string(8, '\0');  // two f32 zeros

  SUBCASE("missing file") {
    const std::string msg = error_of([&] { SafetensorsFile f(dir / "absent.safetensors"); });
    CHECK(contains(msg, "absent.safetensors"));
    CHECK(contains(msg, "no such file"));
  }
  SUBCASE("shorter than 8 bytes") {
    expect_error("", {"0 bytes", "fewer than the 8-byte header length"});
    expect_error(std::string("\x10\x00\x00", 3),
                 {"3 bytes", "fewer than the 8-byte header length"});
  }
  SUBCASE("header length larger than the file, or absurd") {
    expect_error(st_bytes("{}", "", 1000), {"header length 1000", "larger than the rest"});
    expect_error(st_bytes("{}", "", ~0ull), {"header length", "larger than the rest"});
    // A 200 MB header in a (sparse) file that is long enough: refused before allocating it.
    write_file(path, st_bytes("{}", "", 200'000'000));
    fs::resize_file(path, 8 + 200'000'000);
    const std::string msg = error_of([&] { SafetensorsFile f(path); });
    CHECK(contains(msg, path.string()));
    CHECK(contains(msg, "header length 200000000 exceeds the limit"));
  }
  SUBCASE("header not JSON") {
    expect_error(st_bytes("{\"a\": ", ""), {"not valid JSON"});
    expect_error(st_bytes("PK\x03\x04garbage!", ""), {"not valid JSON"});
    // A number beyond the range of a double is refused by the JSON parser as out of range, not as
    // a syntax error (found by tests/fuzz/fuzz_safetensors).
    expect_error(st_bytes("{\"a\":{\"dtype\":\"F64\",\"shape\":[1e7904],\"data_offsets\":[0,8]}}",
                          std::string(8, '\0')),
                 {"not valid JSON", "number overflow"});
  }
  SUBCASE("header not an object") {
    expect_error(st_bytes("[1, 2, 3]", ""), {"JSON array", "expected an object"});
    expect_error(st_bytes("\"str\"", ""), {"JSON string", "expected an object"});
  }
  SUBCASE("entry not an object or missing keys") {
    expect_error(st_bytes(R"({"w": 3})", ""), {"tensor 'w'", "expected an object"});
    expect_error(st_bytes(R"({"w": {"shape": [2], "data_offsets": [0, 8]}})", f32x2),
                 {"tensor 'w'", "no \"dtype\""});
    expect_error(st_bytes(R"({"w": {"dtype": "F32", "data_offsets": [0, 8]}})", f32x2),
                 {"tensor 'w'", "no \"shape\""});
    expect_error(st_bytes(R"({"w": {"dtype": "F32", "shape": [2]}})", f32x2),
                 {"tensor 'w'", "no \"data_offsets\""});
  }
  SUBCASE("unknown dtype") {
    expect_error(
        st_bytes(R"({"w": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}})", "ab"),
        {"tensor 'w'", "unknown dtype 'F8_E4M3'", "supported: F32, F64, F16, BF16"});
    expect_error(st_bytes(R"({"w": {"dtype": 7, "shape": [2], "data_offsets": [0, 2]}})", "ab"),
                 {"tensor 'w'", "\"dtype\" is a JSON number"});
  }
  SUBCASE("bad shape") {
    expect_error(
        st_bytes(R"({"w": {"dtype": "F32", "shape": [2, -1], "data_offsets": [0, 8]}})", f32x2),
        {"tensor 'w'", "shape [2,-1]", "not a non-negative integer"});
    expect_error(
        st_bytes(R"({"w": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", f32x2),
        {"tensor 'w'", "not a non-negative integer"});
    expect_error(st_bytes(R"({"w": {"dtype": "F32", "shape": 2, "data_offsets": [0, 8]}})", f32x2),
                 {"tensor 'w'", "\"shape\" is a JSON number"});
    expect_error(
        st_bytes(R"({"w": {"dtype": "U8", "shape": [1,1,1,1,1,1,1,1,1], "data_offsets": [0, 1]}})",
                 "x"),
        {"tensor 'w'", "9 dims"});
    expect_error(st_bytes(R"({"w": {"dtype": "F64", "shape": [4294967296, 4294967296, 4],
                          "data_offsets": [0, 8]}})",
                          f32x2),
                 {"tensor 'w'", "too large"});
  }
  SUBCASE("data_offsets malformed, reversed, out of range, or not matching the shape") {
    expect_error(st_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", f32x2),
                 {"tensor 'w'", "not two non-negative integers"});
    expect_error(
        st_bytes(R"({"w": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", f32x2),
        {"tensor 'w'", "not two non-negative integers"});
    expect_error(
        st_bytes(R"({"w": {"dtype": "F32", "shape": [0], "data_offsets": [8, 0]}})", f32x2),
        {"tensor 'w'", "[8, 0]", "reversed"});
    expect_error(
        st_bytes(R"({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}})", f32x2),
        {"tensor 'w'", "[0, 16]", "past the end of the data section (8 bytes)"});
    expect_error(
        st_bytes(R"({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}})", f32x2),
        {"tensor 'w'", "hold 8 bytes", "F32", "(3)", "need 12 bytes"});
  }
  SUBCASE("overlapping tensors, holes, trailing bytes") {
    expect_error(st_bytes(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
                               "b": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}})",
                          f32x2),
                 {"tensor 'b'", "[4, 8]", "overlap tensor 'a'", "[0, 8]"});
    expect_error(st_bytes(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]},
                               "b": {"dtype": "U8", "shape": [2], "data_offsets": [4, 6]}})",
                          "abcdef"),
                 {"tensor 'b'", "hole", "bytes [2, 4)"});
    expect_error(
        st_bytes(R"({"a": {"dtype": "U8", "shape": [2], "data_offsets": [0, 2]}})", "abcd"),
        {"data section has 4 bytes", "2 trailing bytes"});
  }
  SUBCASE("duplicate names") {
    expect_error(st_bytes(R"({"a": {"dtype": "U8", "shape": [1], "data_offsets": [0, 1]},
                               "a": {"dtype": "U8", "shape": [1], "data_offsets": [1, 2]}})",
                          "ab"),
                 {"tensor 'a'", "more than once"});
  }
  SUBCASE("bad metadata") {
    expect_error(st_bytes(R"({"__metadata__": {"epoch": 3}})", ""),
                 {"__metadata__", "'epoch'", "JSON number", "expected a string"});
    expect_error(st_bytes(R"({"__metadata__": ["x"]})", ""), {"__metadata__", "JSON array"});
  }
  SUBCASE("file truncated in the data section") {
    Tensor a = from_vector(std::vector<float>{1, 2, 3, 4}, {4});
    Tensor b = from_vector(std::vector<float>{5, 6}, {2});
    save_safetensors(path, {{"a", a}, {"b", b}});
    std::string bytes = read_file(path);
    bytes.resize(bytes.size() - 3);  // cuts into b
    expect_error(bytes, {"tensor 'b'", "[16, 24]", "past the end", "truncated"});
    bytes.resize(bytes.size() - 8);  // cuts into a as well: a is reported first
    expect_error(bytes, {"tensor 'a'", "[0, 16]", "truncated"});
  }
  SUBCASE("a valid file stays readable after all that") {
    save_safetensors(path, {{"x", ones({2})}});
    CHECK(to_vector<float>(load_safetensors_tensor(path, "x")) == std::vector<float>{1, 1});
  }
}

// Run only by the CTest test `reference_missing_file` (tests/CMakeLists.txt), with --no-skip: where
// the build found python3-torch a missing reference must fail the test; elsewhere it is skipped.
TEST_CASE("reference data: a missing reference file" * doctest::skip()) {
  CHECK_FALSE(test::have_reference("no_such_reference.safetensors"));
}

TEST_CASE(
    "safetensors: a PyTorch-written file of every dtype (tests/reference/ref_state_dict.py)") {
  if (!test::have_reference("all_dtypes.safetensors")) return;
  SafetensorsFile file(test::reference_path("all_dtypes.safetensors"));
  CHECK(file.metadata() == SafetensorsMetadata{{"format", "pt"}, {"source", "ref_state_dict.py"}});
  // st_io.py writes sorted names.
  std::vector<std::string> names;
  for (const auto& e : file.entries()) names.push_back(e.name);
  CHECK(names == std::vector<std::string>{"bf16", "empty", "f16", "f32", "f64", "i32", "i64",
                                          "scalar", "u8"});
  // The same bit patterns as the script.
  Tensor f32 = file.read("f32");
  CHECK(f32.dtype() == DType::f32);
  CHECK(f32.sizes() == Shape{2, 3});
  CHECK(raw_values<uint32_t>(f32) == std::vector<uint32_t>{0x00000000u, 0x80000000u, 0x3fc00000u,
                                                           0xc0100000u, 0x7f800000u, 0x00000001u});
  CHECK(to_vector<float>(f32)[3] == -2.25f);
  CHECK(std::isinf(to_vector<float>(f32)[4]));
  Tensor f64 = file.read("f64");
  CHECK(f64.dtype() == DType::f64);
  CHECK(raw_values<uint64_t>(f64) ==
        std::vector<uint64_t>{0x3ff0000000000000ull, 0xbff8000000000000ull, 0x7fefffffffffffffull,
                              0x0000000000000001ull});
  Tensor f16 = file.read("f16");
  CHECK(f16.dtype() == DType::f16);
  CHECK(f16.sizes() == Shape{2, 2});
  CHECK(raw_values<uint16_t>(f16) == std::vector<uint16_t>{0x3c00, 0xc000, 0x7bff, 0x0001});
  CHECK(to_vector<float>(f16) == std::vector<float>{1.0f, -2.0f, 65504.0f, std::ldexp(1.0f, -24)});
  Tensor bf16 = file.read("bf16");
  CHECK(bf16.dtype() == DType::bf16);
  CHECK(raw_values<uint16_t>(bf16) == std::vector<uint16_t>{0x3f80, 0xc0a0, 0x7f7f});
  CHECK(to_vector<float>(bf16)[1] == -5.0f);
  Tensor i32 = file.read("i32");
  CHECK(i32.dtype() == DType::i32);
  CHECK(raw_values<int32_t>(i32) == std::vector<int32_t>{std::numeric_limits<int32_t>::min(), 0,
                                                         std::numeric_limits<int32_t>::max()});
  Tensor i64 = file.read("i64");
  CHECK(i64.dtype() == DType::i64);
  CHECK(i64.sizes() == Shape{2, 2});
  CHECK(raw_values<int64_t>(i64) == std::vector<int64_t>{std::numeric_limits<int64_t>::min(), -1, 1,
                                                         std::numeric_limits<int64_t>::max()});
  Tensor u8 = file.read("u8");
  CHECK(u8.dtype() == DType::u8);
  CHECK(raw_values<uint8_t>(u8) == std::vector<uint8_t>{0, 1, 127, 128, 255});
  Tensor scalar = file.read("scalar");
  CHECK(scalar.dim() == 0);
  CHECK(scalar.dtype() == DType::f32);
  CHECK(scalar.item() == 2.5);
  Tensor empty_t = file.read("empty");
  CHECK(empty_t.sizes() == Shape{0, 3});
  CHECK(empty_t.numel() == 0);

  // Rewriting PyTorch's tensors with our writer and reading them back is bit-exact.
  TempDir dir("torchfile");
  save_safetensors(dir / "copy.safetensors", file.read_all(), file.metadata());
  SafetensorsFile copy(dir / "copy.safetensors");
  NamedTensors a = file.read_all(), b = copy.read_all();
  REQUIRE(a.size() == b.size());
  for (size_t i = 0; i < a.size(); ++i) CHECK(same_bytes(a[i].second, b[i].second));
}
