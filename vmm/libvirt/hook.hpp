// What vmckpt does when libvirt runs its qemu hook (`vmckpt libvirt-hook run`), and the
// per-domain state it keeps for that under <home>/libvirt/:
//   hook.log              one JSON line per call: {time, domain, op, sub, extra[, changes|error]}
//   domains/<domain>.json {"format": "1.0", "device_map": {...}, "ended": time}
// The hook runs inside libvirtd's own operations: it never talks to libvirt (that would
// deadlock) and only reads and writes these files.
#pragma once

#include <optional>
#include <string>

#include "common/error.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm::libvirt {

// The four arguments libvirt passes: domain name, operation, sub-operation, extra ("-").
struct HookCall {
  std::string domain, op, sub, extra;
};

// libvirt allows almost any domain name; one used in a path must be a valid vmckpt VM name
// (1-64 of [A-Za-z0-9_.-], not starting with '.' or '-').
Status validateDomainName(std::string_view domain);

// Whether libvirt uses the hook's stdout as the domain XML for this call.
bool rewritesXml(const HookCall& call);

// Handles one call. Returns the XML to print (libvirt's new domain definition) for
// migrate/restore of a domain that has a device map, else nothing. Errors: for
// migrate/restore, a failed rewrite (libvirt then refuses the operation); for every other
// operation only a failure to log, which the caller reports without failing libvirt.
Result<std::optional<std::string>> runHook(const std::string& home, const HookCall& call, const std::string& domainXml);

// The device map applied to `domain` on its next migrate/restore (empty: none).
Result<DeviceMap> loadDomainDeviceMap(const std::string& home, const std::string& domain);
Status saveDomainDeviceMap(const std::string& home, const std::string& domain, const DeviceMap& map);

std::string hookLogPath(const std::string& home);
std::string domainRecordPath(const std::string& home, const std::string& domain);

}  // namespace vmckpt::vmm::libvirt
