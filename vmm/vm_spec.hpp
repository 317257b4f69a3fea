// The VM spec: what a VM is made of, stored as versioned JSON in the VM's directory.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"
#include "host-plugins/vfio/passthrough_device.hpp"

namespace vmckpt::vmm {

using Json = nlohmann::json;

enum class Accel { automatic, kvm, tcg };
std::string_view accelName(Accel a);
Result<Accel> parseAccel(std::string_view s);

enum class DiskFormat { raw, qcow2 };
std::string_view diskFormatName(DiskFormat f);
Result<DiskFormat> parseDiskFormat(std::string_view s);

struct DiskSpec {
  std::string file;    // file name inside the VM's live directory (e.g. "disk0.qcow2")
  DiskFormat format = DiskFormat::raw;
  std::string source;  // where it was imported from (informational)
};

enum class NetMode { none, user, socketUdp, socketMcast };

struct NetSpec {
  NetMode mode = NetMode::none;
  std::string local;   // socket-udp: "127.0.0.1:PORT" we bind
  std::string remote;  // socket-udp: "127.0.0.1:PORT" we send to
  std::string group;   // socket-mcast: "239.x.y.z:PORT", a LAN shared by every VM on it
  std::string mac;     // "52:54:00:xx:xx:xx"; derived from the name when empty
};
// Where guest RAM lives. file: a shared file in the store (the fast path maps and clones
// it). anon: QEMU's anonymous memory; snapshots then need --live (background-snapshot),
// which writes all of RAM into the snapshot, and restores read it back in full.
enum class RamBackend { file, anon };
std::string_view ramBackendName(RamBackend r);
Result<RamBackend> parseRamBackend(std::string_view s);

// What a restored or received VM gets instead of the devices it had, told to the guest
// agent's plugins with RESTART: "ib" -> "rxe:eth0", "gpu" -> "none", "net" -> "user".
// Keys: [a-z0-9_]{1,32}; values: up to 128 printable ASCII characters without spaces.
// Keys "pci_ID" belong to the passthrough device ID: its host= on this host
// ("pci_gpu0" -> "0000:66:00.0"; vfio::applyDeviceMap).
using DeviceMap = std::map<std::string, std::string>;
// One "--map KEY=VALUE" argument, added to (or replacing the key in) `into`.
Status parseDeviceMapArg(std::string_view arg, DeviceMap& into);

// "none", "user", "socket-udp,local=HOST:PORT,remote=HOST:PORT[,mac=M]",
// "socket-mcast,group=ADDR:PORT[,mac=M]".
Result<NetSpec> parseNet(std::string_view s);
std::string describeNet(const NetSpec& n);

struct VmSpec {
  // On-disk format of spec.json; refuse a newer major or minor than we know.
  static constexpr int kFormatMajor = 1;
  // 1.1: ram, device_map; 1.2: passthrough (written as 1.1 without passthrough devices).
  static constexpr int kFormatMinor = 2;

  std::string name;
  unsigned vcpus = 1;
  std::uint64_t memoryBytes = 0;
  std::string machine = "q35";
  std::string cpu;  // empty: "max" (works on TCG and KVM; "host" fails on some hosts)
  Accel accel = Accel::automatic;
  // Kernel boot: kernel and initrd are copied into the VM's live/ directory at create time.
  bool kernelBoot = false;
  bool hasInitrd = false;
  std::string append;
  std::vector<DiskSpec> disks;
  NetSpec net;
  bool agent = true;  // virtio-serial channel org.vmckpt.agent.0
  std::vector<std::string> extraArgs;
  RamBackend ram = RamBackend::file;
  DeviceMap deviceMap;  // from the latest restore/import/receive with --map
  // Hot-pluggable PCI devices (create --passthrough), each in a slot of its own; unplugged
  // for every snapshot, plugged back after it and after a restore. q35 only.
  std::vector<vfio::PassthroughDevice> passthrough;

  // The passthrough devices as plugged on this host: host= as the device map says.
  std::vector<vfio::PassthroughDevice> passthroughHere() const;

  Json toJson() const;
  // Tolerates unknown keys; refuses formats newer than this build knows.
  static Result<VmSpec> fromJson(const Json& j);
  // Checks values that do not depend on the filesystem.
  Status validate() const;
};

// VM names: 1-64 of [A-Za-z0-9_.-], not starting with '.' or '-'.
Status validateVmName(std::string_view name);

// A stable locally administered MAC derived from the VM name.
std::string defaultMac(std::string_view name);

inline constexpr unsigned kMaxVcpus = 255;
inline constexpr std::uint64_t kMinMemoryBytes = 16ull << 20;

}  // namespace vmckpt::vmm
