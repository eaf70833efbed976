// Experiment configs: a JSON object read through typed getters that remember what they read.
//
// Design notes
// - Keys are dotted paths into nested objects ("optim.lr" is {"optim": {"lr": ...}}). Each getter
//   names its key, its type and, where it has one, its range or its choices; a value of the wrong
//   type or out of range is an error naming the key and where the value came from (the file, or the
//   `--set key=value` that gave it).
// - Every key the file (or a --set) holds must be read by someone: check_all_read() lists the ones
//   nobody read, so a misspelt key never passes silently. Getters with a fallback record it, so
//   resolved() is the whole configuration that ran, defaults included (saved as the run's
//   config.json, and readable again as a config).
// - `--set key=value`: the value is parsed as JSON when it is JSON (numbers, true/false, null,
//   arrays, objects, "quoted strings"), else taken as a plain string; objects on the way are
//   created. An override of a key that does not exist is caught by check_all_read() like a
//   misspelt key in the file.
// - Integers are JSON integers (a float such as 2.5 for an integer key is an error, 2.0 too: JSON
//   integers are written without a point); floating keys take both.
#pragma once

#include <cstdint>
#include <filesystem>
#include <limits>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <string>
#include <vector>

namespace seg::app {

class Config {
 public:
  // Reads a JSON object from `path`; errors name the file: missing, unreadable, invalid JSON (with
  // the parser's position), not an object.
  static Config load(const std::filesystem::path& path);
  // A config from JSON text or a value; `origin` names it in messages.
  static Config parse(const std::string& text, const std::string& origin);
  static Config from_json(nlohmann::json value, const std::string& origin);

  // Applies one "dotted.key=value" override (see the design notes).
  void apply_override(const std::string& assignment);

  bool has(const std::string& key) const;

  int64_t get_int(const std::string& key, int64_t fallback,
                  int64_t min = std::numeric_limits<int64_t>::min(),
                  int64_t max = std::numeric_limits<int64_t>::max());
  double get_double(const std::string& key, double fallback,
                    double min = -std::numeric_limits<double>::infinity(),
                    double max = std::numeric_limits<double>::infinity());
  bool get_bool(const std::string& key, bool fallback);
  // `choices` empty: any string.
  std::string get_string(const std::string& key, const std::string& fallback,
                         const std::vector<std::string>& choices = {});
  // A list of integers (each within [min, max]); `size` 0: any length.
  std::vector<int64_t> get_int_list(const std::string& key, const std::vector<int64_t>& fallback,
                                    int64_t min, int64_t max, size_t size = 0);
  std::vector<double> get_double_list(const std::string& key, const std::vector<double>& fallback,
                                      double min, double max, size_t size = 0);
  std::vector<std::string> get_string_list(const std::string& key,
                                           const std::vector<std::string>& fallback);
  // An object of strings ({"a": "b", ...}), read whole.
  std::map<std::string, std::string> get_string_map(
      const std::string& key, const std::map<std::string, std::string>& fallback);
  // Required variants: absence is an error naming the key.
  std::string require_string(const std::string& key, const std::vector<std::string>& choices = {});

  // Throws listing every key present but never read, each with where it came from.
  void check_all_read() const;
  // Every value read, fallbacks included, as nested JSON.
  const nlohmann::json& resolved() const { return resolved_; }
  // The file (or other origin) the config came from.
  const std::string& origin() const { return origin_; }

 private:
  // The value at `key`, or null when absent; errors when a parent is not an object.
  const nlohmann::json* find(const std::string& key) const;
  // Marks `key` read and records `value` in resolved().
  void record(const std::string& key, const nlohmann::json& value);
  // "key 'optim.lr' (in configs/x.json)" or "key 'optim.lr' (from --set optim.lr=abc)".
  std::string where(const std::string& key) const;
  [[noreturn]] void fail(const std::string& key, const std::string& problem) const;
  template <class T>
  T read_number(const std::string& key, const nlohmann::json& v, T min, T max) const;
  template <class T>
  std::vector<T> read_list(const std::string& key, const std::vector<T>& fallback, T min, T max,
                           size_t size);

  nlohmann::json root_;
  std::string origin_;
  std::map<std::string, std::string> overrides_;  // key -> the --set assignment that set it
  std::set<std::string> read_;
  nlohmann::json resolved_ = nlohmann::json::object();
};

// Splits a dotted key into its parts; errors on empty parts.
std::vector<std::string> split_key(const std::string& key);

}  // namespace seg::app
