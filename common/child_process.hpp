// A child process owned by the parent: tracked through a pidfd, killed (SIGKILL) and
// reaped when the object is dropped while it still runs.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt {

// Where one of the child's standard streams goes.
struct Redirect {
  enum class Kind { inherit, null, file, pipe };
  Kind kind = Kind::inherit;
  std::string path;     // for file
  bool append = false;  // for file

  static Redirect inherit() { return {}; }
  static Redirect null() { return {Kind::null, {}, false}; }
  static Redirect toFile(std::string p, bool append = false) { return {Kind::file, std::move(p), append}; }
  static Redirect pipe() { return {Kind::pipe, {}, false}; }
};

struct SpawnOptions {
  std::vector<std::string> argv;  // argv[0] is resolved through PATH when it has no '/'
  std::optional<std::vector<std::string>> env;  // replaces the environment when set
  Redirect stdinFrom = Redirect::null();
  Redirect stdoutTo = Redirect::inherit();
  Redirect stderrTo = Redirect::inherit();
  std::optional<mode_t> umask;
  bool newSession = false;  // setsid(): detach from our terminal and signals
};

// How a process ended.
struct ExitStatus {
  int code = -1;    // exit code when exited
  int signal = 0;   // terminating signal when killed
  bool exited() const { return signal == 0; }
  bool success() const { return signal == 0 && code == 0; }
  std::string describe() const;  // "exit code 1" / "killed by SIGKILL"
};

class ChildProcess {
 public:
  static Result<ChildProcess> spawn(const SpawnOptions& opts);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ChildProcess(const ChildProcess&) = delete;
  ChildProcess& operator=(const ChildProcess&) = delete;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  // Pipe ends for streams redirected with Redirect::pipe(); -1 otherwise.
  int stdinFd() const { return stdin_.get(); }
  int stdoutFd() const { return stdout_.get(); }
  int stderrFd() const { return stderr_.get(); }
  UniqueFd takeStdin() { return std::move(stdin_); }

  // Waits until the process ends or the deadline passes (Errc::timeout).
  Result<ExitStatus> wait(Deadline deadline);
  bool running();
  void signal(int sig);
  // SIGKILL and reap; safe to call on an already reaped process.
  void kill();

 private:
  ChildProcess() = default;
  void reset();
  pid_t pid_ = -1;
  bool reaped_ = true;
  UniqueFd pidfd_;
  UniqueFd stdin_, stdout_, stderr_;
  std::optional<ExitStatus> status_;
};

// Looks a program up in $PATH; names with a '/' are returned when executable.
Result<std::string> findExecutable(const std::string& name);

struct CommandOutput {
  ExitStatus status;
  std::string out;
  std::string err;
};

// Runs a command to completion, capturing stdout and stderr (each capped at maxBytes),
// feeding `input` on stdin. Kills it and fails with Errc::timeout at the deadline.
Result<CommandOutput> runCommand(const std::vector<std::string>& argv, Deadline deadline,
                                 const std::optional<std::vector<std::string>>& env = std::nullopt,
                                 const std::string& input = {}, size_t maxBytes = 16 << 20);

}  // namespace vmckpt
