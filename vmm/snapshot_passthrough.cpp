// VmSnapshot's passthrough steps (snapshot_job.hpp): the devices are unplugged after the
// agent's quiesce and plugged back as soon as the guest runs again, before its thaw
// (host-plugins/vfio does the QMP). Every way out of a snapshot plugs back what is missing.
#include <chrono>

#include "common/log.hpp"
#include "common/strings.hpp"
#include "host-plugins/vfio/hotplug.hpp"
#include "vmm/fault_injection.hpp"
#include "vmm/journal.hpp"
#include "vmm/qemu_boot.hpp"
#include "vmm/snapshot_job.hpp"

namespace vmckpt::vmm {

vfio::HotplugOptions VmSnapshot::hotplugOptions() const {
  vfio::HotplugOptions o;
  o.unplugTimeout = opts_.unplugTimeout;
  return o;
}

Status VmSnapshot::unplug() {
  const VmSpec& spec = held_->spec;
  if (spec.passthrough.empty()) return {};
  if (auto f = faultPoint("before-unplug", qemuPid_); !f) return fail(wrap(f.error()));
  journal_.unplugged = true;  // before the first device_del: a kill from here on must plug them back
  if (auto w = writeJournal(held_->paths, journal_); !w) return fail(wrap(w.error().context("journal")));
  devices_ = spec.passthroughHere();
  replugPending_ = true;  // the destructor plugs back whatever is missing
  vfio::HotplugOptions o = hotplugOptions();
  o.afterEachUnplug = [this](const vfio::PassthroughDevice&) { return faultPoint("mid-unplug", qemuPid_); };
  auto t = std::chrono::steady_clock::now();
  if (auto u = vfio::unplugAll(*client_, devices_, o); !u) return fail(wrap(u.error().context("unplug")));
  m_.timings.unplugMs = elapsedMs(t);
  for (const auto& d : devices_) m_.unplugged.push_back(d.id);
  if (auto f = faultPoint("after-unplug", qemuPid_); !f) return fail(wrap(f.error()));
  return {};
}

Status VmSnapshot::replugNowRunning() {
  if (!replugPending_) return {};
  auto t = std::chrono::steady_clock::now();
  VMCKPT_TRY(faultPoint("replug", qemuPid_));
  VMCKPT_TRY(vfio::plugAll(*client_, devices_, hotplugOptions()));
  replugPending_ = false;
  m_.timings.replugMs = elapsedMs(t);
  return {};
}

void VmSnapshot::plugBackAfterFailure() {
  auto plugged = vfio::plugMissing(*client_, devices_, hotplugOptions());
  if (!plugged) {  // the connection may be what failed: try a fresh one
    if (auto c2 = connectQmp(held_->paths, Deadline::in(std::chrono::seconds(5))))
      plugged = vfio::plugMissing(*c2, devices_, hotplugOptions());
  }
  if (plugged)
    replugPending_ = false;
  else
    log::error("could not plug back the passthrough devices of VM ", name_, " after a failed snapshot: ",
               plugged.error().message());
}

}  // namespace vmckpt::vmm
