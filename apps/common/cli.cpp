#include "apps/common/cli.h"

#include <algorithm>
#include <cstdio>
#include <exception>

#include "engine/error.h"

namespace seg::app {

CommandLine::CommandLine(std::string program, std::string summary)
    : program_(std::move(program)), summary_(std::move(summary)) {}

CommandLine& CommandLine::option(const std::string& name, const std::string& value_name,
                                 const std::string& help, bool required) {
  specs_[name] = Spec{value_name, help, Spec::Kind::option, required};
  order_.push_back(name);
  return *this;
}

CommandLine& CommandLine::list(const std::string& name, const std::string& value_name,
                               const std::string& help) {
  specs_[name] = Spec{value_name, help, Spec::Kind::list, false};
  order_.push_back(name);
  return *this;
}

CommandLine& CommandLine::flag(const std::string& name, const std::string& help) {
  specs_[name] = Spec{"", help, Spec::Kind::flag, false};
  order_.push_back(name);
  return *this;
}

const CommandLine::Spec& CommandLine::spec(const std::string& name) const {
  auto it = specs_.find(name);
  SEG_CHECK(it != specs_.end(), program_, ": no option --", name, " is declared");
  return it->second;
}

std::string CommandLine::usage() const {
  std::string u = "usage: " + program_;
  for (const std::string& name : order_) {
    const Spec& s = specs_.at(name);
    std::string part = "--" + name + (s.kind == Spec::Kind::flag ? "" : " " + s.value_name);
    if (s.kind == Spec::Kind::list) part += " ...";
    u += s.required ? " " : " [";
    u += part;
    if (!s.required) u += "]";
  }
  u += "\n" + summary_ + "\n";
  for (const std::string& name : order_) {
    const Spec& s = specs_.at(name);
    std::string left = "  --" + name + (s.kind == Spec::Kind::flag ? "" : " " + s.value_name);
    left.resize(std::max<size_t>(left.size() + 2, 28), ' ');
    u += left + s.help + "\n";
  }
  return u;
}

void CommandLine::parse(int argc, const char* const* argv) {
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    if (arg == "--help" || arg == "-h") {
      std::fputs(usage().c_str(), stdout);
      throw HelpRequested{};
    }
    if (arg.rfind("--", 0) != 0 || arg.size() == 2) {
      throw Error("unexpected argument '" + arg + "'\n" + usage());
    }
    std::string name = arg.substr(2);
    std::optional<std::string> inline_value;
    if (const size_t eq = name.find('='); eq != std::string::npos) {
      inline_value = name.substr(eq + 1);
      name = name.substr(0, eq);
    }
    auto it = specs_.find(name);
    if (it == specs_.end()) throw Error("unknown option --" + name + "\n" + usage());
    const Spec& s = it->second;
    if (s.kind == Spec::Kind::flag) {
      if (inline_value) throw Error("option --" + name + " takes no value");
      if (values_.count(name)) throw Error("option --" + name + " is given twice");
      values_[name] = {};
      continue;
    }
    std::string v;
    if (inline_value) {
      v = *inline_value;
    } else {
      if (i + 1 >= argc) throw Error("option --" + name + " needs a value (" + s.value_name + ")");
      v = argv[++i];
    }
    if (s.kind == Spec::Kind::option && values_.count(name)) {
      throw Error("option --" + name + " is given twice");
    }
    values_[name].push_back(v);
  }
  for (const std::string& name : order_) {
    if (specs_.at(name).required && !values_.count(name)) {
      throw Error("option --" + name + " is required\n" + usage());
    }
  }
}

bool CommandLine::given(const std::string& name) const {
  spec(name);
  return values_.count(name) > 0;
}

std::string CommandLine::value(const std::string& name) const {
  std::optional<std::string> v = value_or_none(name);
  SEG_CHECK(v.has_value(), program_, ": option --", name, " is required here");
  return *v;
}

std::optional<std::string> CommandLine::value_or_none(const std::string& name) const {
  spec(name);
  auto it = values_.find(name);
  if (it == values_.end() || it->second.empty()) return std::nullopt;
  return it->second.front();
}

const std::vector<std::string>& CommandLine::values(const std::string& name) const {
  static const std::vector<std::string> kNone;
  spec(name);
  auto it = values_.find(name);
  return it == values_.end() ? kNone : it->second;
}

bool CommandLine::is_set(const std::string& name) const {
  return given(name);
}

Config load_config(const CommandLine& cli) {
  Config config = Config::load(cli.value("config"));
  for (const std::string& assignment : cli.values("set")) config.apply_override(assignment);
  return config;
}

int run_app(const char* program, const std::function<int()>& body) {
  try {
    return body();
  } catch (const HelpRequested&) {
    return 0;
  } catch (const std::exception& e) {
    std::fflush(stdout);
    std::fprintf(stderr, "%s: error: %s\n", program, e.what());
    return 1;
  }
}

}  // namespace seg::app
