// VmManager::receive: the destination side of a live migration (see migrate_wire.hpp).
// One connection from `vmckpt migrate`: the offer is checked, the VM is built from it in
// a staging directory and published under the lock, QEMU waits with -incoming defer and
// then reads the stream from that same connection. Disks arrive before it, written by the
// source's QEMU into empty images exported over NBD (migrate_disks.hpp). Until the guest
// runs here, any failure kills this QEMU and removes the VM (disks included) again.
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <functional>
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
#include "vmm/agent/agent_client.hpp"
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

constexpr auto kReceiveOfferTimeout = 120s;  // the offer and the boot files, once connected
constexpr auto kReturnPathGrace = 200ms;
const char* kStagingPrefix = ".receive-";

// Where the protocol stands, for what the source is told when something fails here.
enum class Phase { offer, streaming, afterStream };

// Postcopy makes this QEMU catch the guest's first touch of each missing page with
// userfaultfd. QEMU checks that only on anonymous memory and fails later, with the source
// already stopped, where guest RAM is a shared file the kernel cannot track (ext4, btrfs,
// xfs): so the same registration is tried here first, on a file beside the RAM file.
Status probePostcopy(const std::string& live, bool anonymousRam) {
  UniqueFd ufd(static_cast<int>(::syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK)));
  if (!ufd)
    return fail(Errc::unsupported, errno == EPERM ? std::string("postcopy needs userfaultfd, which this user may not use "
                                                                "(sysctl vm.unprivileged_userfaultfd=0)")
                                                  : cat("postcopy needs userfaultfd: ", std::strerror(errno)));
  uffdio_api api{};
  api.api = UFFD_API;
  if (::ioctl(ufd.get(), UFFDIO_API, &api) != 0) return failErrno("userfaultfd UFFDIO_API", errno);
  const std::size_t len = static_cast<std::size_t>(::sysconf(_SC_PAGESIZE));
  UniqueFd file;
  if (!anonymousRam) {
    file.reset(::open(live.c_str(), O_TMPFILE | O_RDWR | O_CLOEXEC, 0600));
    if (!file || ::ftruncate(file.get(), static_cast<off_t>(len)) != 0) return failErrno(cat("scratch file in ", live), errno);
  }
  void* at = ::mmap(nullptr, len, PROT_READ | PROT_WRITE, anonymousRam ? MAP_PRIVATE | MAP_ANONYMOUS : MAP_SHARED,
                    anonymousRam ? -1 : file.get(), 0);
  if (at == MAP_FAILED) return failErrno("mmap for the userfaultfd probe", errno);
  uffdio_register reg{};
  reg.range.start = reinterpret_cast<std::uintptr_t>(at);
  reg.range.len = len;
  reg.mode = UFFDIO_REGISTER_MODE_MISSING;
  int rc = ::ioctl(ufd.get(), UFFDIO_REGISTER, &reg);
  int err = errno;
  ::munmap(at, len);
  if (rc == 0) return {};
  if (anonymousRam) return fail(Errc::unsupported, cat("postcopy: userfaultfd refuses anonymous memory: ", std::strerror(err)));
  auto fsType = fs::filesystemType(live);
  return fail(Errc::unsupported,
              cat("postcopy is not possible into this store: guest RAM is a shared file on ",
                  fsType ? *fsType : std::string("this filesystem"), ", where userfaultfd cannot catch missing pages (",
                  std::strerror(err), "); it works with the store on tmpfs or hugetlbfs, or for VMs created with --ram anon"));
}

// Reads one announced boot file from the connection into `path`, checking its sha256.
Status receiveBootFile(int sock, const wire::BootFile& f, const std::string& path, Deadline deadline) {
  UniqueFd out(::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600));
  if (!out) return failErrno(cat("create ", path), errno);
  Sha256 sum;
  std::string buf(1 << 20, '\0');
  for (std::uint64_t left = f.size; left > 0;) {
    const std::size_t n = static_cast<std::size_t>(std::min<std::uint64_t>(buf.size(), left));
    VMCKPT_TRY(tcp::readExact(sock, buf.data(), n, deadline, wire::checkSignals));
    sum.update(buf.data(), n);
    for (std::size_t done = 0; done < n;) {
      ssize_t w = ::write(out.get(), buf.data() + done, n - done);
      if (w < 0 && errno == EINTR) continue;
      if (w < 0) return failErrno(cat("write ", path), errno);
      done += static_cast<std::size_t>(w);
    }
    left -= n;
  }
  if (sum.hexDigest() != f.sha256) return fail(Errc::protocol, cat(f.name, " does not match the sha256 the source announced"));
  return {};
}

// True once QEMU has closed its copy of the connection, which it does right after its
// last word on the return path (postcopy's, and precopy's when one was opened). Before
// that, a frame of ours could reach the source's QEMU among its return-path messages.
bool awaitQemuRelease(pid_t qemu, int sock, Deadline deadline) {
  struct stat st{};
  if (::fstat(sock, &st) != 0) return false;
  const std::string ours = cat("socket:[", st.st_ino, "]"), fdDir = cat("/proc/", qemu, "/fd");
  for (;; std::this_thread::sleep_for(2ms)) {
    bool holds = false;
    for (const auto& n : fs::entriesWithPrefix(fdDir, "")) {
      char target[64];
      ssize_t len = ::readlink(cat(fdDir, "/", n).c_str(), target, sizeof target);
      if (len > 0 && std::string_view(target, static_cast<std::size_t>(len)) == ours) {
        holds = true;
        break;
      }
    }
    if (!holds) return true;
    if (deadline.expired()) return false;
  }
}

// Waits for this QEMU's incoming migration to end. A postcopy guest is started as soon
// as it may run (QEMU started with -S would keep it stopped while its pages arrive);
// `beforeRun` comes first.
Status awaitIncoming(qmp::Client& c, pid_t qemu, Deadline deadline, const std::function<Status()>& beforeRun) {
  bool started = false;
  for (;;) {
    VMCKPT_TRY(wire::checkSignals());
    auto ev = c.waitEvent([](const qmp::Event& e) { return e.name == "MIGRATION"; },
                          Deadline::in(std::min<std::chrono::milliseconds>(deadline.remaining(), 200ms)));
    if (!ev) {
      // QEMU (7.2) exits when it cannot load a stream; its daemonized stderr is gone.
      const bool lost = ev.error().code() != Errc::timeout;
      if (lost ? waitForExit(qemu, Deadline::in(1s)) : ::kill(qemu, 0) != 0)
        return fail(Errc::processFailed, "QEMU exited while loading the stream (the source sent something it could not load)");
      if (lost) return fail(ev.error());
      if (deadline.expired()) return fail(Errc::timeout, "the migration did not complete in time");
      continue;
    }
    std::string status = qmp::stringField(ev->data, "status");
    if (status == "completed") return {};
    if (status == "failed" || status == "cancelled") {
      auto q = c.execute("query-migrate", Json::object(), Deadline::in(1s));
      std::string why = q ? qmp::stringField(*q, "error-desc") : std::string();
      return fail(Errc::processFailed, cat("the migration ", status, why.empty() ? " (the source stopped sending, or sent "
                                                                                    "something QEMU could not load)"
                                                                                  : cat(": ", why)));
    }
    if (status == "postcopy-active" && !started) {
      VMCKPT_TRY(beforeRun());
      if (auto r = c.execute("cont"); !r) return fail(r.error().context("cont in postcopy"));
      started = true;
    }
  }
}

}  // namespace

Result<ReceiveResult> VmManager::receive(const std::string& name, const ReceiveOptions& opts) {
  auto ctx = [&](const Error& e) { return fail(e.context(cat("receive ", name))); };
  if (auto v = validateVmName(name); !v) return ctx(v.error());
  auto at = tcp::parseEndpoint(opts.listen, true, "0.0.0.0");
  if (!at) return ctx(at.error());
  if (root_.vmExists(name)) return ctx(Error(Errc::alreadyExists, cat("a VM named ", name, " already exists")));

  // Ctrl-C, TERM and HUP are held back; every wait checks for them and ends with an error,
  // so that the guards below remove what was built.
  SignalBlock holdSignals;
  std::optional<tcp::Listener> listener;
  if (auto l = tcp::Listener::open(*at)) listener.emplace(std::move(*l));
  else return ctx(l.error());
  if (opts.onListening) opts.onListening(listener->address());
  const Deadline deadline = Deadline::in(opts.timeout);
  ReceiveResult result;
  auto conn = listener->acceptOne(deadline, wire::checkSignals, result.from);
  if (!conn) return ctx(conn.error());
  listener.reset();  // one source only
  auto t0 = Clock::now();
  const int sock = conn->get();
  log::info("connection from ", result.from);

  // Whatever fails from here, the source is told why (while it listens for a message).
  Phase phase = Phase::offer;
  auto tellSource = [&](const Error& e) {
    if (phase != Phase::streaming) {
      const char* type = phase == Phase::offer ? "refused" : "failed";
      (void)wire::sendFrame(sock, {{"type", type}, {"error", cat("receive ", name, ": ", e.message())}}, Deadline::in(2s));
    }
    ::shutdown(sock, SHUT_RDWR);
  };
  auto failed = [&](const Error& e) {
    tellSource(e);
    return ctx(e);
  };

  auto offerJ = wire::readFrame(sock, {"offer"}, Deadline::in(kReceiveOfferTimeout), wire::checkSignals);
  if (!offerJ) return failed(offerJ.error().context(cat("reading the offer from ", result.from)));
  auto offer = wire::Offer::fromJson(*offerJ);
  if (!offer) return failed(offer.error());
  VmSpec spec = offer->spec;
  spec.name = name;
  for (const auto& [k, v] : opts.deviceMap) spec.deviceMap[k] = v;
  // Migrate refuses VMs with passthrough devices; a pci_ key here names none.
  if (!spec.passthrough.empty())
    return failed(Error(Errc::unsupported, "the source VM has passthrough devices, which live migration does not move"));
  if (auto mapped = vfio::applyDeviceMap(spec.passthrough, spec.deviceMap); !mapped) return failed(mapped.error());
  // The guest's NIC keeps its MAC (it is in the device state anyway).
  if (spec.net.mac.empty() && offer->sourceVm != "?") spec.net.mac = defaultMac(offer->sourceVm);

  // 1. The VM, built in vms/.receive-NAME-PID and published under its name with its lock
  // held (the flock travels with the file through the rename). Removed on any failure.
  for (const auto& n : store::removeStaleStagingDirs(root_.vmsDir(), kStagingPrefix, killOrphanQemu))
    log::info("removed ", n, " left by an interrupted receive");
  VmPaths staged(cat(root_.vmsDir(), "/", kStagingPrefix, name, "-", ::getpid()));
  std::string built = staged.dir;
  ScopeExit removeBuilt([&] {
    if (auto s = store::removeStoreTree(built); !s) log::error("could not remove ", built, ": ", s.error().message());
  });
  auto build = [&]() -> Result<VmLock> {
    for (const auto& d : {staged.dir, staged.run}) VMCKPT_TRY(fs::makeDirs(d, 0700));
    auto lock = VmLock::acquire(staged, name);
    if (!lock) return fail(lock.error());
    store::StoreCapabilities caps = store::probeStore(root_.vmsDir());
    VMCKPT_TRY(store::makeBackend(caps.best())->createLiveDir(staged.live));
    for (const auto& f : offer->files)
      VMCKPT_TRY(receiveBootFile(sock, f, f.name == "kernel" ? staged.kernel : staged.initrd, Deadline::in(kReceiveOfferTimeout)));
    for (const auto& d : offer->disks) VMCKPT_TRY(createEmptyDisk(cat(staged.live, "/", d.file), d.format, d.virtualSize));
    VMCKPT_TRY(fs::writeFileAtomic(staged.spec, spec.toJson().dump(2) + "\n"));
    if (offer->postcopy) VMCKPT_TRY(probePostcopy(staged.live, spec.ram == RamBackend::anon));
    VmPaths final = root_.vm(name);
    if (::renameat2(AT_FDCWD, staged.dir.c_str(), AT_FDCWD, final.dir.c_str(), RENAME_NOREPLACE) != 0) {
      int err = errno;
      return fail(err == EEXIST || err == ENOTEMPTY ? Error(Errc::alreadyExists, cat("a VM named ", name, " already exists"))
                                                    : Error::fromErrno(cat("rename ", staged.dir), err));
    }
    built = final.dir;
    return lock;
  };
  auto lock = build();
  if (!lock) return failed(lock.error());
  VmPaths p = root_.vm(name);
  {
    UniqueFd log(::open(p.serialLog.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600));
    std::string mark = cat("[vmckpt: migrated in from VM ", offer->sourceVm, " at ", result.from, ", ", nowIso(), "]\n");
    if (log) (void)!::write(log.get(), mark.data(), mark.size());
  }

  // 2. QEMU as the source runs it, waiting for the stream (-incoming defer, -S).
  // Under the source's accelerator: CPU state does not cross between KVM and TCG.
  VmSpec bootSpec = spec;
  if (!offer->accel.empty()) bootSpec.accel = offer->accel == "kvm" ? Accel::kvm : Accel::tcg;
  auto booted = bootQemu(bootSpec, p, {.home = root_.home(), .incoming = true, .machine = offer->machine});
  if (!booted && !offer->accel.empty())
    return failed(booted.error().context(cat("the source runs the guest under ", offer->accel, ", which it needs here too")));
  if (!booted) return failed(booted.error());
  qmp::Client& c = booted->qmp();
  Json caps = Json::array({{{"capability", "events"}, {"state", true}},
                           {{"capability", "x-ignore-shared"}, {"state", false}},
                           {{"capability", "postcopy-ram"}, {"state", offer->postcopy}}});
  if (auto r = c.execute("migrate-set-capabilities", {{"capabilities", caps}}); !r)
    return failed(r.error().context("migrate-set-capabilities"));
  // The disks' exports, on the address this end listens on (where the source reached it).
  Json ready = {{"type", "ready"}, {"postcopy", offer->postcopy}};
  if (!offer->disks.empty()) {
    auto port = exportDisksForMigration(c, at->host, offer->disks.size());
    if (!port) return failed(port.error());
    ready["nbd_port"] = *port;
  }
  if (auto s = wire::sendFrame(sock, ready, Deadline::in(10s)); !s) return failed(s.error().context("telling the source"));

  // 3. The source quiesces its guest, then says go; the stream follows on this socket.
  auto go = wire::readFrame(sock, {"go", "abort"}, deadline, wire::checkSignals);
  if (!go) return failed(go.error().context("waiting for the source to start"));
  if (qmp::stringField(*go, "type") == "abort")
    return failed(Error(Errc::processFailed, cat("the source gave up before the migration started: ", wire::peerText(*go, "error"))));
  const bool quiesced = wire::peerFlag(*go, "quiesced");
  phase = Phase::streaming;
  if (auto r = c.execute("getfd", {{"fdname", wire::kQemuFdName}}, Deadline::in(5s), std::span<const int>(&sock, 1)); !r)
    return failed(r.error().context("getfd"));
  if (auto r = c.execute("migrate-incoming", {{"uri", cat("fd:", wire::kQemuFdName)}}); !r)
    return failed(r.error().context("migrate-incoming"));
  // A completed stream means the source ended its mirrors first: the disks are complete.
  bool exporting = !offer->disks.empty();
  auto endExports = [&]() -> Status {
    if (!exporting) return {};
    exporting = false;
    return stopDiskExports(c);
  };
  if (auto s = awaitIncoming(c, booted->pid(), deadline, endExports); !s) return failed(s.error());
  if (auto s = endExports(); !s) return failed(s.error());
  phase = Phase::afterStream;

  // 4. Run (QEMU started with -S keeps the guest stopped), then tell the source, which
  // stops its copy only on this word.
  auto st = c.execute("query-status");
  if (!st) return failed(st.error().context("query-status"));
  if (qmp::stringField(*st, "status") != "running") {
    (void)c.takeEvents();
    if (auto ev = c.executeUntilEvent("cont", Json::object(), "RESUME", Deadline::in(5s)); !ev)
      return failed(ev.error().context("cont"));
  }
  if (!awaitQemuRelease(booted->pid(), sock, Deadline::in(5s)))
    log::info("QEMU still holds the migration connection; telling the source anyway");
  // The source's QEMU reads its return path in its own thread, which may still be on
  // its way out after our QEMU's last message: give it time before our frame follows.
  if (offer->postcopy) std::this_thread::sleep_for(kReturnPathGrace);
  if (auto s = wire::sendFrame(sock, {{"type", "running"}}, Deadline::in(10s)); !s)
    return failed(s.error().context("telling the source that the guest runs here"));
  result.totalMs = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();

  // RESTART for the agent's plugins (and the filesystems frozen on the source thaw).
  if (spec.agent) {
    auto ta = Clock::now();
    auto r = agent::notifyRestored(p.agentSocket, Json(spec.deviceMap), quiesced ? 10s : 1s);
    result.agentMs = std::chrono::duration<double, std::milli>(Clock::now() - ta).count();
    if (!r) {
      result.agentNote = cat(quiesced ? "the guest runs, but its agent did not take 'restored' (plugins not restarted, "
                                        "filesystems may still be frozen): "
                                      : "no guest agent answered 'restored': ",
                             r.error().message());
      if (quiesced) log::warn(result.agentNote);
      else log::info(result.agentNote);
    }
  }
  VmRecord rec;
  noteBoot(rec, *booted);
  if (auto s = saveRecord(p, rec); !s) log::warn("VM ", name, " runs, but lifecycle.json was not written: ", s.error().message());
  booted->release();
  removeBuilt.cancel();
  auto status = statusLocked(name, spec);
  if (!status) return fail(status.error());
  result.status = std::move(*status);
  return result;
}

}  // namespace vmckpt::vmm
