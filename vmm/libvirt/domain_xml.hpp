// Rewrites a libvirt domain XML for the host it is restored or migrated to, by a vmckpt
// device map (vm_spec.hpp DeviceMap). The text comes from libvirt's hook, i.e. from whoever
// defined the domain: it is parsed as untrusted input (size-capped, no network access, no
// entity expansion, no DTD at all).
#pragma once

#include <cstddef>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm::libvirt {

inline constexpr std::size_t kMaxDomainXmlBytes = 16u << 20;

struct DomainRewrite {
  std::string xml;                   // the rewritten <domain> document (no XML declaration)
  std::vector<std::string> changes;  // one phrase per change, e.g. "removed hostdev pci 0000:3b:00.0"
};

// What each key does to the domain (other keys are left to the guest agent's plugins):
//   gpu=none      removes every PCI passthrough <hostdev> (all of them: the XML does not say
//                 which one is a GPU, and the source host's PCI classes are not known here)
//   gpu=OTHER     fails (unsupported): passthrough of a named GPU is not built yet
//   ib=ANY        removes every PCI passthrough <hostdev> as well; the value (e.g. rxe:eth0)
//                 tells the guest what replaces the HCA, which needs no host device
//   net=user      replaces each <interface> by <interface type='user'> that keeps what the
//                 guest sees (mac, model, address, alias, boot, rom, mtu; a virtio model where
//                 none was given): libvirt refuses a restore or migration whose XML changes
//                 the guest ABI (NIC model, device count), so the backend is all that changes
//   (the same ABI check means removing hostdevs only succeeds where libvirt accepts a
//   changed device count, i.e. not on `virsh restore` of a saved image: untested)
//   net=none      removes each <interface>
//   net=OTHER     fails (unsupported)
// Fails with Errc::invalidArgument on malformed XML, a DTD, a root other than <domain>, or
// more than kMaxDomainXmlBytes.
Result<DomainRewrite> applyDeviceMap(std::string_view domainXml, const DeviceMap& map);

}  // namespace vmckpt::vmm::libvirt
