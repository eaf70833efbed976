// nn::Module (design notes in module.h).
#include "engine/nn/module.h"

#include <set>
#include <algorithm>
#include <sstream>
#include <unordered_map>
#include <unordered_set>

#include "engine/autograd.h"

namespace seg::nn {

namespace {

std::string join(const std::vector<std::string>& names) {
  std::string s;
  for (const std::string& n : names) s += (s.empty() ? "" : ", ") + n;
  return s;
}

std::string dotted(const std::string& prefix, const std::string& name) {
  return prefix.empty() ? name : prefix + "." + name;
}

// Module (depth first, each shared module once) -> its dotted prefix.
template <class M>
void collect_modules(M* module, const std::string& prefix, std::unordered_set<const Module*>* seen,
                     std::vector<std::pair<std::string, M*>>* out) {
  if (!seen->insert(module).second) return;
  out->emplace_back(prefix, module);
  for (const auto& [name, child] : module->named_children()) {
    collect_modules<M>(child.get(), dotted(prefix, name), seen, out);
  }
}

// Makes `t`'s TensorImpl (and so every handle to it) hold `value` instead; PyTorch's `t.data =
// value`.
void replace_data(const Tensor& t, const Tensor& value) {
  TensorImpl* impl = t.impl();
  impl->storage = value.storage();
  impl->sizes = value.sizes();
  impl->strides = value.strides();
  impl->offset = value.offset();
  impl->dtype = value.dtype();
  impl->grad = Tensor();
}

// The body of load_state_dict / load_state_dict_file; `source` names the dict in messages.
LoadReport load_into(Module& module, const StateDict& dict, bool strict,
                     const std::string& source) {
  const std::string where = module.type_name() + ": load_state_dict" + source;
  std::unordered_map<std::string, size_t> index;
  for (size_t i = 0; i < dict.size(); ++i) {
    const auto& [name, t] = dict[i];
    SEG_CHECK(index.emplace(name, i).second, where, ": the dict has '", name, "' twice");
    SEG_CHECK(t.defined(), where, ": the dict's '", name, "' is undefined");
  }

  const StateDict own = module.state_dict();
  std::unordered_set<std::string> own_names;
  LoadReport report;
  std::vector<std::pair<Tensor, Tensor>> copies;  // (destination, source)
  for (const auto& [name, dst] : own) {
    own_names.insert(name);
    auto it = index.find(name);
    if (it == index.end()) {
      report.missing.push_back(name);
      continue;
    }
    const Tensor& src = dict[it->second].second;
    if (src.sizes() != dst.sizes()) {
      report.shape_mismatched.push_back({name, dst.sizes(), src.sizes()});
    } else if (src.dtype() != dst.dtype() &&
               !(is_floating(src.dtype()) && is_floating(dst.dtype()))) {
      report.dtype_mismatched.push_back({name, dst.dtype(), src.dtype()});
    } else {
      report.loaded.push_back(name);
      copies.emplace_back(dst, src);
    }
  }
  for (const auto& [name, t] : dict) {
    if (!own_names.count(name)) report.unexpected.push_back(name);
  }

  SEG_CHECK(!strict || report.ok(), where, " (strict) failed, nothing was changed: ", report.str(),
            "\n", report.table());
  NoGradGuard no_grad;
  for (auto& [dst, src] : copies) {
    if (dst.numel() > 0) dst.copy_(src.detach().to(dst.device()));
  }
  return report;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// LoadReport

std::string LoadReport::str() const {
  const size_t total =
      loaded.size() + missing.size() + shape_mismatched.size() + dtype_mismatched.size();
  std::ostringstream os;
  os << "loaded " << loaded.size() << " of " << total << " tensors";
  if (!missing.empty()) os << "; missing (" << missing.size() << "): " << join(missing);
  if (!unexpected.empty()) os << "; unexpected (" << unexpected.size() << "): " << join(unexpected);
  if (!shape_mismatched.empty()) {
    os << "; shape mismatched (" << shape_mismatched.size() << "): ";
    for (size_t i = 0; i < shape_mismatched.size(); ++i) {
      const ShapeMismatch& m = shape_mismatched[i];
      os << (i ? ", " : "") << m.name << ": module " << shape_str(m.expected) << ", dict "
         << shape_str(m.got);
    }
  }
  if (!dtype_mismatched.empty()) {
    os << "; dtype mismatched (" << dtype_mismatched.size() << "): ";
    for (size_t i = 0; i < dtype_mismatched.size(); ++i) {
      const DTypeMismatch& m = dtype_mismatched[i];
      os << (i ? ", " : "") << m.name << ": module " << dtype_name(m.expected) << ", dict "
         << dtype_name(m.got);
    }
  }
  return os.str();
}

std::string LoadReport::table() const {
  struct Row {
    std::string name, module, dict, problem;
  };
  std::vector<Row> rows;
  for (const ShapeMismatch& m : shape_mismatched) {
    rows.push_back({m.name, shape_str(m.expected), shape_str(m.got), "shape differs"});
  }
  for (const DTypeMismatch& m : dtype_mismatched) {
    rows.push_back({m.name, dtype_name(m.expected), dtype_name(m.got), "dtype differs"});
  }
  for (const std::string& n : missing) rows.push_back({n, "present", "-", "missing from the dict"});
  for (const std::string& n : unexpected) rows.push_back({n, "-", "present", "not in the module"});
  if (rows.empty()) return "";
  Row head{"tensor", "module", "dict", "problem"};
  size_t w[3] = {head.name.size(), head.module.size(), head.dict.size()};
  for (const Row& r : rows) {
    w[0] = std::max(w[0], r.name.size());
    w[1] = std::max(w[1], r.module.size());
    w[2] = std::max(w[2], r.dict.size());
  }
  std::ostringstream os;
  auto line = [&](const Row& r) {
    os << "  " << r.name << std::string(w[0] - r.name.size() + 2, ' ') << r.module
       << std::string(w[1] - r.module.size() + 2, ' ') << r.dict
       << std::string(w[2] - r.dict.size() + 2, ' ') << r.problem << "\n";
  };
  line(head);
  for (const Row& r : rows) line(r);
  return os.str();
}

// ---------------------------------------------------------------------------------------------
// Module

Tensor Module::forward(const Tensor& x) {
  SEG_CHECK(false, type_name_, ": forward(Tensor) is not defined for this module (called with ",
            x.str(), "); it takes other inputs or is a container without a forward");
  return Tensor();
}

void Module::check_new_name(const std::string& name, const char* what) const {
  SEG_CHECK(!name.empty(), type_name_, ": cannot register a ", what, " with an empty name");
  SEG_CHECK(name.find('.') == std::string::npos, type_name_, ": cannot register ", what, " '", name,
            "': names may not contain '.'");
  bool taken = false;
  for (const auto& p : parameters_) taken = taken || p.first == name;
  for (const auto& b : buffers_) taken = taken || b.name == name;
  for (const auto& c : children_) taken = taken || c.first == name;
  SEG_CHECK(!taken, type_name_, ": cannot register ", what, " '", name,
            "': a parameter, buffer or module of that name exists");
}

Tensor Module::register_parameter(const std::string& name, Tensor value) {
  check_new_name(name, "parameter");
  SEG_CHECK(value.defined(), type_name_, ": parameter '", name, "' is undefined");
  SEG_CHECK(is_floating(value.dtype()), type_name_, ": parameter '", name,
            "' must be floating, got ", value.str());
  SEG_CHECK(value.is_leaf(), type_name_, ": parameter '", name,
            "' must be a leaf tensor (it was computed by an op; detach() it)");
  value.set_requires_grad(true);
  parameters_.emplace_back(name, value);
  return value;
}

Tensor Module::register_buffer(const std::string& name, Tensor value, bool persistent) {
  check_new_name(name, "buffer");
  SEG_CHECK(value.defined(), type_name_, ": buffer '", name, "' is undefined");
  buffers_.push_back(Buffer{name, value, persistent});
  return value;
}

void Module::add_child(const std::string& name, std::shared_ptr<Module> module) {
  check_new_name(name, "module");
  SEG_CHECK(module != nullptr, type_name_, ": module '", name, "' is null");
  SEG_CHECK(module.get() != this, type_name_, ": cannot register a module as its own child '", name,
            "'");
  children_.emplace_back(name, std::move(module));
}

Tensor Module::parameter(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& [n, t] : parameters_) {
    if (n == name) return t;
    names.push_back(n);
  }
  SEG_CHECK(false, type_name_, ": no parameter '", name, "' (has: ", join(names), ")");
  return Tensor();
}

Tensor Module::buffer(const std::string& name) const {
  std::vector<std::string> names;
  for (const Buffer& b : buffers_) {
    if (b.name == name) return b.value;
    names.push_back(b.name);
  }
  SEG_CHECK(false, type_name_, ": no buffer '", name, "' (has: ", join(names), ")");
  return Tensor();
}

std::shared_ptr<Module> Module::child(const std::string& name) const {
  std::vector<std::string> names;
  for (const auto& [n, m] : children_) {
    if (n == name) return m;
    names.push_back(n);
  }
  SEG_CHECK(false, type_name_, ": no child module '", name, "' (has: ", join(names), ")");
  return nullptr;
}

std::vector<std::pair<std::string, Module*>> Module::named_modules() {
  std::vector<std::pair<std::string, Module*>> out;
  std::unordered_set<const Module*> seen;
  collect_modules<Module>(this, "", &seen, &out);
  return out;
}

std::vector<std::pair<std::string, const Module*>> Module::named_modules() const {
  std::vector<std::pair<std::string, const Module*>> out;
  std::unordered_set<const Module*> seen;
  collect_modules<const Module>(this, "", &seen, &out);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_parameters(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;  // a shared parameter is listed once
  auto add = [&](const std::string& prefix, const Module& m) {
    for (const auto& [name, t] : m.parameters_) {
      if (seen.insert(t.impl()).second) out.emplace_back(dotted(prefix, name), t);
    }
  };
  if (!recurse) {
    add("", *this);
    return out;
  }
  for (const auto& [prefix, m] : named_modules()) add(prefix, *m);
  return out;
}

std::vector<Tensor> Module::parameters(bool recurse) const {
  std::vector<Tensor> out;
  for (auto& [name, t] : named_parameters(recurse)) out.push_back(t);
  return out;
}

std::vector<std::pair<std::string, Tensor>> Module::named_buffers(bool recurse) const {
  std::vector<std::pair<std::string, Tensor>> out;
  std::unordered_set<const TensorImpl*> seen;
  auto add = [&](const std::string& prefix, const Module& m) {
    for (const Buffer& b : m.buffers_) {
      if (seen.insert(b.value.impl()).second) out.emplace_back(dotted(prefix, b.name), b.value);
    }
  };
  if (!recurse) {
    add("", *this);
    return out;
  }
  for (const auto& [prefix, m] : named_modules()) add(prefix, *m);
  return out;
}

void Module::collect_state(const std::string& prefix, StateDict* out) const {
  for (const auto& [name, t] : parameters_) out->emplace_back(prefix + name, t.detach());
  for (const Buffer& b : buffers_) {
    if (b.persistent) out->emplace_back(prefix + b.name, b.value.detach());
  }
  for (const auto& [name, child] : children_) child->collect_state(prefix + name + ".", out);
}

StateDict Module::state_dict() const {
  StateDict out;
  collect_state("", &out);
  return out;
}

void Module::train(bool on) {
  training_ = on;
  for (auto& [name, child] : children_) child->train(on);
}

void Module::zero_grad() {
  for (Tensor& p : parameters()) p.zero_grad();
}

void Module::to(DType dtype) {
  SEG_CHECK(is_floating(dtype), type_name_, ": to(", dtype_name(dtype),
            "): parameters must stay floating");
  NoGradGuard no_grad;
  for (auto& [prefix, m] : named_modules()) {
    for (auto& [name, p] : m->parameters_) {
      if (p.dtype() != dtype) replace_data(p, p.detach().to(dtype).contiguous());
    }
    for (Buffer& b : m->buffers_) {
      if (is_floating(b.value.dtype()) && b.value.dtype() != dtype) {
        replace_data(b.value, b.value.detach().to(dtype).contiguous());
      }
    }
  }
}

void Module::to(Device device) {
  NoGradGuard no_grad;
  for (auto& [prefix, m] : named_modules()) {
    for (auto& [name, p] : m->parameters_) {
      if (p.device() != device) replace_data(p, p.detach().to(device));
    }
    for (Buffer& b : m->buffers_) {
      if (b.value.device() != device) replace_data(b.value, b.value.detach().to(device));
    }
  }
}

LoadReport Module::load_state_dict(const StateDict& dict, bool strict) {
  return load_into(*this, dict, strict, "");
}

void Module::save_state_dict(const std::filesystem::path& path,
                             const SafetensorsMetadata& metadata) const {
  save_safetensors(path, state_dict(), metadata);
}

LoadReport Module::load_state_dict_file(const std::filesystem::path& path, bool strict) {
  return load_into(*this, load_safetensors(path), strict, " from " + path.string());
}

}  // namespace seg::nn
