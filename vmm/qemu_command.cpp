#include "vmm/qemu_command.hpp"

#include "common/strings.hpp"

namespace vmckpt::vmm {
namespace {

// QEMU option values are comma-separated; a literal comma is written twice.
std::string escapeCommas(const std::string& s) {
  std::string out;
  for (char c : s) {
    out += c;
    if (c == ',') out += ',';
  }
  return out;
}

}  // namespace

std::vector<std::string> buildQemuCommand(const VmSpec& spec, const VmPaths& paths, const QemuLaunch& launch) {
  std::vector<std::string> a = {launch.binary};
  auto add = [&a](std::initializer_list<std::string> items) { a.insert(a.end(), items); };

  add({"-name", cat("guest=", escapeCommas(spec.name), ",debug-threads=on")});
  add({"-no-user-config", "-nodefaults", "-display", "none"});
  add({"-machine", cat(launch.machine.empty() ? spec.machine : launch.machine, ",memory-backend=ram0")});
  add({"-accel", launch.accel == Accel::kvm ? "kvm" : "tcg"});
  add({"-cpu", spec.cpu.empty() ? "max" : spec.cpu});
  add({"-smp", std::to_string(spec.vcpus)});
  add({"-m", cat(spec.memoryBytes / (1024 * 1024), "M")});
  if (spec.ram == RamBackend::anon)
    add({"-object", cat("memory-backend-ram,id=ram0,size=", spec.memoryBytes)});
  else
    add({"-object", cat("memory-backend-file,id=ram0,size=", spec.memoryBytes, ",mem-path=", escapeCommas(paths.mem),
                        ",share=on")});

  if (spec.kernelBoot) {
    add({"-kernel", paths.kernel});
    if (spec.hasInitrd) add({"-initrd", paths.initrd});
    if (!spec.append.empty()) add({"-append", spec.append});
  }

  for (size_t i = 0; i < spec.disks.size(); ++i) {
    const auto& d = spec.disks[i];
    add({"-blockdev", cat("driver=file,node-name=file", i, ",filename=", escapeCommas(paths.live + "/" + d.file),
                          ",cache.direct=off")});
    add({"-blockdev", cat("driver=", diskFormatName(d.format), ",node-name=disk", i, ",file=file", i)});
    add({"-device", cat("virtio-blk-pci,drive=disk", i, ",id=vblk", i, i == 0 && !spec.kernelBoot ? ",bootindex=0" : "")});
  }

  const std::string mac = spec.net.mac.empty() ? defaultMac(spec.name) : spec.net.mac;
  switch (spec.net.mode) {
    case NetMode::none: break;
    case NetMode::user:
      add({"-netdev", "user,id=net0", "-device", cat("virtio-net-pci,netdev=net0,mac=", mac)});
      break;
    case NetMode::socketUdp:
      add({"-netdev", cat("socket,id=net0,udp=", spec.net.remote, ",localaddr=", spec.net.local), "-device",
           cat("virtio-net-pci,netdev=net0,mac=", mac)});
      break;
    case NetMode::socketMcast:
      // Loopback only: the group's packets never leave this host.
      add({"-netdev", cat("socket,id=net0,mcast=", spec.net.group, ",localaddr=127.0.0.1"), "-device",
           cat("virtio-net-pci,netdev=net0,mac=", mac)});
      break;
  }

  // The console is a socket (for input) whose output QEMU also appends to serial.log,
  // whether or not a client is connected.
  add({"-chardev", cat("socket,id=serial0,path=", escapeCommas(paths.console), ",server=on,wait=off,logfile=",
                       escapeCommas(paths.serialLog), ",logappend=on"),
       "-serial", "chardev:serial0"});
  add({"-chardev", cat("socket,id=qmp0,path=", escapeCommas(paths.qmpSocket), ",server=on,wait=off"), "-mon",
       "chardev=qmp0,mode=control"});
  if (spec.agent) {
    add({"-device", "virtio-serial-pci,id=vser0"});
    add({"-chardev", cat("socket,id=agent0,path=", escapeCommas(paths.agentSocket), ",server=on,wait=off")});
    add({"-device", "virtserialport,bus=vser0.0,chardev=agent0,name=org.vmckpt.agent.0"});
  }
  // Passthrough devices, each in a hot-pluggable slot of its own. A restore's QEMU gets
  // the empty slots only: the snapshot was captured with the devices unplugged, and they
  // are plugged once the guest runs. ACPI hotplug on the slots: the guest ejects at once
  // (native PCIe hotplug waits 5 s after the attention button).
  if (!spec.passthrough.empty()) {
    add({"-global", "ICH9-LPC.acpi-pci-hotplug-with-bridge-support=on"});
    const auto devices = spec.passthroughHere();
    for (size_t i = 0; i < devices.size(); ++i) {
      add({"-device", vfio::slotCommandLine(devices[i], i)});
      if (!launch.incoming) add({"-device", vfio::deviceCommandLine(devices[i])});
    }
  }
  add({"-pidfile", paths.pidFile});
  if (launch.daemonize) add({"-daemonize"});
  // -S too: a stream saved from a running guest would otherwise start it as soon as it is
  // loaded; restore decides (and `restore --paused` keeps it stopped).
  if (launch.incoming) add({"-S", "-incoming", "defer"});
  a.insert(a.end(), spec.extraArgs.begin(), spec.extraArgs.end());
  return a;
}

}  // namespace vmckpt::vmm
