// The command line shared by the apps: `APP --config FILE [--data ROOT] [--run DIR] [--set k=v
// ...]` plus the options each app declares (--resume, --checkpoint, --split, --out, ...).
//
// Options take their value as the next argument or after '=' (--run=runs/a). An option given twice
// (other than a list), an unknown option, a missing value or a missing required option is an error
// that names it and prints the usage. --help prints the usage and the option list.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "apps/common/config.h"

namespace seg::app {

// Thrown by CommandLine::parse for --help, after printing the usage: the app exits with 0.
struct HelpRequested {};

class CommandLine {
 public:
  CommandLine(std::string program, std::string summary);

  // --name VALUE, at most once.
  CommandLine& option(const std::string& name, const std::string& value_name,
                      const std::string& help, bool required = false);
  // --name VALUE, any number of times, in order.
  CommandLine& list(const std::string& name, const std::string& value_name,
                    const std::string& help);
  // --name, no value.
  CommandLine& flag(const std::string& name, const std::string& help);

  void parse(int argc, const char* const* argv);

  bool given(const std::string& name) const;
  std::string value(const std::string& name) const;  // the option's value; error when absent
  std::optional<std::string> value_or_none(const std::string& name) const;
  const std::vector<std::string>& values(const std::string& name) const;  // a list option
  bool is_set(const std::string& name) const;                             // a flag

  std::string usage() const;

 private:
  struct Spec {
    std::string value_name, help;
    enum class Kind { option, list, flag } kind = Kind::option;
    bool required = false;
  };
  const Spec& spec(const std::string& name) const;

  std::string program_, summary_;
  std::vector<std::string> order_;
  std::map<std::string, Spec> specs_;
  std::map<std::string, std::vector<std::string>> values_;
};

// The app's config: --config's file with every --set applied in order.
Config load_config(const CommandLine& cli);

// Runs `body` and turns what it throws into an exit status: 0 after --help, 1 after printing
// "error: <message>" on stderr.
int run_app(const char* program, const std::function<int()>& body);

}  // namespace seg::app
