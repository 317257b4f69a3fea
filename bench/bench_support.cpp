#include "bench/bench_support.hpp"

#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <csignal>
#include <cstring>
#include <thread>

#include "common/fs.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::bench {

using namespace std::chrono_literals;

void raise(const std::string& msg) { throw BenchError(msg); }

void check(Status s, const std::string& what) {
  if (!s) raise(cat(what, ": ", s.error().message()));
}

namespace {
volatile std::sig_atomic_t gStopSignal = 0;
void onStopSignal(int sig) { gStopSignal = sig; }
}  // namespace

void installStopHandlers() {
  struct sigaction sa{};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM}) ::sigaction(sig, &sa, nullptr);
}

int stopSignal() { return gStopSignal; }

void raiseIfStopped() {
  if (int sig = gStopSignal) raise(cat("stopped by SIG", sigabbrev_np(sig) ? sigabbrev_np(sig) : std::to_string(sig).c_str()));
}

double msSince(Clock::time_point t0) { return std::chrono::duration<double, std::milli>(Clock::now() - t0).count(); }

Json stats(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  double median = v.size() % 2 ? v[v.size() / 2] : (v[v.size() / 2 - 1] + v[v.size() / 2]) / 2;
  return {{"median", median}, {"min", v.front()}, {"max", v.back()}, {"runs", v}};
}

std::string Console::text() const {
  auto t = fs::readFile(p_.serialLog, 256 << 20);
  return t ? *t : std::string();
}

std::string Console::textFrom(size_t from) const {
  UniqueFd fd(::open(p_.serialLog.c_str(), O_RDONLY | O_CLOEXEC));
  std::string out;
  if (!fd) return out;
  char buf[65536];
  for (off_t at = static_cast<off_t>(from);;) {
    ssize_t n = ::pread(fd.get(), buf, sizeof buf, at);
    if (n <= 0) break;
    out.append(buf, static_cast<size_t>(n));
    at += n;
  }
  return out;
}

size_t Console::size() const {
  struct stat st{};
  return ::stat(p_.serialLog.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

size_t Console::waitForEither(const std::string& want, const std::string& failure, size_t from,
                              std::chrono::seconds timeout) const {
  // images/test-guest/init: "vmckpt-test-guest: workload memtest exited with status 137"
  // (the guest's OOM killer, say): nothing the bench waits for comes after it.
  static const std::string kWorkloadGone = "workload memtest exited";
  auto deadline = Clock::now() + timeout;
  for (;;) {
    raiseIfStopped();
    // Only what came after `from`: the log grows by a line a second for the whole run.
    std::string c = textFrom(from);
    if (auto pos = c.find(want); pos != std::string::npos) return from + pos + want.size();
    for (const std::string* bad : {&failure, &kWorkloadGone}) {
      if (bad->empty()) continue;
      if (auto pos = c.find(*bad); pos != std::string::npos) {
        auto end = c.find('\n', pos);
        raise(cat("guest reported: ", c.substr(pos, end == std::string::npos ? std::string::npos : end - pos)));
      }
    }
    if (Clock::now() >= deadline) break;
    std::this_thread::sleep_for(50ms);
  }
  raise(cat("guest did not print '", want, "' within ", timeout.count(), " s (", p_.serialLog, ")"));
}

size_t Console::waitFor(const std::string& want, size_t from, std::chrono::seconds timeout) const {
  return waitForEither(want, "", from, timeout);
}

void Console::send(const std::string& line) const {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::strncpy(addr.sun_path, p_.console.c_str(), sizeof addr.sun_path - 1);
  if (::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0)
    raise(cat("cannot connect to the guest console ", p_.console, ": ", std::strerror(errno)));
  std::string data = line + "\n";
  if (::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL) != static_cast<ssize_t>(data.size()))
    raise(cat("cannot write to the guest console: ", std::strerror(errno)));
  // QEMU reads the socket asynchronously; closing at once can drop the line.
  std::this_thread::sleep_for(100ms);
}

void Console::verifyMemory(std::chrono::seconds timeout) const {
  size_t at = size();
  send("verify");
  waitForEither("verify ok", "verify FAILED", at, timeout);
}

void Console::dirty(std::uint64_t mib, std::chrono::seconds timeout) const {
  size_t at = size();
  send(cat("dirty ", mib));
  waitFor("memtest: dirtied", at, timeout);
}

DiskMeter::DiskMeter(std::string device) : device_(std::move(device)) {
  std::string name = device_.substr(device_.rfind('/') + 1);
  statPath_ = cat("/sys/block/", name, "/stat");
}

std::uint64_t DiskMeter::bytesWritten() const {
  auto t = fs::readFile(statPath_, 4096);
  if (!t) raise(cat("cannot read ", statPath_, ": ", t.error().message()));
  // Fields: reads, merges, sectors read, ms, writes, merges, sectors written, ...
  auto fields = split(std::string(trim(*t)), ' ');
  std::vector<std::string> f;
  for (auto& s : fields)
    if (!s.empty()) f.push_back(s);
  if (f.size() < 7) raise(cat("unexpected format of ", statPath_));
  return std::stoull(f[6]) * 512;
}

void syncFs(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd || ::syncfs(fd.get()) != 0) raise(cat("syncfs ", path, ": ", std::strerror(errno)));
}

std::uint64_t allocatedBytes(const std::string& path) {
  struct stat st{};
  if (::stat(path.c_str(), &st) != 0) raise(cat("stat ", path, ": ", std::strerror(errno)));
  return static_cast<std::uint64_t>(st.st_blocks) * 512;
}

}  // namespace vmckpt::bench
