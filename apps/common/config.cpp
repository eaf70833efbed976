#include "apps/common/config.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <sstream>

#include "engine/error.h"

namespace seg::app {

using nlohmann::json;

namespace {

json::json_pointer pointer_of(const std::vector<std::string>& parts) {
  json::json_pointer p;
  for (const std::string& part : parts) p /= part;
  return p;
}

std::string join(const std::vector<std::string>& parts, size_t count) {
  std::string s;
  for (size_t i = 0; i < count; ++i) s += (i ? "." : "") + parts[i];
  return s;
}

// A value as JSON text for messages (invalid UTF-8 replaced, never an exception).
std::string text_of(const json& v) {
  return v.dump(-1, ' ', false, json::error_handler_t::replace);
}

const char* type_of(const json& v) {
  if (v.is_null()) return "null";
  if (v.is_boolean()) return "a boolean";
  if (v.is_number_integer()) return "an integer";
  if (v.is_number()) return "a number";
  if (v.is_string()) return "a string";
  if (v.is_array()) return "a list";
  return "an object";
}

template <class T>
std::string number_text(T v) {
  if constexpr (std::is_integral_v<T>) {
    return std::to_string(v);
  } else {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%.6g", v);
    return buf;
  }
}

// "in [a, b]", ">= a", "<= b" for the bounds that constrain.
template <class T>
std::string range_text(T min, T max) {
  const bool has_min =
      min != std::numeric_limits<T>::lowest() && min != -std::numeric_limits<T>::infinity();
  const bool has_max =
      max != std::numeric_limits<T>::max() && max != std::numeric_limits<T>::infinity();
  if (has_min && has_max) return "in [" + number_text(min) + ", " + number_text(max) + "]";
  if (has_min) return ">= " + number_text(min);
  return "<= " + number_text(max);
}

// Paths of the values no getter read: leaves, and objects that were not read whole (descending
// into them); empty objects are skipped.
void collect_unread(const json& node, const std::string& prefix, const std::set<std::string>& read,
                    std::vector<std::string>& out) {
  for (const auto& [name, value] : node.items()) {
    const std::string path = prefix.empty() ? name : prefix + "." + name;
    if (read.count(path)) continue;
    if (value.is_object()) {
      collect_unread(value, path, read, out);
    } else {
      out.push_back(path);
    }
  }
}

}  // namespace

std::vector<std::string> split_key(const std::string& key) {
  std::vector<std::string> parts;
  std::string part;
  std::istringstream in(key);
  while (std::getline(in, part, '.')) {
    SEG_CHECK(!part.empty(), "config: '", key, "' is not a valid key (empty part)");
    parts.push_back(part);
  }
  SEG_CHECK(!parts.empty() && key.back() != '.', "config: '", key, "' is not a valid key");
  return parts;
}

Config Config::load(const std::filesystem::path& path) {
  std::error_code ec;
  SEG_CHECK(std::filesystem::exists(path, ec), "config file ", path.string(), " does not exist");
  SEG_CHECK(!std::filesystem::is_directory(path, ec), "config file ", path.string(),
            " is a directory");
  std::ifstream in(path, std::ios::binary);
  SEG_CHECK(in.good(), "cannot read config file ", path.string(), ": ", std::strerror(errno));
  std::ostringstream text;
  text << in.rdbuf();
  SEG_CHECK(!in.bad(), "cannot read config file ", path.string());
  return parse(text.str(), path.string());
}

Config Config::parse(const std::string& text, const std::string& origin) {
  json value;
  try {
    value = json::parse(text);
  } catch (const json::exception& e) {  // a syntax error, or a number beyond a double's range
    throw Error("config " + origin + " is not valid JSON: " + e.what());
  }
  return from_json(std::move(value), origin);
}

Config Config::from_json(json value, const std::string& origin) {
  SEG_CHECK(value.is_object(), "config ", origin, " must hold a JSON object, not ", type_of(value));
  Config c;
  c.root_ = std::move(value);
  c.origin_ = origin;
  return c;
}

void Config::apply_override(const std::string& assignment) {
  const size_t eq = assignment.find('=');
  SEG_CHECK(eq != std::string::npos && eq > 0, "--set ", assignment,
            ": expected key=value (e.g. optim.lr=0.01)");
  try {
    (void)json(assignment).dump();
  } catch (const json::exception&) {
    throw Error("--set: the assignment is not valid UTF-8");
  }
  const std::string key = assignment.substr(0, eq);
  const std::string text = assignment.substr(eq + 1);
  const std::vector<std::string> parts = split_key(key);
  json value;
  try {
    value = json::parse(text);
  } catch (const json::parse_error&) {
    value = text;  // a plain word: a string
  } catch (const json::exception& e) {
    throw Error("--set " + assignment + ": " + e.what());
  }
  json* node = &root_;
  for (size_t i = 0; i + 1 < parts.size(); ++i) {
    json& child = (*node)[parts[i]];
    if (child.is_null()) child = json::object();
    SEG_CHECK(child.is_object(), "--set ", assignment, ": '", join(parts, i + 1),
              "' is not an object in ", origin_);
    node = &child;
  }
  (*node)[parts.back()] = value;
  overrides_[join(parts, parts.size())] = assignment;
}

const json* Config::find(const std::string& key) const {
  const std::vector<std::string> parts = split_key(key);
  const json* node = &root_;
  for (size_t i = 0; i < parts.size(); ++i) {
    if (!node->is_object()) {
      fail(join(parts, i), std::string("must be an object, got ") + type_of(*node));
    }
    auto it = node->find(parts[i]);
    if (it == node->end()) return nullptr;
    node = &*it;
  }
  return node;
}

bool Config::has(const std::string& key) const {
  return find(key) != nullptr;
}

void Config::record(const std::string& key, const json& value) {
  read_.insert(key);
  resolved_[pointer_of(split_key(key))] = value;
}

std::string Config::where(const std::string& key) const {
  // The override that set this key or an object above it.
  const std::vector<std::string> parts = split_key(key);
  for (size_t n = parts.size(); n > 0; --n) {
    auto it = overrides_.find(join(parts, n));
    if (it != overrides_.end()) return "key '" + key + "' (from --set " + it->second + ")";
  }
  return "key '" + key + "' (in " + origin_ + ")";
}

void Config::fail(const std::string& key, const std::string& problem) const {
  throw Error("config: " + where(key) + " " + problem);
}

template <class T>
T Config::read_number(const std::string& key, const json& v, T min, T max) const {
  T x{};
  if constexpr (std::is_integral_v<T>) {
    if (!v.is_number_integer()) fail(key, std::string("must be an integer, got ") + text_of(v));
    if (v.is_number_unsigned() && v.get<uint64_t>() > static_cast<uint64_t>(max)) {
      fail(key, "must be " + range_text(min, max) + ", got " + text_of(v));
    }
    x = v.get<T>();
  } else {
    if (!v.is_number()) fail(key, std::string("must be a number, got ") + text_of(v));
    x = v.get<T>();
  }
  if (x < min || x > max) fail(key, "must be " + range_text(min, max) + ", got " + text_of(v));
  return x;
}

int64_t Config::get_int(const std::string& key, int64_t fallback, int64_t min, int64_t max) {
  const json* v = find(key);
  const int64_t x = v ? read_number<int64_t>(key, *v, min, max) : fallback;
  record(key, x);
  return x;
}

double Config::get_double(const std::string& key, double fallback, double min, double max) {
  const json* v = find(key);
  const double x = v ? read_number<double>(key, *v, min, max) : fallback;
  record(key, x);
  return x;
}

bool Config::get_bool(const std::string& key, bool fallback) {
  const json* v = find(key);
  if (v && !v->is_boolean()) fail(key, "must be true or false, got " + text_of(*v));
  const bool x = v ? v->get<bool>() : fallback;
  record(key, x);
  return x;
}

std::string Config::get_string(const std::string& key, const std::string& fallback,
                               const std::vector<std::string>& choices) {
  const json* v = find(key);
  if (v && !v->is_string()) fail(key, "must be a string, got " + text_of(*v));
  const std::string x = v ? v->get<std::string>() : fallback;
  if (!choices.empty() && std::find(choices.begin(), choices.end(), x) == choices.end()) {
    std::string list;
    for (const std::string& c : choices) list += (list.empty() ? "" : ", ") + c;
    fail(key, "must be one of " + list + ", got '" + x + "'");
  }
  record(key, x);
  return x;
}

std::string Config::require_string(const std::string& key,
                                   const std::vector<std::string>& choices) {
  if (!has(key)) throw Error("config: " + origin_ + " lacks the required key '" + key + "'");
  return get_string(key, "", choices);
}

template <class T>
std::vector<T> Config::read_list(const std::string& key, const std::vector<T>& fallback, T min,
                                 T max, size_t size) {
  const json* v = find(key);
  std::vector<T> out = fallback;
  if (v) {
    if (!v->is_array()) {
      fail(key, std::string("must be a list of ") +
                    (std::is_integral_v<T> ? "integers" : "numbers") + ", got " + text_of(*v));
    }
    out.clear();
    for (const json& e : *v) out.push_back(read_number<T>(key, e, min, max));
  }
  if (size && out.size() != size) {
    fail(key, "must hold " + std::to_string(size) + " values, got " + std::to_string(out.size()));
  }
  record(key, out);
  return out;
}

std::vector<int64_t> Config::get_int_list(const std::string& key,
                                          const std::vector<int64_t>& fallback, int64_t min,
                                          int64_t max, size_t size) {
  return read_list<int64_t>(key, fallback, min, max, size);
}

std::vector<double> Config::get_double_list(const std::string& key,
                                            const std::vector<double>& fallback, double min,
                                            double max, size_t size) {
  return read_list<double>(key, fallback, min, max, size);
}

std::vector<std::string> Config::get_string_list(const std::string& key,
                                                 const std::vector<std::string>& fallback) {
  const json* v = find(key);
  std::vector<std::string> out = fallback;
  if (v) {
    if (!v->is_array()) fail(key, "must be a list of strings, got " + text_of(*v));
    out.clear();
    for (const json& e : *v) {
      if (!e.is_string()) fail(key, "must be a list of strings, got " + text_of(*v));
      out.push_back(e.get<std::string>());
    }
  }
  record(key, out);
  return out;
}

std::map<std::string, std::string> Config::get_string_map(
    const std::string& key, const std::map<std::string, std::string>& fallback) {
  const json* v = find(key);
  std::map<std::string, std::string> out = fallback;
  if (v) {
    if (!v->is_object()) fail(key, "must be an object of strings, got " + text_of(*v));
    out.clear();
    for (const auto& [name, value] : v->items()) {
      if (!value.is_string())
        fail(key, "must map names to strings, got " + text_of(value) + " for '" + name + "'");
      out[name] = value.get<std::string>();
    }
  }
  record(key, out);
  return out;
}

void Config::check_all_read() const {
  std::vector<std::string> unknown;
  collect_unread(root_, "", read_, unknown);
  if (unknown.empty()) return;
  std::string msg = "config: unknown key" + std::string(unknown.size() > 1 ? "s" : "") + ":";
  for (const std::string& key : unknown) {
    msg += "\n  " + where(key);
    // The keys known beside it, to spot a misspelling.
    const std::string parent =
        key.find('.') == std::string::npos ? "" : key.substr(0, key.rfind('.') + 1);
    std::set<std::string> siblings;
    for (const std::string& r : read_) {
      if (r.compare(0, parent.size(), parent) != 0) continue;
      const std::string rest = r.substr(parent.size());
      siblings.insert(rest.substr(0, rest.find('.')));
    }
    std::string known;
    for (const std::string& s : siblings) known += (known.empty() ? "" : ", ") + s;
    if (!known.empty()) {
      msg += "; known";
      if (!parent.empty()) msg += " under '" + parent.substr(0, parent.size() - 1) + "'";
      msg += ": " + known;
    }
  }
  throw Error(msg);
}

}  // namespace seg::app
