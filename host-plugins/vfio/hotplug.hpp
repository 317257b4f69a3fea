// Hot-unplug and re-plug of a VM's passthrough devices through QMP, each step confirmed:
// unplug is device_del, QEMU's DEVICE_DELETED for that id (sent once the guest has
// released the device and QEMU removed it), and the id gone from /machine/peripheral;
// plug is device_add into the device's slot, and the id there, realized. Every wait is
// bounded. The VM may be running or paused; these functions never stop or resume it.
#pragma once

#include <chrono>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "host-plugins/vfio/passthrough_device.hpp"
#include "qmp/qmp_client.hpp"

namespace vmckpt::vfio {

inline constexpr std::chrono::milliseconds kDefaultUnplugTimeout{5000};

struct HotplugOptions {
  // How long the guest gets to release one device (device_del to DEVICE_DELETED).
  std::chrono::milliseconds unplugTimeout = kDefaultUnplugTimeout;
  // After a timeout, how much longer a late DEVICE_DELETED is waited for, so that a device
  // a slow guest released just after the timeout is plugged back by the rollback.
  std::chrono::milliseconds lateReleaseGrace{2000};
  // Each QMP command (device_del, device_add, qom-get).
  std::chrono::milliseconds commandTimeout{5000};
  // Called once a device is confirmed gone; an error there fails the unplug as if that
  // device could not be removed (vmm's fault injection: mid-unplug).
  std::function<Status(const PassthroughDevice&)> afterEachUnplug;
};

// Whether QEMU has a realized device with that id (qom-get /machine/peripheral/ID realized).
Result<bool> devicePresent(qmp::Client& c, std::string_view id, Deadline deadline);

// Removes `devices` one after the other, in order. If the k-th fails (device_del refused,
// no DEVICE_DELETED within unplugTimeout, still present after it), the ones already
// removed are plugged back, in reverse order, before the error returns: the VM then has
// every device it had. A device the guest did not release in time is waited for a
// further lateReleaseGrace and plugged back if it went meanwhile; one still there stays
// plugged, with the request pending in the guest (QEMU cannot withdraw it).
Status unplugAll(qmp::Client& c, const std::vector<PassthroughDevice>& devices, const HotplugOptions& opts);

// Plugs `devices` into their slots, in order, each confirmed present. A failure does not
// stop the others; the error names every device that could not be plugged.
Status plugAll(qmp::Client& c, const std::vector<PassthroughDevice>& devices, const HotplugOptions& opts);

// Plugs those of `devices` that are not present (after a failure, or in recovery, where it
// is unknown how far an unplug or replug got); as plugAll otherwise.
Status plugMissing(qmp::Client& c, const std::vector<PassthroughDevice>& devices, const HotplugOptions& opts);

}  // namespace vmckpt::vfio
