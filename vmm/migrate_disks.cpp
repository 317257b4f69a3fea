#include "vmm/migrate_disks.hpp"

#include <chrono>
#include <thread>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/tcp.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;
using qmp::Json;

constexpr const char* kNbdFdName = "vmckpt-nbd";
constexpr auto kMirrorPollInterval = 200ms;
constexpr auto kRemoveTimeout = 10s;

std::string diskNode(std::size_t i) { return cat("disk", i); }  // as qemu_command.cpp names them
std::string targetNode(std::size_t i) { return cat("mirror-tgt", i); }
std::string jobId(std::size_t i) { return cat("vmckpt-mirror-", i); }

// QEMU's entry for job `id` in a query-block-jobs reply, or null.
const Json* findJob(const Json& jobs, const std::string& id) {
  if (!jobs.is_array()) return nullptr;
  for (const auto& j : jobs)
    if (qmp::stringField(j, "device") == id) return &j;
  return nullptr;
}

bool isReady(const Json& job) {
  auto it = job.find("ready");
  return it != job.end() && it->is_boolean() && it->get<bool>();
}

// How job `id` ended, from its queued BLOCK_JOB_COMPLETED/CANCELLED event: empty when it
// completed without error.
std::string jobOutcome(qmp::Client& c, const std::string& id) {
  auto ev = c.waitEvent(
      [&](const qmp::Event& e) {
        return (e.name == "BLOCK_JOB_COMPLETED" || e.name == "BLOCK_JOB_CANCELLED") && qmp::stringField(e.data, "device") == id;
      },
      Deadline::in(1s));
  if (!ev) return "no word from QEMU on how it ended";
  if (ev->name == "BLOCK_JOB_CANCELLED") return "cancelled before it was in sync";
  return qmp::stringField(ev->data, "error");
}

// Sleeps one poll interval in steps, so that `interrupt` is seen within 50 ms.
Status pause(const std::function<Status()>& interrupt) {
  for (auto end = std::chrono::steady_clock::now() + kMirrorPollInterval; std::chrono::steady_clock::now() < end;) {
    if (interrupt) VMCKPT_TRY(interrupt());
    std::this_thread::sleep_for(50ms);
  }
  return {};
}

}  // namespace

Result<std::uint16_t> exportDisksForMigration(qmp::Client& c, const std::string& host, std::size_t diskCount) {
  auto listener = tcp::Listener::open({host, 0});
  if (!listener) return fail(listener.error().context("NBD socket for the disks"));
  auto bound = tcp::parseEndpoint(listener->address(), false);
  if (!bound) return fail(bound.error().context("NBD socket for the disks"));
  const int fd = listener->fd();
  if (auto r = c.execute("getfd", {{"fdname", kNbdFdName}}, Deadline::in(5s), std::span<const int>(&fd, 1)); !r)
    return fail(r.error().context("getfd for the NBD server"));
  // nbd-server-start takes the legacy SocketAddress, with the variant under "data".
  Json addr = {{"type", "fd"}, {"data", {{"str", kNbdFdName}}}};
  if (auto r = c.execute("nbd-server-start", {{"addr", addr}, {"max-connections", diskCount}}); !r)
    return fail(r.error().context("nbd-server-start"));
  for (std::size_t i = 0; i < diskCount; ++i) {
    Json exp = {{"type", "nbd"}, {"id", diskNode(i)}, {"node-name", diskNode(i)}, {"writable", true}};
    if (auto r = c.execute("block-export-add", exp); !r) return fail(r.error().context(cat("block-export-add ", diskNode(i))));
  }
  return bound->port;  // QEMU has its own copy of the socket; ours closes here
}

Status stopDiskExports(qmp::Client& c) {
  if (auto r = c.execute("nbd-server-stop"); !r) return fail(r.error().context("nbd-server-stop"));
  return {};
}

Status DiskMirrors::start(qmp::Client& c, std::size_t diskCount, const std::string& host, std::uint16_t port) {
  for (std::size_t i = 0; i < diskCount; ++i) {
    Json target = {{"driver", "nbd"},
                   {"node-name", targetNode(i)},
                   {"server", {{"type", "inet"}, {"host", host}, {"port", std::to_string(port)}}},
                   {"export", diskNode(i)}};
    if (auto r = c.execute("blockdev-add", target, Deadline::in(30s)); !r)
      return fail(r.error().context(cat("connecting disk", i, " to the receiver's NBD export")));
    ++nodes_;
    Json mirror = {{"job-id", jobId(i)},  {"device", diskNode(i)},         {"target", targetNode(i)},
                   {"sync", "full"},      {"copy-mode", "write-blocking"}};
    if (auto r = c.execute("blockdev-mirror", mirror); !r) return fail(r.error().context(cat("blockdev-mirror disk", i)));
    ++jobs_;
  }
  return {};
}

Status DiskMirrors::waitReady(qmp::Client& c, Deadline deadline, const std::function<Status()>& interrupt,
                              const Progress& progress) {
  for (;;) {
    auto q = c.execute("query-block-jobs");
    if (!q) return fail(q.error().context("query-block-jobs"));
    std::uint64_t copied = 0, total = 0;
    std::size_t ready = 0;
    for (std::size_t i = 0; i < jobs_; ++i) {
      const Json* job = findJob(*q, jobId(i));
      if (!job) {
        std::string why = jobOutcome(c, jobId(i));
        return fail(Errc::processFailed, cat("the mirror of disk", i, " ended before it was in sync",
                                             why.empty() ? std::string() : cat(": ", why)));
      }
      long long offset = qmp::intField(*job, "offset"), len = qmp::intField(*job, "len");
      copied += offset > 0 ? static_cast<std::uint64_t>(offset) : 0;
      total += len > 0 ? static_cast<std::uint64_t>(len) : 0;
      if (isReady(*job)) ++ready;
    }
    if (progress) progress(copied, total);
    if (ready == jobs_) return {};
    if (deadline.expired())
      return fail(Errc::timeout, cat("the disks were not in sync in time (", formatSize(total > copied ? total - copied : 0),
                                     " left to copy)"));
    VMCKPT_TRY(pause(interrupt));
  }
}

Status DiskMirrors::finish(qmp::Client& c, Deadline deadline) {
  const std::size_t jobs = jobs_;
  VMCKPT_TRY(removeAll(c, false, deadline));
  for (std::size_t i = 0; i < jobs; ++i)
    if (std::string why = jobOutcome(c, jobId(i)); !why.empty())
      return fail(Errc::processFailed, cat("the mirror of disk", i, " did not end in sync: ", why));
  return {};
}

void DiskMirrors::abandon(qmp::Client& c) {
  if (empty()) return;
  if (auto s = removeAll(c, true, Deadline::in(kRemoveTimeout)); !s)
    log::error("could not remove the disk mirrors of the failed migration: ", s.error().message());
}

void DiskMirrors::removeLeftovers(qmp::Client& c, std::size_t diskCount) {
  DiskMirrors m;
  m.jobs_ = diskCount;
  if (auto s = m.removeAll(c, true, Deadline::in(kRemoveTimeout)); !s)
    log::error("could not remove the disk mirrors of the interrupted migration: ", s.error().message());
  for (std::size_t i = 0; i < diskCount; ++i) (void)c.execute("blockdev-del", {{"node-name", targetNode(i)}});
}

Status DiskMirrors::removeAll(qmp::Client& c, bool force, Deadline deadline) {
  // A job that has already ended is "not found": what counts is that none is left.
  for (std::size_t i = 0; i < jobs_; ++i) (void)c.execute("block-job-cancel", {{"device", jobId(i)}, {"force", force}});
  while (jobs_ > 0) {
    auto q = c.execute("query-block-jobs");
    if (!q) return fail(q.error().context("query-block-jobs"));
    std::size_t left = 0;
    for (std::size_t i = 0; i < jobs_; ++i) left += findJob(*q, jobId(i)) != nullptr;
    if (left == 0) break;
    if (deadline.expired()) return fail(Errc::timeout, cat(left, " disk mirror job(s) did not end after block-job-cancel"));
    std::this_thread::sleep_for(20ms);
  }
  jobs_ = 0;
  while (nodes_ > 0) {
    if (auto r = c.execute("blockdev-del", {{"node-name", targetNode(nodes_ - 1)}}); !r)
      return fail(r.error().context(cat("blockdev-del ", targetNode(nodes_ - 1))));
    --nodes_;
  }
  return {};
}

}  // namespace vmckpt::vmm
