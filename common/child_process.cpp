#include "common/child_process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/strings.hpp"

extern char** environ;

namespace vmckpt {
namespace {

int pidfdOpen(pid_t pid) {
#ifdef SYS_pidfd_open
  return static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
#else
  errno = ENOSYS;
  return -1;
#endif
}

ExitStatus fromWaitStatus(int ws) {
  ExitStatus s;
  if (WIFEXITED(ws)) s.code = WEXITSTATUS(ws);
  else if (WIFSIGNALED(ws)) s.signal = WTERMSIG(ws);
  return s;
}

// In the child after fork: only async-signal-safe calls until exec.
[[noreturn]] void childFail(int errFd, int err) {
  ssize_t ignored = ::write(errFd, &err, sizeof err);
  (void)ignored;
  ::_exit(127);
}

int openRedirect(const Redirect& r, int flags) {
  if (r.kind == Redirect::Kind::null) return ::open("/dev/null", flags);
  int extra = (flags & O_ACCMODE) == O_RDONLY ? 0 : (O_CREAT | (r.append ? O_APPEND : O_TRUNC));
  return ::open(r.path.c_str(), flags | extra | O_CLOEXEC, 0600);
}

}  // namespace

std::string ExitStatus::describe() const {
  if (signal != 0) {
    const char* name = sigabbrev_np(signal);
    return name ? cat("killed by SIG", name) : cat("killed by signal ", signal);
  }
  return cat("exit code ", code);
}

Result<std::string> findExecutable(const std::string& name) {
  if (name.empty()) return fail(Errc::invalidArgument, "empty program name");
  if (name.find('/') != std::string::npos) {
    if (::access(name.c_str(), X_OK) == 0) return name;
    return fail(Errc::notFound, cat(name, ": not found or not executable"));
  }
  const char* path = std::getenv("PATH");
  std::string p = path ? path : "/usr/local/bin:/usr/bin:/bin";
  for (const auto& dir : split(p, ':')) {
    std::string cand = (dir.empty() ? std::string(".") : dir) + "/" + name;
    struct stat st{};
    if (::stat(cand.c_str(), &st) == 0 && S_ISREG(st.st_mode) && ::access(cand.c_str(), X_OK) == 0)
      return cand;
  }
  return fail(Errc::notFound, cat(name, ": not found in PATH"));
}

Result<ChildProcess> ChildProcess::spawn(const SpawnOptions& opts) {
  if (opts.argv.empty()) return fail(Errc::internal, "spawn: empty argv");
  auto exe = findExecutable(opts.argv[0]);
  if (!exe) return fail(exe.error());

  // Prepare everything that allocates before fork().
  std::vector<char*> argv;
  for (const auto& a : opts.argv) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  std::vector<char*> envp;
  if (opts.env) {
    for (const auto& e : *opts.env) envp.push_back(const_cast<char*>(e.c_str()));
    envp.push_back(nullptr);
  }

  const Redirect* redirs[3] = {&opts.stdinFrom, &opts.stdoutTo, &opts.stderrTo};
  UniqueFd childEnd[3], parentEnd[3];
  for (int i = 0; i < 3; ++i) {
    const Redirect& r = *redirs[i];
    if (r.kind == Redirect::Kind::inherit) continue;
    if (r.kind == Redirect::Kind::pipe) {
      int p[2];
      if (::pipe2(p, O_CLOEXEC) != 0) return failErrno("pipe2", errno);
      // stdin: child reads p[0]; stdout/stderr: child writes p[1].
      childEnd[i].reset(i == 0 ? p[0] : p[1]);
      parentEnd[i].reset(i == 0 ? p[1] : p[0]);
      continue;
    }
    int fd = openRedirect(r, i == 0 ? O_RDONLY : O_WRONLY);
    if (fd < 0) return failErrno(cat("open ", r.kind == Redirect::Kind::null ? "/dev/null" : r.path), errno);
    childEnd[i].reset(fd);
  }

  int errPipe[2];
  if (::pipe2(errPipe, O_CLOEXEC) != 0) return failErrno("pipe2", errno);
  UniqueFd errRead(errPipe[0]), errWrite(errPipe[1]);

  pid_t pid = ::fork();
  if (pid < 0) return failErrno("fork", errno);
  if (pid == 0) {
    // Child.
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    for (int sig : {SIGPIPE, SIGINT, SIGTERM, SIGCHLD}) ::signal(sig, SIG_DFL);
    if (opts.newSession) ::setsid();
    if (opts.umask) ::umask(*opts.umask);
    for (int i = 0; i < 3; ++i) {
      if (childEnd[i].get() < 0) continue;
      if (::dup2(childEnd[i].get(), i) < 0) childFail(errWrite.get(), errno);
    }
    if (opts.env) ::execve(exe->c_str(), argv.data(), envp.data());
    else ::execve(exe->c_str(), argv.data(), environ);
    childFail(errWrite.get(), errno);
  }

  ChildProcess child;
  child.pid_ = pid;
  child.reaped_ = false;
  int pfd = pidfdOpen(pid);
  if (pfd >= 0) child.pidfd_.reset(pfd);
  errWrite.reset();
  for (auto& c : childEnd) c.reset();
  child.stdin_ = std::move(parentEnd[0]);
  child.stdout_ = std::move(parentEnd[1]);
  child.stderr_ = std::move(parentEnd[2]);

  int childErr = 0;
  ssize_t n;
  do {
    n = ::read(errRead.get(), &childErr, sizeof childErr);
  } while (n < 0 && errno == EINTR);
  if (n == static_cast<ssize_t>(sizeof childErr)) {
    child.kill();
    return fail(Error::fromErrno(cat("exec ", *exe), childErr).context("spawn"));
  }
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& o) noexcept
    : pid_(std::exchange(o.pid_, -1)),
      reaped_(std::exchange(o.reaped_, true)),
      pidfd_(std::move(o.pidfd_)),
      stdin_(std::move(o.stdin_)),
      stdout_(std::move(o.stdout_)),
      stderr_(std::move(o.stderr_)),
      status_(o.status_) {}

ChildProcess& ChildProcess::operator=(ChildProcess&& o) noexcept {
  if (this != &o) {
    reset();
    pid_ = std::exchange(o.pid_, -1);
    reaped_ = std::exchange(o.reaped_, true);
    pidfd_ = std::move(o.pidfd_);
    stdin_ = std::move(o.stdin_);
    stdout_ = std::move(o.stdout_);
    stderr_ = std::move(o.stderr_);
    status_ = o.status_;
  }
  return *this;
}

ChildProcess::~ChildProcess() { reset(); }

void ChildProcess::reset() {
  if (!reaped_) kill();
  pidfd_.reset();
  stdin_.reset();
  stdout_.reset();
  stderr_.reset();
}

Result<ExitStatus> ChildProcess::wait(Deadline deadline) {
  if (reaped_) {
    if (status_) return *status_;
    return fail(Errc::internal, "wait on a process that was never started");
  }
  for (;;) {
    int ws = 0;
    pid_t r = ::waitpid(pid_, &ws, WNOHANG);
    if (r == pid_) {
      reaped_ = true;
      status_ = fromWaitStatus(ws);
      return *status_;
    }
    if (r < 0 && errno != EINTR) return failErrno(cat("waitpid ", pid_), errno);
    if (deadline.expired()) return fail(Errc::timeout, cat("process ", pid_, " still running at deadline"));
    if (pidfd_) {
      pollfd p{pidfd_.get(), POLLIN, 0};
      ::poll(&p, 1, deadline.pollTimeoutMs());
    } else {
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
  }
}

bool ChildProcess::running() {
  if (reaped_) return false;
  auto r = wait(Deadline::in(std::chrono::milliseconds(0)));
  return !r.has_value();
}

void ChildProcess::signal(int sig) {
  if (reaped_) return;
#ifdef SYS_pidfd_send_signal
  if (pidfd_ && ::syscall(SYS_pidfd_send_signal, pidfd_.get(), sig, nullptr, 0) == 0) return;
#endif
  ::kill(pid_, sig);
}

void ChildProcess::kill() {
  if (reaped_) return;
  signal(SIGKILL);
  int ws = 0;
  while (::waitpid(pid_, &ws, 0) < 0 && errno == EINTR) {
  }
  reaped_ = true;
  status_ = fromWaitStatus(ws);
}

Result<CommandOutput> runCommand(const std::vector<std::string>& argv, Deadline deadline,
                                 const std::optional<std::vector<std::string>>& env,
                                 const std::string& input, size_t maxBytes) {
  SpawnOptions opts;
  opts.argv = argv;
  opts.env = env;
  opts.stdinFrom = input.empty() ? Redirect::null() : Redirect::pipe();
  opts.stdoutTo = Redirect::pipe();
  opts.stderrTo = Redirect::pipe();
  auto child = ChildProcess::spawn(opts);
  if (!child) return fail(child.error());

  UniqueFd in = child->takeStdin();
  size_t inOff = 0;
  if (in) ::fcntl(in.get(), F_SETFL, O_NONBLOCK);
  CommandOutput result;
  std::string* bufs[2] = {&result.out, &result.err};
  int fds[2] = {child->stdoutFd(), child->stderrFd()};
  bool open[2] = {true, true};
  while (open[0] || open[1] || in) {
    pollfd p[3];
    int n = 0;
    int map[3];
    for (int i = 0; i < 2; ++i)
      if (open[i]) { p[n] = {fds[i], POLLIN, 0}; map[n++] = i; }
    if (in) { p[n] = {in.get(), POLLOUT, 0}; map[n++] = 2; }
    int r = ::poll(p, static_cast<nfds_t>(n), deadline.pollTimeoutMs());
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) return failErrno("poll", errno);
    if (r == 0) {
      child->kill();
      return fail(Errc::timeout, cat(argv[0], ": did not finish in time"));
    }
    for (int k = 0; k < n; ++k) {
      if (!p[k].revents) continue;
      if (map[k] == 2) {
        // The CLI and tests ignore SIGPIPE, so a child that exits early gives EPIPE here.
        ssize_t w = ::write(in.get(), input.data() + inOff, input.size() - inOff);
        if (w > 0) inOff += static_cast<size_t>(w);
        if (w < 0 && errno != EAGAIN && errno != EINTR) in.reset();
        if (inOff >= input.size()) in.reset();
        continue;
      }
      int i = map[k];
      char buf[65536];
      ssize_t got = ::read(fds[i], buf, sizeof buf);
      if (got > 0) {
        size_t room = maxBytes > bufs[i]->size() ? maxBytes - bufs[i]->size() : 0;
        bufs[i]->append(buf, std::min(room, static_cast<size_t>(got)));
      } else if (got == 0 || (errno != EINTR && errno != EAGAIN)) {
        open[i] = false;
      }
    }
  }
  auto st = child->wait(deadline);
  if (!st) {
    child->kill();
    return fail(Errc::timeout, cat(argv[0], ": did not exit in time"));
  }
  result.status = *st;
  return result;
}

}  // namespace vmckpt
