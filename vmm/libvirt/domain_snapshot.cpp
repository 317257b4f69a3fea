#include "vmm/libvirt/domain_snapshot.hpp"

#include <fcntl.h>
#include <linux/fs.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <optional>
#include <thread>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/signal_block.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"
#include "vmm/agent/agent_client.hpp"
#include "vmm/guest_quiesce.hpp"
#include "vmm/libvirt/domain_inspect.hpp"
#include "vmm/libvirt/domain_xml.hpp"
#include "vmm/libvirt/hook.hpp"
#include "vmm/snapshot_capture.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/store/extent_usage.hpp"
#include "vmm/store/store_mode.hpp"
#include "vmm/store_root.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm::libvirt {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr const char* kDomainXmlFile = "domain.xml";
constexpr const char* kLibvirtFile = "libvirt.json";
constexpr const char* kMemFile = "mem";
constexpr const char* kStreamFd = "vmckpt-state";
// libvirt names the RAM object of a domain without NUMA cells pc.ram.
constexpr const char* kRamObject = "/objects/pc.ram";
constexpr auto kMigrateTimeout = 60s;
constexpr auto kStreamTimeout = 600s;
constexpr auto kPoll = 2ms;

struct DiskCopy {
  std::string target, source, format, file;  // file: name in data/
};

// The QEMU migration's state as query-migrate says it ("" before any).
Result<Json> queryMigrate(const Domain& d) { return d.qmp("query-migrate"); }

bool ended(const std::string& s) { return s == "completed" || s == "failed" || s == "cancelled"; }

// Polls query-migrate until the migration ends (libvirt's passthrough carries no events).
Status waitMigration(const Domain& d, std::chrono::milliseconds timeout, std::string_view what) {
  auto deadline = Deadline::in(timeout);
  for (;;) {
    auto q = queryMigrate(d);
    if (!q) return fail(q.error().context(what));
    std::string st = q->is_object() ? q->value("status", std::string()) : std::string();
    if (st == "completed") return {};
    if (st == "failed" || st == "cancelled") {
      std::string why = q->is_object() && q->contains("error-desc") && (*q)["error-desc"].is_string()
                            ? (*q)["error-desc"].get<std::string>()
                            : st;
      return fail(Errc::processFailed, cat(what, " ", st, ": ", why));
    }
    if (deadline.expired()) return fail(Errc::timeout, cat(what, ": not finished after ", timeout.count() / 1000, " s"));
    std::this_thread::sleep_for(kPoll);
  }
}

Result<std::string> runStatus(const Domain& d) {
  auto q = d.qmp("query-status");
  if (!q) return fail(q.error());
  return q->is_object() ? q->value("status", std::string()) : std::string();
}

// Resumes through libvirt (so that its state follows), retrying while QEMU has not
// finalized the migration that stopped the guest.
Status resumeDomain(const Domain& d) {
  auto deadline = Deadline::in(5s);
  for (;;) {
    auto s = d.resume();
    if (s) return {};
    auto st = runStatus(d);
    if (st && *st == "running") return {};
    if (deadline.expired()) return s;
    std::this_thread::sleep_for(5ms);
  }
}

Status setCaps(const Domain& d, bool ignoreShared, bool background) {
  auto r = d.qmp("migrate-set-capabilities",
                 {{"capabilities",
                   {{{"capability", "x-ignore-shared"}, {"state", ignoreShared}},
                    {{"capability", "background-snapshot"}, {"state", background}}}}});
  if (!r) return fail(r.error().context("migration capabilities"));
  return {};
}

// After a failure while the guest may be stopped by us: no migration in flight, guest running.
void recoverGuest(const Domain& d, bool wasRunning) {
  if (auto q = queryMigrate(d); q && q->is_object()) {
    std::string st = q->value("status", std::string());
    if (!st.empty() && !ended(st) && st != "none") {
      (void)d.qmp("migrate_cancel");
      for (int i = 0; i < 500; ++i) {
        auto q2 = queryMigrate(d);
        if (!q2 || !q2->is_object() || ended(q2->value("status", std::string()))) break;
        std::this_thread::sleep_for(10ms);
      }
    }
  }
  if (wasRunning) {
    if (auto s = resumeDomain(d); !s) log::error("could not resume domain ", d.name(), ": ", s.error().message());
  }
}

// A clone (or a copy where the filesystem cannot clone) of `src` over the contents of the
// open file `dst`, in place: QEMU has `dst` mapped shared, and a new file would not be its.
Status cloneInto(const std::string& src, int dst, const std::string& dstName) {
  UniqueFd in(::open(src.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return failErrno(cat("open ", src), errno);
  struct stat a{}, b{};
  if (::fstat(in.get(), &a) != 0 || ::fstat(dst, &b) != 0) return failErrno(cat("stat ", dstName), errno);
  if (a.st_size != b.st_size)
    return fail(Errc::corrupt, cat("the snapshot's RAM (", a.st_size, " bytes) does not match the domain's (", b.st_size,
                                   " bytes in ", dstName, ")"));
  if (::ioctl(dst, FICLONE, in.get()) == 0) return {};
  off_t off = 0;
  while (off < a.st_size) {
    loff_t inOff = off, outOff = off;
    ssize_t n = ::copy_file_range(in.get(), &inOff, dst, &outOff, static_cast<size_t>(a.st_size - off), 0);
    if (n < 0) return failErrno(cat("copy RAM into ", dstName), errno);
    if (n == 0) break;
    off += n;
  }
  return {};
}

// An exclusive lock per domain, so that two vmckpt commands do not work on one domain.
std::string lockPath(const std::string& home, const std::string& domain) {
  return cat(home, "/libvirt/snapshots/.", domain, ".lock");
}

Status writeFile0400(const std::string& path, const std::string& text) {
  VMCKPT_TRY(fs::writeFileAtomic(path, text, 0400));
  return {};
}

std::string diskFileName(const DomainDisk& d, std::size_t i) {
  std::string ext = d.format.empty() ? "img" : d.format;
  for (char& c : ext)
    if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
  return cat("disk", i, ".", ext);
}

}  // namespace

std::string domainSnapshotsDir(const std::string& home, const std::string& domain) {
  return cat(home, "/libvirt/snapshots/", domain);
}

Result<std::vector<store::SnapshotEntry>> domainSnapshots(const std::string& home, const std::string& domain) {
  VMCKPT_TRY(validateDomainName(domain));
  return store::Catalog(domainSnapshotsDir(home, domain)).list();
}

Result<store::SnapshotEntry> findDomainSnapshot(const std::string& home, const std::string& domain,
                                                const std::string& ref) {
  VMCKPT_TRY(validateDomainName(domain));
  store::Catalog catalog(domainSnapshotsDir(home, domain));
  if (ref.empty() || ref == "latest") {
    auto all = catalog.list();
    if (!all) return fail(all.error());
    if (all->empty()) return fail(Errc::notFound, cat("libvirt domain ", domain, " has no vmckpt snapshots"));
    return all->back();
  }
  auto s = catalog.resolve(ref);
  if (!s) return fail(s.error().context(cat("libvirt domain ", domain)));
  return s;
}

Result<SnapshotResult> snapshotDomain(const Connection& conn, const std::string& home, const std::string& domain,
                                      const DomainSnapshotOptions& opts) {
  auto t0 = Clock::now();
  auto ctx = [&](const Error& e) { return fail(e.context(cat("snapshot of libvirt domain ", domain))); };
  if (auto s = validateDomainName(domain); !s) return ctx(s.error());
  auto dom = conn.lookup(domain);
  if (!dom) return ctx(dom.error());
  auto state = dom->state();
  if (!state) return ctx(state.error());
  if (*state != DomainState::running && *state != DomainState::paused)
    return ctx(Error(Errc::wrongState, cat("the domain is ", domainStateName(*state),
                                           "; vmckpt snapshots running or paused domains")));
  auto xml = dom->xml(Domain::Xml::migratable, true);  // what restore defines again
  if (!xml) return ctx(xml.error());
  auto liveXml = dom->xml();  // with the agent socket's path
  if (!liveXml) return ctx(liveXml.error());
  auto info = inspectDomainXml(*liveXml);
  if (!info) return ctx(info.error());

  const std::string dir = domainSnapshotsDir(home, domain);
  if (auto s = fs::makeDirs(dir, 0700); !s) return ctx(s.error());
  auto lock = VmLock::acquireAt(lockPath(home, domain), cat("domain ", domain));
  if (!lock) return ctx(lock.error());

  // The disks vmckpt can capture are image files; read-only media stay where they are.
  std::vector<DiskCopy> disks;
  for (std::size_t i = 0; i < info->disks.size(); ++i) {
    const DomainDisk& d = info->disks[i];
    if (d.readonly || d.device == "cdrom" || d.device == "floppy") continue;
    if (d.type != "file" || d.source.empty())
      return ctx(Error(Errc::unsupported, cat("disk ", d.target, " is of type '", d.type,
                                              "'; vmckpt captures file-backed disks only")));
    if (d.shareable) return ctx(Error(Errc::unsupported, cat("disk ", d.target, " is shareable")));
    disks.push_back({d.target, d.source, d.format, diskFileName(d, disks.size())});
  }

  // Fast path where the RAM is a shared file of one RAM object.
  std::string memPath;
  if (info->memoryFileShared && !info->numa && !info->hugepages) {
    auto mp = dom->qmp("qom-get", {{"path", kRamObject}, {"property", "mem-path"}});
    if (mp && mp->is_string()) memPath = mp->get<std::string>();
    else log::info("RAM file of domain ", domain, " not found (", mp ? "not a string" : mp.error().message(),
                   "): live snapshot");
  }
  const bool fast = !memPath.empty();
  store::StoreCapabilities caps = store::probeStore(dir);
  const store::StoreMode mode = caps.reflink ? store::StoreMode::reflink : store::StoreMode::copy;

  store::Catalog catalog(dir);
  std::optional<store::SnapshotEntry> parent;
  if (auto all = catalog.list(); all && !all->empty()) parent = all->back();

  store::Manifest m;
  m.id = store::Catalog::newId();
  m.vm = domain;
  m.tag = opts.tag;
  m.parent = parent ? parent->manifest.id : "";
  m.created = nowIso();
  m.mode = mode;
  m.vmckptVersion = VMCKPT_VERSION;
  m.spec.name = domain;
  m.spec.agent = info->agentChannel;
  // The spec records what vmckpt captured of the domain (its XML is the real definition).
  m.spec.kernelBoot = info->kernelBoot;
  for (const auto& d : disks) {
    auto fmt = parseDiskFormat(d.format.empty() ? "raw" : d.format);
    m.spec.disks.push_back({d.file, fmt ? *fmt : DiskFormat::raw, d.source});
  }
  m.wasRunning = *state == DomainState::running;
  m.ram = fast ? store::SnapshotRam::file : store::SnapshotRam::stream;
  if (auto v = dom->qmp("query-version"); v && v->is_object() && v->contains("qemu") && (*v)["qemu"].is_object()) {
    const Json& q = (*v)["qemu"];
    auto num = [&](const char* k) { return q.contains(k) && q[k].is_number_integer() ? q[k].get<long long>() : 0; };
    m.qemuVersion = cat(num("major"), ".", num("minor"), ".", num("micro"));
  }

  if (auto ms = dom->qmp("query-memory-size-summary"); ms && ms->is_object())
    m.spec.memoryBytes = static_cast<std::uint64_t>(qmp::intField(*ms, "base-memory"));

  std::optional<SignalBlock> holdSignals(std::in_place);
  const std::string tmp = cat(dir, "/.tmp-", m.id);
  if (auto s = fs::makeDirs(tmp + "/data", 0700); !s) return ctx(s.error());
  ScopeExit dropPartial([&] { (void)store::removeStoreTree(tmp); });

  if (auto s = writeFile0400(cat(tmp, "/data/", kDomainXmlFile), *xml); !s) return ctx(s.error());
  Json lv = {{"format", "1.0"}, {"uri", conn.uri()}, {"uuid", info->uuid}, {"disks", Json::array()}};
  for (const auto& d : disks)
    lv["disks"].push_back({{"target", d.target}, {"source", d.source}, {"format", d.format}, {"file", d.file}});
  if (auto s = writeFile0400(cat(tmp, "/data/", kLibvirtFile), lv.dump(2) + "\n"); !s) return ctx(s.error());

  auto guest = QuiescedGuest::connect(
      info->agentChannel && !info->agentSocket.empty() ? std::optional<std::string>(info->agentSocket) : std::nullopt,
      "the domain has no vmckpt agent channel (vmckpt libvirt-prepare adds one)", opts.agent);
  if (!guest) return ctx(guest.error());

  // Migration settings for the capture; put back afterwards, so that libvirt's own
  // migrations and saves of this domain are not changed by them.
  if (auto s = setCaps(*dom, fast, !fast); !s) return ctx(s.error());
  ScopeExit resetCaps([&] { (void)setCaps(*dom, false, false); });
  if (auto r = dom->qmp("migrate-set-parameters", {{"max-bandwidth", kSnapshotMaxBandwidth}}); !r)
    return ctx(r.error());

  std::optional<ScopeExit<std::function<void()>>> thawOnFailure;
  if (guest->connected()) {
    auto q = guest->quiesce(opts.quiesceTimeout);
    m.timings.quiesceMs = guest->quiesceMs();
    if (!q) return ctx(q.error());
    m.quiesced = true;
    m.agentPlugins = guest->plugins();
    thawOnFailure.emplace(std::function<void()>([&] {
      if (auto s = guest->thaw(); !s) log::error("could not thaw the guest after a failed snapshot: ", s.error().message());
    }));
  }

  const std::string streamName = store::streamFileName(m.ram);
  const std::string streamPath = cat(tmp, "/", streamName);
  UniqueFd stream(::open(streamPath.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600));
  if (!stream) return ctx(Error::fromErrno(cat("open ", streamPath), errno));
  if (fast) {  // pre-flush, so that few dirty pages remain for the pause
    auto tf = Clock::now();
    UniqueFd mem(::open(memPath.c_str(), O_RDONLY | O_CLOEXEC));
    if (mem) (void)::fdatasync(mem.get());
    m.timings.flushMs = elapsedMs(tf);
  }
  {
    int raw = stream.get();
    if (auto r = dom->qmp("getfd", {{"fdname", kStreamFd}}, std::span<const int>(&raw, 1)); !r) return ctx(r.error());
  }

  // --- the pause: from here every failure resumes the guest ---
  bool inPause = m.wasRunning;
  ScopeExit resumeOnFailure([&] {
    if (inPause) recoverGuest(*dom, m.wasRunning);
  });
  auto captureFiles = [&]() -> Status {
    auto tc = Clock::now();
    for (const auto& d : disks)
      VMCKPT_TRY(fs::copyFile(d.source, cat(tmp, "/data/", d.file), fs::CopyMethod::reflinkOrCopy, 0400, fs::Sync::later));
    if (fast)
      VMCKPT_TRY(fs::copyFile(memPath, cat(tmp, "/data/", kMemFile), fs::CopyMethod::reflinkOrCopy, 0400, fs::Sync::later));
    m.timings.captureMs = elapsedMs(tc);
    return {};
  };
  auto tPause = Clock::now();
  if (fast) {
    // migrate stops a running guest itself, just before it saves the devices.
    auto td = Clock::now();
    if (auto r = dom->qmp("migrate", {{"uri", cat("fd:", kStreamFd)}}); !r) return ctx(r.error());
    if (auto s = waitMigration(*dom, kMigrateTimeout, "device state migration"); !s) return ctx(s.error());
    m.timings.devstateMs = elapsedMs(td);
    if (auto s = captureFiles(); !s) return ctx(s.error().context("capture"));
    if (m.wasRunning) {
      if (auto s = resumeDomain(*dom); !s) return ctx(s.error());
      m.timings.pauseMs = elapsedMs(tPause);
    }
  } else {
    if (m.wasRunning) {
      if (auto s = dom->suspend(); !s) return ctx(s.error());
    }
    if (auto s = captureFiles(); !s) return ctx(s.error().context("capture"));
    auto td = Clock::now();
    if (auto r = dom->qmp("migrate", {{"uri", cat("fd:", kStreamFd)}}); !r) return ctx(r.error());
    if (m.wasRunning) {  // QEMU resumes the guest once it saved the devices
      auto deadline = Deadline::in(10s);
      for (;;) {
        auto st = runStatus(*dom);
        if (st && *st == "running") break;
        if (deadline.expired()) return ctx(Error(Errc::timeout, "the guest did not run again after its devices were saved"));
        std::this_thread::sleep_for(kPoll);
      }
      m.timings.pauseMs = elapsedMs(tPause);
      m.timings.devstateMs = elapsedMs(td);
    }
  }
  inPause = false;
  // --- the guest runs again ---
  if (thawOnFailure) {
    thawOnFailure->cancel();
    if (auto s = guest->thaw(); !s) log::warn("the snapshot is complete, but the guest agent did not thaw: ", s.error().message());
  }
  if (!fast) {
    auto ts = Clock::now();
    if (auto s = waitMigration(*dom, kStreamTimeout, "state stream"); !s) return ctx(s.error());
    m.timings.streamMs = elapsedMs(ts);
  }
  holdSignals.reset();
  stream.reset();

  const std::string streamDest = cat(tmp, "/data/", streamName);
  if (::rename(streamPath.c_str(), streamDest.c_str()) != 0 || ::chmod(streamDest.c_str(), 0400) != 0)
    return ctx(Error::fromErrno(cat("move ", streamPath, " into the snapshot"), errno));
  if (auto s = fs::syncFilesystem(tmp); !s) return ctx(s.error());
  auto files = describeFiles(tmp + "/data");
  if (!files) return ctx(files.error());
  m.files = std::move(*files);
  if (const auto* f = m.file(streamName)) m.devstateBytes = f->size;
  {
    std::vector<std::string> mine, theirs;
    for (const auto& f : m.files) mine.push_back(cat(tmp, "/data/", f.name));
    auto own = store::mapExtents(mine);
    if (!own) return ctx(own.error());
    store::ExtentMap parentMap;
    if (parent) {
      for (const auto& f : parent->manifest.files) theirs.push_back(cat(parent->dataDir(), "/", f.name));
      if (auto pm = store::mapExtents(theirs)) parentMap = std::move(*pm);
    }
    m.exclusiveBytes = store::exclusiveBytes(*own, parentMap);
  }
  m.timings.totalMs = elapsedMs(t0);
  if (auto s = store::writeManifest(tmp + "/manifest.json", m); !s) return ctx(s.error());
  const std::string dest = cat(dir, "/", m.id);
  if (::rename(tmp.c_str(), dest.c_str()) != 0) return ctx(Error::fromErrno(cat("rename ", tmp, " -> ", dest), errno));
  dropPartial.cancel();
  if (UniqueFd d(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC)); d) ::fsync(d.get());
  return SnapshotResult{std::move(m), dest, guest->note()};
}

Result<DomainRestoreResult> restoreDomain(const Connection& conn, const std::string& home, const std::string& domain,
                                          const std::string& ref, const DomainRestoreOptions& opts) {
  auto t0 = Clock::now();
  auto ctx = [&](const Error& e) { return fail(e.context(cat("restore of libvirt domain ", domain))); };
  auto snap = findDomainSnapshot(home, domain, ref);
  if (!snap) return ctx(snap.error());
  auto lock = VmLock::acquireAt(lockPath(home, domain), cat("domain ", domain));
  if (!lock) return ctx(lock.error());
  const store::Manifest& m = snap->manifest;
  const std::string data = snap->dataDir();

  // What the snapshot says is checked before anything changes.
  if (auto v = store::verifySnapshot(*snap); !v.ok)
    return ctx(Error(Errc::corrupt, cat("snapshot ", m.id, " is damaged: ", v.problems.empty() ? "" : v.problems.front())));
  auto snapXml = fs::readFile(cat(data, "/", kDomainXmlFile), kMaxDomainXmlBytes);
  if (!snapXml) return ctx(snapXml.error());
  auto lvText = fs::readFile(cat(data, "/", kLibvirtFile), 1u << 20);
  if (!lvText) return ctx(lvText.error());
  Json lv = Json::parse(*lvText, nullptr, false);
  if (!lv.is_object() || !lv.contains("disks") || !lv["disks"].is_array())
    return ctx(Error(Errc::corrupt, cat("snapshot ", m.id, ": ", kLibvirtFile, " is not what vmckpt wrote")));
  std::vector<DiskCopy> disks;
  for (const auto& d : lv["disks"]) {
    DiskCopy c{qmp::stringField(d, "target"), qmp::stringField(d, "source"), qmp::stringField(d, "format"),
               qmp::stringField(d, "file")};
    if (c.source.empty() || c.source[0] != '/' || !m.file(c.file))
      return ctx(Error(Errc::corrupt, cat("snapshot ", m.id, ": disk entry for ", c.target, " is not valid")));
    disks.push_back(std::move(c));
  }
  const bool fast = m.ram == store::SnapshotRam::file;
  if (fast && !m.file(kMemFile)) return ctx(Error(Errc::corrupt, cat("snapshot ", m.id, " has no RAM file")));

  DomainRestoreResult res;
  res.domain = domain;
  res.snapshotId = m.id;
  // The device map set for this domain (vmckpt libvirt-hook map) applies here too.
  std::string defXml = *snapXml;
  if (auto map = loadDomainDeviceMap(home, domain); map && !map->empty()) {
    auto rw = applyDeviceMap(defXml, *map);
    if (!rw) return ctx(rw.error());
    defXml = rw->xml;
    res.xmlChanges = rw->changes;
  }

  auto existing = conn.lookup(domain);
  if (!existing && existing.error().code() != Errc::notFound) return ctx(existing.error());
  if (existing) {
    auto st = existing->state();
    if (!st) return ctx(st.error());
    if (*st != DomainState::shutoff) {
      if (!opts.force)
        return ctx(Error(Errc::wrongState, cat("the domain is ", domainStateName(*st),
                                               "; shut it down first (virsh destroy ", domain, ") or pass --force")));
      if (auto s = existing->destroy(); !s) return ctx(s.error());
    }
  }
  res.defined = !existing;

  // The disks as they were at the snapshot: each replaced in one rename.
  for (const auto& d : disks) {
    struct stat st{};
    mode_t mode = ::stat(d.source.c_str(), &st) == 0 ? (st.st_mode & 07777) : 0600;
    if (auto s = fs::copyFile(cat(data, "/", d.file), d.source, fs::CopyMethod::reflinkOrCopy, mode); !s)
      return ctx(s.error().context(cat("disk ", d.target)));
  }

  // Started paused, waiting for its state: `-incoming defer` for this start only.
  auto startXml = withIncomingDefer(defXml);
  if (!startXml) return ctx(startXml.error());
  auto dom = conn.define(*startXml);
  if (!dom) return ctx(dom.error());
  // Whatever happens next, the persistent definition is the snapshot's, without -incoming.
  ScopeExit redefine([&] {
    if (auto d = conn.define(defXml); !d) log::error("could not redefine domain ", domain, ": ", d.error().message());
  });
  if (auto s = dom->start(true); !s) return ctx(s.error());
  bool started = true;
  ScopeExit destroyOnFailure([&] {
    if (started) (void)dom->destroy();
  });

  if (fast) {
    auto mp = dom->qmp("qom-get", {{"path", kRamObject}, {"property", "mem-path"}});
    if (!mp) return ctx(mp.error().context("the restored domain's RAM file"));
    if (!mp->is_string()) return ctx(Error(Errc::protocol, "qom-get mem-path: not a string"));
    const std::string ramPath = mp->get<std::string>();
    UniqueFd ram(::open(ramPath.c_str(), O_WRONLY | O_CLOEXEC));
    if (!ram) return ctx(Error::fromErrno(cat("open ", ramPath), errno));
    if (auto s = cloneInto(cat(data, "/", kMemFile), ram.get(), ramPath); !s) return ctx(s.error());
    if (auto s = setCaps(*dom, true, false); !s) return ctx(s.error());
  }
  const std::string streamPath = cat(data, "/", store::streamFileName(m.ram));
  UniqueFd in(::open(streamPath.c_str(), O_RDONLY | O_CLOEXEC));
  if (!in) return ctx(Error::fromErrno(cat("open ", streamPath), errno));
  {
    int raw = in.get();
    if (auto r = dom->qmp("getfd", {{"fdname", kStreamFd}}, std::span<const int>(&raw, 1)); !r) return ctx(r.error());
  }
  auto tl = Clock::now();
  if (auto r = dom->qmp("migrate-incoming", {{"uri", cat("fd:", kStreamFd)}}); !r) return ctx(r.error());
  if (auto s = waitMigration(*dom, fast ? kMigrateTimeout : kStreamTimeout, "loading the state"); !s) return ctx(s.error());
  res.loadMs = elapsedMs(tl);
  if (fast) (void)setCaps(*dom, false, false);
  if (!opts.paused) {
    if (auto s = resumeDomain(*dom); !s) return ctx(s.error());
  }
  started = false;  // success: the domain stays
  res.paused = opts.paused;

  // The agent thaws what the snapshot froze and restarts its plugins.
  if (!opts.paused) {
    if (auto live = dom->xml(); live) {
      if (auto li = inspectDomainXml(*live); li && li->agentChannel && !li->agentSocket.empty()) {
        auto r = agent::notifyRestored(li->agentSocket, Json::object(), m.quiesced ? 10s : 1s);
        if (!r) {
          res.agentNote = cat(m.quiesced ? "the guest runs, but its agent did not take 'restored' (filesystems may "
                                           "still be frozen): "
                                         : "no guest agent answered 'restored': ",
                              r.error().message());
          if (m.quiesced) log::warn(res.agentNote);
        }
      }
    }
  }
  res.totalMs = elapsedMs(t0);
  return res;
}

}  // namespace vmckpt::vmm::libvirt
