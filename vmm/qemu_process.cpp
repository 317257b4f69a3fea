#include "vmm/qemu_process.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm {

Result<std::string> findQemu() {
  const char* env = std::getenv("VMCKPT_QEMU");
  std::string name = env && *env ? env : "qemu-system-x86_64";
  auto exe = findExecutable(name);
  if (!exe) {
    return fail(Errc::notFound, cat(exe.error().message(), "; install qemu-system-x86 (Debian) or set VMCKPT_QEMU"));
  }
  return exe;
}

PidCheck checkPidFile(const VmPaths& paths) {
  auto text = fs::readFile(paths.pidFile, 64);
  if (!text) return {PidState::none, 0};
  std::string_view t = trim(*text);
  long pid = 0;
  for (char c : t) {
    if (c < '0' || c > '9' || pid > 1 << 30) return {PidState::stale, 0};
    pid = pid * 10 + (c - '0');
  }
  if (pid <= 1) return {PidState::stale, 0};
  auto cmdline = fs::readFile(cat("/proc/", pid, "/cmdline"), 1 << 20);
  if (!cmdline) return {PidState::stale, static_cast<pid_t>(pid)};
  // Identity: QEMU's own argv has "-pidfile\0<our pid file>\0".
  std::string needle = cat("-pidfile", std::string(1, '\0'), paths.pidFile, std::string(1, '\0'));
  if (cmdline->find(needle) == std::string::npos) return {PidState::stale, static_cast<pid_t>(pid)};
  // A zombie is as good as gone.
  if (auto st = fs::readFile(cat("/proc/", pid, "/stat"), 4096)) {
    auto close = st->rfind(')');
    if (close != std::string::npos && close + 2 < st->size() && (*st)[close + 2] == 'Z')
      return {PidState::stale, static_cast<pid_t>(pid)};
  }
  return {PidState::alive, static_cast<pid_t>(pid)};
}

std::string lastLogLine(const std::string& path) {
  auto text = fs::readFile(path, 1 << 20);
  if (!text) return {};
  std::string_view t = trim(*text);
  auto nl = t.rfind('\n');
  return std::string(trim(nl == std::string_view::npos ? t : t.substr(nl + 1)));
}

std::string qemuErrorLine(const std::string& path) {
  auto text = fs::readFile(path, 1 << 20);
  if (!text) return {};
  std::string found;
  for (const auto& raw : split(*text, '\n')) {
    std::string_view line = trim(raw);
    if (!startsWith(line, "qemu-system-")) continue;
    auto colon = line.find(": ");
    if (colon != std::string_view::npos) found = std::string(line.substr(colon + 2));
  }
  return found.empty() ? lastLogLine(path) : found;
}

Result<pid_t> launchQemu(const std::vector<std::string>& argv, const VmPaths& paths, Deadline deadline) {
  if (log::enabled(log::Level::debug)) {
    std::string line;
    for (const auto& a : argv) line += " " + shellQuote(a);
    log::debug("launching:", line);
  }
  auto child = ChildProcess::spawn({
      .argv = argv,
      .stdoutTo = Redirect::toFile(paths.qemuLog, true),
      .stderrTo = Redirect::toFile(paths.qemuLog, true),
      .umask = 0177,  // pid file, logs, RAM file and sockets: 0600
      .newSession = true,
  });
  if (!child) return fail(child.error().context("start QEMU"));
  auto st = child->wait(deadline);
  if (!st) {
    child->kill();
    return fail(Errc::timeout, "QEMU did not finish initializing in time");
  }
  if (!st->success()) {
    std::string why = qemuErrorLine(paths.qemuLog);
    return fail(Errc::processFailed, cat("QEMU failed to start (", st->describe(), "): ", why.empty() ? "no message" : why));
  }
  PidCheck pc = checkPidFile(paths);
  if (pc.state != PidState::alive) {
    std::string why = qemuErrorLine(paths.qemuLog);
    return fail(Errc::processFailed, cat("QEMU exited right after starting: ", why.empty() ? "no message" : why));
  }
  return pc.pid;
}

bool waitForExit(pid_t pid, Deadline deadline) {
  UniqueFd pfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pfd) return errno == ESRCH;
  for (;;) {
    pollfd p{pfd.get(), POLLIN, 0};
    int r = ::poll(&p, 1, deadline.pollTimeoutMs());
    if (r > 0) return true;
    if (r == 0) return false;
    if (errno != EINTR) return false;
  }
}

void killOrphanQemu(const std::string& dir) {
  PidCheck pc = checkPidFile(VmPaths(dir));
  if (pc.state != PidState::alive) return;
  if (auto s = killQemu(pc.pid, Deadline::in(std::chrono::seconds(5))); !s) log::warn("orphan QEMU of ", dir, ": ", s.error().message());
}

Status killQemu(pid_t pid, Deadline deadline) {
  if (::kill(pid, SIGKILL) != 0 && errno != ESRCH) return failErrno(cat("kill ", pid), errno);
  if (!waitForExit(pid, deadline)) return fail(Errc::timeout, cat("QEMU pid ", pid, " did not exit after SIGKILL"));
  return {};
}

void cleanRunFiles(const VmPaths& paths) {
  for (const auto& f : {paths.pidFile, paths.qmpSocket, paths.agentSocket, paths.console}) (void)fs::removeFile(f);
}

}  // namespace vmckpt::vmm
