// VmManager::migrate: the source side of a live migration to `vmckpt receive` (see
// migrate_wire.hpp for the conversation). RAM travels in QEMU's own migration stream on
// the connection vmckpt opened, disks as QEMU's mirror jobs into the receiver's NBD
// exports (migrate_disks.hpp); until the receiver says the guest runs there, any failure
// cancels the migration and the mirrors and leaves the guest running here on its disks.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <optional>
#include <thread>

#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/scope_exit.hpp"
#include "common/sha256.hpp"
#include "common/signal_block.hpp"
#include "common/strings.hpp"
#include "common/tcp.hpp"
#include "common/unique_fd.hpp"
#include "vmm/fault_injection.hpp"
#include "vmm/guest_quiesce.hpp"
#include "vmm/journal.hpp"
#include "vmm/disk_image.hpp"
#include "vmm/lifecycle.hpp"
#include "vmm/migrate_disks.hpp"
#include "vmm/migrate_wire.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/qemu_process.hpp"
#include "vmm/store/backend.hpp"
#include "vmm/vm_record.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;
using Clock = std::chrono::steady_clock;

constexpr auto kConnectTimeout = 10s;
constexpr auto kOfferTimeout = 120s;    // sending the boot files, the receiver building the VM
constexpr auto kConfirmTimeout = 60s;   // from "completed" here to the receiver's word
constexpr auto kPollInterval = 500ms;   // query-migrate while RAM travels
constexpr auto kSettleTimeout = 10s;
constexpr std::uint64_t kUnlimitedBandwidth = 100ull << 30;  // QEMU's default is 128 MiB/s

double msSince(Clock::time_point t) { return std::chrono::duration<double, std::milli>(Clock::now() - t).count(); }

// A member object of a QEMU reply, or an empty object.
const Json& member(const Json& j, std::string_view key) {
  static const Json empty = Json::object();
  if (!j.is_object()) return empty;
  auto it = j.find(key);
  return it != j.end() && it->is_object() ? *it : empty;
}

double numberField(const Json& j, std::string_view key) {
  if (!j.is_object()) return 0;
  auto it = j.find(key);
  return it != j.end() && it->is_number() ? it->get<double>() : 0;
}

std::uint64_t count(const Json& j, std::string_view key) {
  long long v = qmp::intField(j, key);
  return v > 0 ? static_cast<std::uint64_t>(v) : 0;
}

MigrationProgress readProgress(const Json& q, Clock::time_point t0) {
  const Json& ram = member(q, "ram");
  MigrationProgress p;
  p.status = qmp::stringField(q, "status", "unknown");
  p.transferredBytes = count(ram, "transferred");
  p.remainingBytes = count(ram, "remaining");
  p.totalBytes = count(ram, "total");
  p.dirtyPagesRate = count(ram, "dirty-pages-rate");
  p.iterations = count(ram, "dirty-sync-count");
  p.mbps = numberField(ram, "mbps");
  p.elapsedMs = msSince(t0);
  return p;
}

// Devices that block migration (VFIO passthrough: GPU, InfiniBand VF) leave the VM here,
// after the agent's quiesce, and come back when the migration fails. vmckpt manages no
// such devices yet: both are no-ops until VFIO hot-unplug lands.
Status unplugMigrationBlockers(qmp::Client&, const VmSpec&) { return {}; }
void replugMigrationBlockers(qmp::Client&, const VmSpec&) {}

// Streams a boot file after the offer (its size and sha256 were announced in it).
Status sendBootFile(int sock, const std::string& path, std::uint64_t size, Deadline deadline) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd) return failErrno(cat("open ", path), errno);
  std::string buf(1 << 20, '\0');
  for (std::uint64_t done = 0; done < size;) {
    ssize_t n = ::read(fd.get(), buf.data(), std::min<std::uint64_t>(buf.size(), size - done));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return n < 0 ? failErrno(cat("read ", path), errno) : fail(Errc::io, cat(path, " became shorter while sent"));
    VMCKPT_TRY(tcp::sendAll(sock, buf.data(), static_cast<std::size_t>(n), deadline, wire::checkSignals));
    done += static_cast<std::uint64_t>(n);
  }
  return {};
}

// The offer of VM `name`: what the receiver needs to build the same VM and QEMU.
Result<wire::Offer> makeOffer(const std::string& name, const VmSpec& spec, const VmPaths& p, std::string machine,
                              std::string qemuVersion, std::string accel, bool postcopy) {
  wire::Offer o{name, spec, std::move(machine), std::move(qemuVersion), std::move(accel), postcopy, {}, {}};
  for (const auto& f : wire::bootFileNames(spec)) {
    const std::string& path = f == "kernel" ? p.kernel : p.initrd;
    struct stat st{};
    if (::stat(path.c_str(), &st) != 0) return failErrno(cat("stat ", path), errno);
    auto sum = sha256File(path);
    if (!sum) return fail(sum.error());
    o.files.push_back({f, static_cast<std::uint64_t>(st.st_size), *sum});
  }
  for (const auto& d : spec.disks) {
    auto size = diskVirtualSize(cat(p.live, "/", d.file), d.format);
    if (!size) return fail(size.error());
    o.disks.push_back({d.file, d.format, *size});
  }
  return o;
}

// `disks`: QEMU stops before the switch-over (pre-switchover) until the mirrors are ended.
Status setMigrationCapabilities(qmp::Client& c, bool postcopy, bool disks) {
  Json caps = Json::array({{{"capability", "events"}, {"state", true}},
                           {{"capability", "x-ignore-shared"}, {"state", false}},  // RAM travels
                           {{"capability", "postcopy-ram"}, {"state", postcopy}},
                           {{"capability", "pause-before-switchover"}, {"state", disks}}});
  if (auto r = c.execute("migrate-set-capabilities", {{"capabilities", caps}}); !r)
    return fail(r.error().context("migrate-set-capabilities"));
  return {};
}

bool isPreSwitchover(const qmp::Event& e) {
  return e.name == "MIGRATION" && qmp::stringField(e.data, "status") == "pre-switchover";
}

}  // namespace

Result<MigrateResult> VmManager::migrate(const std::string& name, const MigrateOptions& opts) {
  auto t0 = Clock::now();
  auto to = tcp::parseEndpoint(opts.to, false);
  if (!to) return fail(to.error().context(cat("migrate ", name)));
  auto held = lockVm(name);
  if (!held) return fail(held.error());
  const VmSpec& spec = held->spec;
  const VmPaths& p = held->paths;
  auto qemuGone = [&] { return checkPidFile(p).state != PidState::alive; };
  bool postcopyStarted = false;  // the guest's state is split between the hosts: no way back
  auto ctx = [&](const Error& e) {
    if (qemuGone())
      return fail(Error(Errc::processFailed, cat("migrate ", name, ": QEMU exited during the migration (", e.message(),
                                                 "); the VM is stopped")));
    Error out = e.context(cat("migrate ", name));
    return fail(Error(out.code(),
                      cat(out.message(), postcopyStarted ? "; this came after the switch to postcopy: the guest's memory "
                                                           "is split between the hosts and the VM here stays stopped"
                                                         : "; the VM keeps running here"),
                      out.sysErrno()));
  };

  auto before = statusLocked(name, spec);
  if (!before) return fail(before.error());
  if (before->state != VmState::running)
    return fail(Errc::wrongState, cat("migrate ", name, ": VM is not running (state: ", vmStateName(before->state), ")"));
  if (!spec.passthrough.empty())
    return fail(Errc::unsupported, cat("migrate ", name, ": live migration of a VM with passthrough devices is not "
                                       "supported (snapshot it, export and import, and restore there with --map pci_ID=...)"));
  const pid_t qemuPid = before->pid;

  auto client = connectQmp(p, Deadline::in(5s));
  if (!client) return ctx(client.error());
  qmp::Client& c = *client;
  VmRecord rec = loadRecord(p);
  std::string machine = rec.machine;
  if (machine.empty()) {
    auto m = resolveMachine(c, spec.machine);
    if (!m) return ctx(m.error());
    machine = *m;
  }
  auto offer = makeOffer(name, spec, p, machine,
                         cat(c.greeting().major, ".", c.greeting().minor, ".", c.greeting().micro), before->accel,
                         opts.postcopy);
  if (!offer) return ctx(offer.error());
  const bool disks = !spec.disks.empty();
  if (auto s = setMigrationCapabilities(c, opts.postcopy, disks); !s) return ctx(s.error());
  // Taken back whenever the migration does not happen: postcopy-ram would make the next
  // snapshot's device-state migrate ask for a return path that a file cannot give.
  auto resetCaps = [](qmp::Client& q) { (void)setMigrationCapabilities(q, false, false); };
  Json params = {{"downtime-limit", opts.downtimeLimit.count()},
                 {"max-bandwidth", opts.bandwidthBytesPerSec ? opts.bandwidthBytesPerSec : kUnlimitedBandwidth}};
  if (auto r = c.execute("migrate-set-parameters", params); !r) {
    resetCaps(c);
    return ctx(r.error().context("migrate-set-parameters"));
  }

  // Ctrl-C, TERM and HUP are held back from here; every wait below checks for them and
  // ends with an error, so the guards run and the guest keeps running here.
  SignalBlock holdSignals;
  auto conn = tcp::connect(*to, Deadline::in(kConnectTimeout));
  if (!conn) {
    resetCaps(c);
    Error e = conn.error();
    if (e.sysErrno() == ECONNREFUSED) e = Error(e.code(), cat(e.message(), " (is 'vmckpt receive' listening there?)"), e.sysErrno());
    return ctx(e);
  }
  const int sock = conn->get();

  // 1. The offer and the boot files; the receiver builds the VM and starts its QEMU.
  Deadline offerDeadline = Deadline::in(kOfferTimeout);
  std::uint16_t nbdPort = 0;
  auto sendOffer = [&]() -> Status {
    VMCKPT_TRY(wire::sendFrame(sock, offer->toJson(), offerDeadline, wire::checkSignals));
    for (const auto& f : offer->files)
      VMCKPT_TRY(sendBootFile(sock, f.name == "kernel" ? p.kernel : p.initrd, f.size, offerDeadline));
    auto reply = wire::readFrame(sock, {"ready", "refused"}, offerDeadline, wire::checkSignals);
    if (!reply) return fail(reply.error().context("waiting for the receiver"));
    if (qmp::stringField(*reply, "type") == "refused")
      return fail(Errc::processFailed, cat("the receiver refused: ", wire::peerText(*reply, "error")));
    if (disks) {
      auto port = wire::nbdPort(*reply);
      if (!port) return fail(port.error());
      nbdPort = *port;
    }
    return {};
  };
  if (auto s = sendOffer(); !s) {
    resetCaps(c);
    return ctx(s.error());
  }
  // From here QEMU holds state a killed vmckpt would leave behind (mirror jobs, the
  // migration, which carries on without us): the journal says what, for `recover`.
  JournalEntry journal{.op = JournalOp::migrate, .guestWasRunning = true, .peer = to->display(), .pid = ::getpid(),
                       .started = nowIso()};
  if (auto s = writeJournal(p, journal); !s) {
    resetCaps(c);
    return ctx(s.error().context("journal"));
  }
  ScopeExit journalDone([&] { (void)clearJournal(p); });  // destroyed last: after every other guard

  // 2. The disks: mirrored into the receiver's exports until in sync, the guest running.
  // From here on, a write of the guest reaches both copies before it completes.
  DiskMirrors mirrors;
  auto copyDisks = [&]() -> Status {
    if (!disks) return {};
    VMCKPT_TRY(mirrors.start(c, spec.disks.size(), to->host, nbdPort));
    auto tMirror = Clock::now();
    VMCKPT_TRY(mirrors.waitReady(c, Deadline::at(t0 + opts.timeout), wire::checkSignals,
                             [&](std::uint64_t copied, std::uint64_t total) {
                               if (!opts.progress) return;
                               MigrationProgress prog;
                               prog.status = "mirroring disks";
                               prog.transferredBytes = copied;
                               prog.totalBytes = total;
                               prog.remainingBytes = total > copied ? total - copied : 0;
                               prog.elapsedMs = msSince(tMirror);
                               opts.progress(prog);
                             }));
    return faultPoint("mirrors-ready", qemuPid);
  };
  if (auto s = copyDisks(); !s) {
    (void)wire::sendFrame(sock, {{"type", "abort"}, {"error", s.error().message()}}, Deadline::in(5s));
    mirrors.abandon(c);
    resetCaps(c);
    return ctx(s.error().context("mirroring the disks"));
  }

  // 3. Quiesce, then tell the receiver to expect QEMU's stream (or why not).
  auto guest = QuiescedGuest::connect(spec, p, opts.agent);
  auto quiesce = [&]() -> Status {
    if (!guest) return fail(guest.error());
    if (guest->connected()) {
      journal.quiesced = true;  // before asking: a kill during the quiesce must thaw too
      VMCKPT_TRY(writeJournal(p, journal));
    }
    VMCKPT_TRY(guest->quiesce(opts.quiesceTimeout));
    return unplugMigrationBlockers(c, spec);
  };
  Status prepared = quiesce();
  Json go = prepared ? Json{{"type", "go"}, {"quiesced", guest->quiesced()}}
                     : Json{{"type", "abort"}, {"error", prepared.error().message()}};
  Status told = wire::sendFrame(sock, go, Deadline::in(10s), wire::checkSignals);
  if (!prepared || !told) {
    if (guest) {
      replugMigrationBlockers(c, spec);
      if (auto t = guest->thaw(); !t) log::error("could not thaw the guest: ", t.error().message());
    }
    mirrors.abandon(c);
    resetCaps(c);
    return ctx(!prepared ? prepared.error() : told.error().context("telling the receiver to start"));
  }

  // 4. QEMU's stream on the same connection. Until the receiver says its guest runs,
  // every failure cancels the migration and resumes the guest here.
  bool committed = false;  // the receiver runs the guest: nothing to undo
  ScopeExit resumeHere([&] {
    if (committed || qemuGone()) return;
    ::shutdown(sock, SHUT_RDWR);  // the receiver learns at once
    if (postcopyStarted) return;  // resuming here would run a guest missing what it did there
    auto resume = [&](qmp::Client& q) -> Status {
      if (auto settled = settleMigration(q, Deadline::in(kSettleTimeout)); !settled) return fail(settled.error());
      mirrors.abandon(q);  // the source's disks were only read: they stay as they are
      VMCKPT_TRY(contAfterMigration(q, Deadline::in(kSettleTimeout)));
      resetCaps(q);
      replugMigrationBlockers(q, spec);
      return {};
    };
    auto r = resume(c);
    if (!r) {  // the QMP connection may be what failed: try a fresh one
      if (auto c2 = connectQmp(p, Deadline::in(5s))) r = resume(*c2);
    }
    if (!r) log::error("could not resume VM ", name, " after the failed migration: ", r.error().message());
    if (auto t = guest->thaw(); !t) log::error("could not thaw the guest after the failed migration: ", t.error().message());
  });
  if (auto r = c.execute("getfd", {{"fdname", wire::kQemuFdName}}, Deadline::in(5s), std::span<const int>(&sock, 1)); !r)
    return ctx(r.error().context("getfd"));
  auto tMigrate = Clock::now();
  if (auto r = c.execute("migrate", {{"uri", cat("fd:", wire::kQemuFdName)}}); !r) return ctx(r.error().context("migrate"));

  Deadline deadline = Deadline::at(t0 + opts.timeout);
  Json final;
  for (;;) {
    if (auto s = wire::checkSignals(); !s) return ctx(s.error());
    auto q = c.execute("query-migrate");
    if (!q) return ctx(q.error().context("query-migrate"));
    MigrationProgress prog = readProgress(*q, tMigrate);
    if (opts.progress) opts.progress(prog);
    if (prog.status == "completed") {
      final = std::move(*q);
      break;
    }
    if (prog.status == "pre-switchover") {
      // The guest is paused and its last writes are in both copies: the mirrors end (the
      // receiver's images are complete), then QEMU sends the rest.
      if (auto s = mirrors.finish(c, Deadline::in(kSettleTimeout)); !s) return ctx(s.error().context("ending the disk mirrors"));
      if (auto r = c.execute("migrate-continue", {{"state", "pre-switchover"}}); !r)
        return ctx(r.error().context("migrate-continue"));
      continue;
    }
    if (prog.status == "failed" || prog.status == "cancelled" || prog.status == "postcopy-paused") {
      std::string why = qmp::stringField(*q, "error-desc", prog.status);
      return ctx(Error(Errc::processFailed, cat("migration ", prog.status, ": ", why)));
    }
    if (opts.postcopy && !postcopyStarted && prog.status == "active" && prog.iterations >= 2) {
      // The first pass over RAM is done: the guest runs on there from here, and pages it
      // still lacks are fetched on demand.
      if (auto r = c.execute("migrate-start-postcopy"); !r) return ctx(r.error().context("migrate-start-postcopy"));
      postcopyStarted = true;
    }
    if (deadline.expired())
      return ctx(Error(Errc::timeout, cat("the migration did not complete within ", opts.timeout.count(), " s (",
                                          formatSize(prog.remainingBytes), " left; the guest may dirty memory faster "
                                          "than the link: try --postcopy or a larger --downtime-ms)")));
    auto next = Clock::now() + kPollInterval;
    while (Clock::now() < next) {
      if (auto s = wire::checkSignals(); !s) return ctx(s.error());
      if (!disks) {
        std::this_thread::sleep_for(50ms);
      } else if (c.waitEvent(isPreSwitchover, Deadline::in(50ms))) {
        break;  // the guest is paused for the switch-over: no time to lose
      }
    }
  }

  // 5. The receiver's word that the guest runs there (it has it all; this QEMU is stopped).
  // After a switch to postcopy the guest has run there since; the word only confirms it.
  auto word = wire::readFrame(sock, {"running", "failed"}, Deadline::in(kConfirmTimeout), wire::checkSignals);
  if (!word && !postcopyStarted) return ctx(word.error().context("waiting for the receiver to run the guest"));
  if (word && qmp::stringField(*word, "type") == "failed")
    return ctx(Error(Errc::processFailed, cat("the receiver could not run the guest: ", wire::peerText(*word, "error"))));
  if (!word) log::warn("VM ", name, " runs on ", to->display(), " since the switch to postcopy, but the receiver did not "
                       "confirm the end: ", word.error().message());
  committed = true;
  MigrateResult result;
  result.to = to->display();
  result.downtimeMs = static_cast<double>(qmp::intField(final, "downtime"));
  result.transferredBytes = count(member(final, "ram"), "transferred");
  result.postcopy = postcopyStarted;
  result.agentNote = guest->note();
  // The guest's devices thaw with the agent's `restored` there; this copy is done.
  (void)c.execute("quit", Json::object(), Deadline::in(5s));
  if (!waitForExit(qemuPid, Deadline::in(10s))) {
    log::warn("QEMU of VM ", name, " did not quit after the migration; killing pid ", qemuPid);
    (void)killQemu(qemuPid, Deadline::in(5s));
  }
  cleanRunFiles(p);
  VmRecord after = loadRecord(p);
  after.stoppedAt = nowIso();
  after.stopKind = cat("migrated to ", result.to);
  if (auto s = saveRecord(p, after); !s) log::warn("VM ", name, " migrated, but lifecycle.json not updated: ", s.error().message());
  result.totalMs = msSince(t0);
  if (opts.cleanup) {
    // Out of sight in one step, then its files go (as `vmckpt delete` does).
    std::string doomed = cat(root_.vmsDir(), "/.delete-", name, "-", ::getpid());
    Status gone = ::rename(p.dir.c_str(), doomed.c_str()) == 0 ? store::removeStoreTree(doomed)
                                                                : Status(failErrno(cat("rename ", p.dir), errno));
    result.cleanedUp = gone.has_value();
    if (!gone) log::warn("VM ", name, " runs on ", result.to, ", but --cleanup did not remove it here: ", gone.error().message());
  }
  if (auto st = root_.vmExists(name) ? statusLocked(name, spec) : Result<VmStatus>(fail(Errc::notFound, name))) {
    result.source = std::move(*st);
  } else {
    result.source.name = name;
    result.source.state = VmState::stopped;
    result.source.spec = spec;
  }
  return result;
}

}  // namespace vmckpt::vmm
