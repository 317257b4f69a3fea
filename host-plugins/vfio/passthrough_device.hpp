// A passthrough PCI device of a VM (`create --passthrough DRIVER,id=ID[,KEY=VALUE...]`):
// what QEMU is told to plug, and the hot-pluggable slot it sits in. Pure: no I/O.
#pragma once

#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vfio {

using Json = nlohmann::json;

inline constexpr size_t kMaxPassthroughDevices = 16;

struct PassthroughDevice {
  std::string driver;  // QEMU's device driver: vfio-pci for a GPU; e1000e, edu, ... in tests
  std::string id;      // QEMU's device id: [a-z][a-z0-9_]{0,23}
  // KEY=VALUE properties after the id, in the order given (vfio-pci: host=0000:65:00.0).
  std::vector<std::pair<std::string, std::string>> props;

  // The value of property `key`, or empty.
  std::string prop(std::string_view key) const;
  bool operator==(const PassthroughDevice&) const = default;
};

// "DRIVER,id=ID[,KEY=VALUE...]", checked as validate() does.
Result<PassthroughDevice> parsePassthrough(std::string_view arg);
// Driver, id and properties of one device: no commas, spaces or shell characters, no
// property vmckpt sets itself (bus, id, driver), host= a PCI address.
Status validate(const PassthroughDevice& d);
// The devices of one VM: each valid, ids unique, at most kMaxPassthroughDevices.
Status validateAll(const std::vector<PassthroughDevice>& devices);
// "DRIVER,id=ID,KEY=VALUE...", as parsePassthrough reads it.
std::string describe(const PassthroughDevice& d);

// Serialized in the VM spec and the snapshot manifest.
Json toJson(const PassthroughDevice& d);
Result<PassthroughDevice> fromJson(const Json& j);

// The empty slot each device is plugged into: a pcie-root-port of its own (q35), always
// on QEMU's command line, so that a VM restored without the device has the same PCI
// topology as the one that was captured without it.
std::string slotId(std::string_view deviceId);  // "vmckpt-slot-ID"
// `-device` values for QEMU's command line. `index`: the device's place in the VM's list
// (the slot's chassis number).
std::string slotCommandLine(const PassthroughDevice& d, size_t index);
std::string deviceCommandLine(const PassthroughDevice& d);
// The arguments of QMP device_add (every property as a string, as on the command line).
Json deviceAddArguments(const PassthroughDevice& d);

// The device map key that names another host device for `id` on restore: "pci_ID"
// (a prefix the agent's keys gpu, ib, net never have).
std::string deviceMapKey(std::string_view id);
inline constexpr std::string_view kDeviceMapPrefix = "pci_";
// The devices with host= replaced by what `map` says for them ("pci_ID=0000:66:00.0").
// A pci_ key that names no device, a device without host=, or a value that is not a PCI
// address is refused.
Result<std::vector<PassthroughDevice>> applyDeviceMap(const std::vector<PassthroughDevice>& devices,
                                                      const std::map<std::string, std::string>& map);

// DDDD:BB:DD.F or BB:DD.F, hexadecimal.
bool isPciAddress(std::string_view s);

}  // namespace vmckpt::vfio
