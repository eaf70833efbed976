#include "tests/support/app_runner.h"

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <fstream>
#include <stdexcept>

namespace seg::test {

AppResult run_app(const std::vector<std::string>& args, const std::string& kill_after) {
  int fds[2];
  if (pipe(fds) != 0) throw std::runtime_error("run_app: pipe failed");
  const pid_t pid = fork();
  if (pid < 0) throw std::runtime_error("run_app: fork failed");
  if (pid == 0) {
    dup2(fds[1], 1);
    dup2(fds[1], 2);
    close(fds[0]);
    close(fds[1]);
    std::vector<char*> argv;
    const std::string program = std::string(SEG_APPS_DIR) + "/" + args[0];
    argv.push_back(const_cast<char*>(program.c_str()));
    for (size_t i = 1; i < args.size(); ++i) argv.push_back(const_cast<char*>(args[i].c_str()));
    argv.push_back(nullptr);
    execv(program.c_str(), argv.data());
    _exit(127);
  }
  close(fds[1]);
  AppResult r;
  std::string line;
  bool killed = false;
  char c;
  while (read(fds[0], &c, 1) == 1) {
    r.output += c;
    if (c != '\n') {
      line += c;
      continue;
    }
    if (!kill_after.empty() && !killed && line.find(kill_after) != std::string::npos) {
      kill(pid, SIGTERM);
      killed = true;
    }
    line.clear();
  }
  close(fds[0]);
  int status = 0;
  waitpid(pid, &status, 0);
  r.status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return r;
}

std::vector<nlohmann::json> run_metrics(const std::filesystem::path& run_dir,
                                        const std::string& type) {
  std::ifstream in(run_dir / "metrics.jsonl");
  std::vector<nlohmann::json> out;
  std::string line;
  while (std::getline(in, line)) {
    nlohmann::json j = nlohmann::json::parse(line);
    if (j["type"] == type) out.push_back(j);
  }
  return out;
}

}  // namespace seg::test
