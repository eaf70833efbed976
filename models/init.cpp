// Pretrained weights (design notes in init.h). The file's header is checked against the model
// before any tensor is read, and only the tensors to load are read.
#include "models/init.h"

#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "engine/error.h"
#include "engine/io/safetensors.h"

namespace seg::models {

namespace {

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.compare(0, prefix.size(), prefix) == 0;
}

std::string join(const std::vector<std::string>& names) {
  std::string out;
  for (size_t i = 0; i < names.size(); ++i) out += (i ? ", " : "") + names[i];
  return out;
}

std::string targets_of(const PretrainedOptions& o) {
  std::vector<std::string> t;
  for (const auto& m : o.mappings) t.push_back(m.module_prefix.empty() ? "(all)" : m.module_prefix);
  return join(t);
}

}  // namespace

std::string PretrainedReport::str() const {
  std::ostringstream os;
  os << file << " into " << target << ": " << load.str();
  if (dropped.empty()) return os.str();
  os << "; dropped (" << dropped.size() << "): ";
  constexpr size_t kListed = 8;
  if (dropped.size() <= kListed) {
    os << join(dropped);
    return os.str();
  }
  std::vector<std::string> counts;
  for (const std::string& prefix : drop) {
    size_t n = 0;
    for (const std::string& name : dropped) n += starts_with(name, prefix);
    if (n > 0) counts.push_back(prefix + "* " + std::to_string(n));
  }
  os << join(counts);
  return os.str();
}

PretrainedOptions imagenet_backbone_options() {
  PretrainedOptions o;
  o.mappings = {{"", "backbone."}};
  o.drop = {"fc."};
  return o;
}

PretrainedReport load_pretrained(nn::Module& module, const std::filesystem::path& path,
                                 const PretrainedOptions& options, std::ostream* log) {
  SEG_CHECK(!options.mappings.empty(), "load_pretrained: ", path.string(), ": no prefix mapping");
  const SafetensorsFile file(path);  // validates the whole header
  PretrainedReport report;
  report.file = path.string();
  report.target = targets_of(options);
  report.drop = options.drop;

  // The model's tensors, and which of them are targets.
  const nn::StateDict own = module.state_dict();
  std::unordered_map<std::string, size_t> own_index;
  for (size_t i = 0; i < own.size(); ++i) own_index.emplace(own[i].first, i);
  auto in_target = [&](const std::string& name) {
    for (const auto& m : options.mappings) {
      if (starts_with(name, m.module_prefix)) return true;
    }
    return false;
  };

  // File names -> model names.
  std::vector<std::pair<std::string, const SafetensorsEntry*>> to_load;  // (model name, entry)
  std::unordered_set<std::string> provided;
  for (const SafetensorsEntry& e : file.entries()) {
    bool drop = false;
    for (const std::string& d : options.drop) drop = drop || starts_with(e.name, d);
    if (drop) {
      report.dropped.push_back(e.name);
      continue;
    }
    const PrefixMapping* mapping = nullptr;
    for (const auto& m : options.mappings) {
      if (starts_with(e.name, m.file_prefix)) {
        mapping = &m;
        break;
      }
    }
    const std::string name =
        mapping ? mapping->module_prefix + e.name.substr(mapping->file_prefix.size()) : "";
    auto it = mapping ? own_index.find(name) : own_index.end();
    if (it == own_index.end()) {
      report.load.unexpected.push_back(e.name);
      continue;
    }
    SEG_CHECK(provided.insert(name).second, "load_pretrained: ", path.string(),
              ": two tensors map to '", name, "' (the second is '", e.name, "')");
    const Tensor& dst = own[it->second].second;
    if (dst.sizes() != e.shape) {
      report.load.shape_mismatched.push_back({name, dst.sizes(), e.shape});
    } else if (dst.dtype() != e.dtype && !(is_floating(dst.dtype()) && is_floating(e.dtype))) {
      report.load.dtype_mismatched.push_back({name, dst.dtype(), e.dtype});
    } else {
      to_load.emplace_back(name, &e);
    }
  }
  for (const auto& [name, t] : own) {
    if (in_target(name) && !provided.count(name)) report.load.missing.push_back(name);
  }

  for (const auto& item : to_load) report.load.loaded.push_back(item.first);
  const bool complete = report.load.missing.empty() && report.load.shape_mismatched.empty() &&
                        report.load.dtype_mismatched.empty();
  const bool clean = options.allow_unexpected || report.load.unexpected.empty();
  SEG_CHECK(!options.require_all || (complete && clean),
            "load_pretrained refused, the model is unchanged (",
            (complete ? "unexpected tensors; allow_unexpected accepts them"
                      : "every tensor under the target must be loaded"),
            "): ", report.str());

  nn::StateDict dict;
  for (const auto& [name, entry] : to_load) dict.emplace_back(name, file.read(entry->name));
  const nn::LoadReport done = module.load_state_dict(dict, /*strict=*/false);
  SEG_CHECK(done.loaded.size() == dict.size(), "load_pretrained: ", path.string(), ": loaded ",
            done.loaded.size(), " of the ", dict.size(), " tensors checked");
  if (log) *log << "pretrained: " << report.str() << "\n";
  return report;
}

}  // namespace seg::models
