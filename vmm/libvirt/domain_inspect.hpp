// What vmckpt needs to know about a libvirt domain, read from its XML (as untrusted input,
// like domain_xml.hpp), and the one edit that starts a domain waiting for a saved state.
// Pure functions: no libvirt API calls.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/error.hpp"

namespace vmckpt::vmm::libvirt {

// The virtio-serial port name of vmckpt's guest agent channel.
inline constexpr char kAgentChannelName[] = "org.vmckpt.agent.0";
// libvirt's namespace for passing QEMU arguments (<qemu:commandline>).
inline constexpr char kQemuXmlNamespace[] = "http://libvirt.org/schemas/domain/qemu/1.0";

struct DomainDisk {
  std::string device;     // "disk", "cdrom", "floppy", "lun" (libvirt's default: "disk")
  std::string type;       // <disk type=...>: "file", "block", "network", "volume", ... (libvirt's default: "file")
  std::string source;     // <source file=...> (type file) or dev=... (block); empty otherwise
  std::string format;     // <driver type=...>, e.g. "raw", "qcow2"; empty if absent
  std::string target;     // <target dev=...>, e.g. "vda"
  bool readonly = false;  // <readonly/> present, or a cdrom (read-only by nature)
  bool shareable = false;
};

struct DomainInfo {
  std::string name, uuid;
  std::string type;               // <domain type=...>: "kvm", "qemu"
  bool agentChannel = false;      // a <channel type='unix'> whose <target type='virtio' name='org.vmckpt.agent.0'/>
  std::string agentSocket;        // its <source mode='bind' path=...> when present (libvirt fills the path in the live XML)
  bool memoryFileShared = false;  // <memoryBacking> has <source type='file'/> and <access mode='shared'/>
  std::string memorySource;       // the <memoryBacking><source type=...> value, empty if none
  bool hugepages = false;         // <memoryBacking><hugepages/>
  bool numa = false;              // <cpu><numa> present (vmckpt's fast path supports only a single RAM object)
  bool kernelBoot = false;        // <os><kernel> (direct kernel boot)
  std::vector<DomainDisk> disks;
  int hostdevs = 0;               // <hostdev> elements under <devices>
};

// Fails with Errc::invalidArgument on XML that parseDomain refuses (see domain_xml.hpp).
Result<DomainInfo> inspectDomainXml(std::string_view xml);

// The domain XML with `-incoming defer` added as
//   <qemu:commandline><qemu:arg value='-incoming'/><qemu:arg value='defer'/></qemu:commandline>
// in libvirt's QEMU namespace (declared on <domain> unless bound there already, under any
// prefix; an existing <qemu:commandline> gets the two args). Used to start a domain paused,
// waiting for vmckpt to feed it a saved state. Fails (Errc::invalidArgument) if the domain
// already passes QEMU an -incoming argument.
Result<std::string> withIncomingDefer(std::string_view xml);

}  // namespace vmckpt::vmm::libvirt
