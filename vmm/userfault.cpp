#include "vmm/userfault.hpp"

#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <map>
#include <sstream>
#include <thread>

#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

struct Range {
  std::uint64_t start = 0, end = 0;
};

// Mappings of `pid` registered with userfaultfd for write protection.
Result<std::vector<Range>> writeProtectedRanges(pid_t pid) {
  auto smaps = fs::readFile(cat("/proc/", pid, "/smaps"), 256u << 20);
  if (!smaps) return fail(smaps.error());
  std::vector<Range> out;
  Range current;
  std::istringstream in(*smaps);
  std::string line;
  while (std::getline(in, line)) {
    if (startsWith(line, "VmFlags:")) {
      if (current.end > current.start && (" " + line + " ").find(" uw ") != std::string::npos) out.push_back(current);
      continue;
    }
    // A mapping's first line: "START-END perms offset dev inode [path]".
    auto dash = line.find('-'), space = line.find(' ');
    if (dash == std::string::npos || space == std::string::npos || dash > space) continue;
    char* endp = nullptr;
    std::uint64_t start = std::strtoull(line.c_str(), &endp, 16);
    if (endp != line.c_str() + dash) continue;
    std::uint64_t end = std::strtoull(line.c_str() + dash + 1, &endp, 16);
    if (endp != line.c_str() + space) continue;
    current = {start, end};
  }
  return out;
}

// Descriptor numbers of `pid`'s userfaultfds.
std::vector<int> userfaultFds(pid_t pid) {
  const std::string dir = cat("/proc/", pid, "/fd");
  std::vector<int> out;
  for (const auto& n : fs::entriesWithPrefix(dir, "")) {
    if (n.empty() || n[0] < '0' || n[0] > '9') continue;
    char target[64] = {};
    ssize_t len = ::readlink(cat(dir, "/", n).c_str(), target, sizeof target - 1);
    if (len > 0 && std::string_view(target, static_cast<size_t>(len)) == "anon_inode:[userfaultfd]")
      out.push_back(std::atoi(n.c_str()));
  }
  return out;
}

}  // namespace

std::vector<std::string> threadsStuckInUserfault(pid_t pid) {
  const std::string tasks = cat("/proc/", pid, "/task");
  std::map<std::string, int> seen;
  constexpr int kLooks = 3;
  for (int look = 0; look < kLooks; ++look) {
    if (look > 0) std::this_thread::sleep_for(200ms);
    for (const auto& tid : fs::entriesWithPrefix(tasks, "")) {
      if (tid.empty() || tid[0] < '0' || tid[0] > '9') continue;
      auto wchan = fs::readFile(cat(tasks, "/", tid, "/wchan"), 256);
      if (wchan && trim(*wchan) == "handle_userfault") ++seen[tid];
    }
  }
  std::vector<std::string> stuck;
  for (const auto& [tid, n] : seen) {
    if (n < kLooks) continue;
    auto comm = fs::readFile(cat(tasks, "/", tid, "/comm"), 256);
    stuck.push_back(cat("thread ", comm ? std::string(trim(*comm)) : std::string("?"), " (", tid, ")"));
  }
  return stuck;
}

Result<int> releaseWriteProtection(pid_t pid) {
  auto ranges = writeProtectedRanges(pid);
  if (!ranges) return fail(ranges.error());
  if (ranges->empty()) return 0;
  UniqueFd pidfd(static_cast<int>(::syscall(SYS_pidfd_open, pid, 0)));
  if (!pidfd) return failErrno(cat("pidfd_open ", pid), errno);
  std::vector<UniqueFd> uffds;
  int lastErr = 0;
  for (int n : userfaultFds(pid)) {
    UniqueFd fd(static_cast<int>(::syscall(SYS_pidfd_getfd, pidfd.get(), n, 0)));
    if (fd) uffds.push_back(std::move(fd));
    else lastErr = errno;
  }
  if (uffds.empty())
    return lastErr ? failErrno(cat("pidfd_getfd of QEMU's userfaultfd (pid ", pid, ")"), lastErr)
                   : fail(Errc::notFound, cat("QEMU (pid ", pid, ") has write-protected RAM but no userfaultfd"));
  int freed = 0;
  for (const auto& r : *ranges) {
    for (const auto& fd : uffds) {  // the one it is registered with (QEMU may hold several)
      uffdio_writeprotect wp{};
      wp.range = {r.start, r.end - r.start};
      wp.mode = 0;  // no protection, and wake the threads waiting on it
      if (::ioctl(fd.get(), UFFDIO_WRITEPROTECT, &wp) != 0) {
        lastErr = errno;
        continue;
      }
      uffdio_range whole{r.start, r.end - r.start};
      (void)::ioctl(fd.get(), UFFDIO_UNREGISTER, &whole);
      ++freed;
      break;
    }
  }
  if (freed == 0) return failErrno("UFFDIO_WRITEPROTECT on QEMU's guest RAM", lastErr);
  return freed;
}

}  // namespace vmckpt::vmm
