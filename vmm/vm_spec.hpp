// The VM spec: what a VM is made of, stored as versioned JSON in the VM's directory.
#pragma once

#include <cstdint>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <vector>

#include "common/error.hpp"

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

enum class NetMode { none, user, socketUdp };

struct NetSpec {
  NetMode mode = NetMode::none;
  std::string local;   // socket-udp: "127.0.0.1:PORT" we bind
  std::string remote;  // socket-udp: "127.0.0.1:PORT" we send to
  std::string mac;     // "52:54:00:xx:xx:xx"; derived from the name when empty
};
// "none", "user", "socket-udp,local=HOST:PORT,remote=HOST:PORT[,mac=M]".
Result<NetSpec> parseNet(std::string_view s);
std::string describeNet(const NetSpec& n);

struct VmSpec {
  // On-disk format of spec.json; refuse a newer major or minor than we know.
  static constexpr int kFormatMajor = 1;
  static constexpr int kFormatMinor = 0;

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
