#include "release.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <utility>
#include <vector>

#include "drain.hpp"
#include "gate.hpp"
#include "real.hpp"

namespace vmckpt::ib {
namespace {

// The application's fd numbers of the device and the channels, with their O_NONBLOCK.
std::vector<std::pair<int, int>> visibleNumbers(const Objects& o, const ShadowContext& c) {
  std::vector<int> fds = {c.vctx.context.cmd_fd, c.vctx.context.async_fd};
  for (const ShadowChannel* ch : o.channels) fds.push_back(ch->pub.fd);
  std::vector<std::pair<int, int>> out;
  for (int fd : fds) {
    const int flags = fd >= 0 ? ::fcntl(fd, F_GETFL) : -1;
    if (flags != -1) out.emplace_back(fd, flags & O_NONBLOCK);
  }
  return out;
}

bool owns(const Objects& o, int fd) {
  return std::find(o.owned_numbers.begin(), o.owned_numbers.end(), fd) != o.owned_numbers.end();
}

// An eventfd (never signalled, blocking as the file it stands for was) on `fd`'s number:
// one the release just closed, or a copy of ours that still refers to the old device
// (replaced atomically). Left alone when something else took the number meanwhile.
void holdNumber(Objects& o, int fd, int nonblock) {
  if (fd < 0) return;
  const bool ours = owns(o, fd);
  if (!ours && ::fcntl(fd, F_GETFD) != -1) return;
  const int e = ::eventfd(0, EFD_CLOEXEC | (nonblock != 0 ? EFD_NONBLOCK : 0));
  if (e < 0) return;
  if (e != fd) {
    const bool held = ::dup3(e, fd, O_CLOEXEC) == fd;
    ::close(e);
    if (!held) return;
  }
  if (!ours) o.owned_numbers.push_back(fd);
}

}  // namespace

std::string rebuildRefusal(const Objects& o) {
  if (o.contexts.size() > 1) return "rebuilding a process with several devices open is not supported";
  for (const ShadowQp* q : o.qps)
    if (q->history_overflow)
      return "QP " + std::to_string(q->pub.qp_num) + " was modified more than " + std::to_string(kMaxQpModifies) +
             " times without a reset; its state cannot be replayed";
  return "";
}

bool lastPollIntoBacklogs(Objects& o) {
  bool ok = true;
  for (ShadowCq* q : o.cqs)
    if (q->real != nullptr && pollIntoBacklog(*q) < 0) ok = false;
  return ok;
}

void releaseObjects(Objects& o, ShadowContext& c) {
  auto drop = [](auto* shadow, auto destroy) {
    if (shadow->real != nullptr) destroy(shadow->real);
    shadow->real = nullptr;
  };
  for (ShadowAh* a : o.ahs) drop(a, real().destroy_ah);
  for (ShadowQp* q : o.qps) drop(q, real().destroy_qp);
  for (ShadowSrq* q : o.srqs) drop(q, real().destroy_srq);
  for (ShadowMr* m : o.mrs) drop(m, real().dereg_mr);
  // ibv_destroy_cq waits until every event the CQ reported is acked: the ones the
  // application holds unacked are acked here and its later acks swallowed.
  for (ShadowCq* q : o.cqs) {
    if (q->real == nullptr) continue;
    if (unsigned held = q->unacked_events.exchange(0); held > 0) {
      real().ack_cq_events(q->real, held);
      q->synthetic_events.fetch_add(held);
    }
    drop(q, real().destroy_cq);
  }
  for (ShadowChannel* ch : o.channels) drop(ch, real().destroy_comp_channel);
  for (ShadowPd* p : o.pds) drop(p, real().dealloc_pd);
  if (c.real != nullptr) real().close_device(c.real);
  c.real = nullptr;
}

int keepFdNumber(Objects& o, int visible, int fresh) {
  if (visible == fresh || visible < 0) return fresh;
  const bool ours = owns(o, visible);
  if (!ours && ::fcntl(visible, F_GETFD) != -1) return fresh;  // in use: never clobber it
  // dup3 replaces a copy of ours atomically: the number is never free in between.
  if (::dup3(fresh, visible, O_CLOEXEC) != visible) return fresh;
  if (!ours) o.owned_numbers.push_back(visible);
  return visible;
}

std::string releaseDevice() {
  RebuildGateClosed closed;
  if (!closed.ok) return "a poll did not return within 4 s";
  Objects& o = objects();
  std::lock_guard lock(o.mutex);
  if (o.released.load()) return "";
  if (o.contexts.empty()) return "";
  if (std::string e = rebuildRefusal(o); !e.empty()) return e;
  ShadowContext& c = *o.contexts.front();
  if (!lastPollIntoBacklogs(o)) return "the last poll of a CQ failed";
  const auto numbers = visibleNumbers(o, c);
  releaseObjects(o, c);
  for (const auto& [fd, nonblock] : numbers) holdNumber(o, fd, nonblock);
  o.released.store(true);
  return "";
}

std::string deviceFdStillOpen() {
  DIR* d = ::opendir("/proc/self/fd");
  if (d == nullptr) return "";
  std::string found;
  while (dirent* e = ::readdir(d)) {
    if (e->d_name[0] == '.') continue;
    char target[256];
    const ssize_t n = ::readlinkat(::dirfd(d), e->d_name, target, sizeof target - 1);
    if (n <= 0) continue;
    target[n] = '\0';
    if (std::strncmp(target, "/dev/infiniband/", 16) == 0) {
      found = std::string("fd ") + e->d_name + " (" + target + ")";
      break;
    }
  }
  ::closedir(d);
  return found;
}

}  // namespace vmckpt::ib
