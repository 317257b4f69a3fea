#include "vmm/vm_spec.hpp"

#include <cstdio>
#include <cstdlib>

#include "common/strings.hpp"
#include "vmm/json_integer.hpp"

namespace vmckpt::vmm {
namespace {

Status validateHostPort(std::string_view what, const std::string& hp) {
  auto colon = hp.rfind(':');
  if (colon == std::string::npos || colon == 0 || colon + 1 == hp.size())
    return fail(Errc::invalidArgument, cat(what, " '", hp, "' must be HOST:PORT"));
  std::string port = hp.substr(colon + 1);
  unsigned long v = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return fail(Errc::invalidArgument, cat(what, " port '", port, "' is not a number"));
    v = v * 10 + static_cast<unsigned long>(c - '0');
    if (v > 65535) break;
  }
  if (v == 0 || v > 65535) return fail(Errc::invalidArgument, cat(what, " port '", port, "' is out of range"));
  return {};
}

}  // namespace

std::string_view accelName(Accel a) {
  switch (a) {
    case Accel::automatic: return "auto";
    case Accel::kvm: return "kvm";
    case Accel::tcg: return "tcg";
  }
  return "?";
}

Result<Accel> parseAccel(std::string_view s) {
  if (s == "auto") return Accel::automatic;
  if (s == "kvm") return Accel::kvm;
  if (s == "tcg") return Accel::tcg;
  return fail(Errc::invalidArgument, cat("accel '", s, "' is not one of auto, kvm, tcg"));
}

std::string_view ramBackendName(RamBackend r) { return r == RamBackend::anon ? "anon" : "file"; }

Result<RamBackend> parseRamBackend(std::string_view s) {
  if (s == "file") return RamBackend::file;
  if (s == "anon") return RamBackend::anon;
  return fail(Errc::invalidArgument, cat("RAM backend '", s, "' is not one of file, anon"));
}

namespace {
Status validateDeviceMapEntry(std::string_view key, std::string_view value) {
  if (key.empty() || key.size() > 32)
    return fail(Errc::invalidArgument, cat("device map key '", key, "' must be 1-32 characters"));
  for (char c : key)
    if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_'))
      return fail(Errc::invalidArgument, cat("device map key '", key, "' may only contain a-z, 0-9, '_'"));
  if (value.empty() || value.size() > 128)
    return fail(Errc::invalidArgument, cat("device map value for '", key, "' must be 1-128 characters"));
  for (char c : value)
    if (c <= ' ' || c > '~')
      return fail(Errc::invalidArgument, cat("device map value for '", key, "' must be printable ASCII without spaces"));
  return {};
}
}  // namespace

Status parseDeviceMapArg(std::string_view arg, DeviceMap& into) {
  auto eq = arg.find('=');
  if (eq == std::string_view::npos)
    return fail(Errc::invalidArgument, cat("--map '", arg, "' must be KEY=VALUE (e.g. ib=rxe:eth0, gpu=none, net=user)"));
  std::string_view key = arg.substr(0, eq), value = arg.substr(eq + 1);
  VMCKPT_TRY(validateDeviceMapEntry(key, value));
  into[std::string(key)] = std::string(value);
  return {};
}

std::string_view diskFormatName(DiskFormat f) { return f == DiskFormat::qcow2 ? "qcow2" : "raw"; }

Result<DiskFormat> parseDiskFormat(std::string_view s) {
  if (s == "raw") return DiskFormat::raw;
  if (s == "qcow2") return DiskFormat::qcow2;
  return fail(Errc::invalidArgument, cat("disk format '", s, "' is not one of raw, qcow2"));
}

Result<NetSpec> parseNet(std::string_view s) {
  NetSpec n;
  auto parts = split(s, ',');
  const std::string& mode = parts[0];
  if (mode == "none") n.mode = NetMode::none;
  else if (mode == "user") n.mode = NetMode::user;
  else if (mode == "socket-udp") n.mode = NetMode::socketUdp;
  else if (mode == "socket-mcast") n.mode = NetMode::socketMcast;
  else return fail(Errc::invalidArgument, cat("network '", mode, "' is not one of none, user, socket-udp, socket-mcast"));
  for (size_t i = 1; i < parts.size(); ++i) {
    auto eq = parts[i].find('=');
    std::string key = parts[i].substr(0, eq), val = eq == std::string::npos ? "" : parts[i].substr(eq + 1);
    if (key == "local" && n.mode == NetMode::socketUdp) n.local = val;
    else if (key == "remote" && n.mode == NetMode::socketUdp) n.remote = val;
    else if (key == "group" && n.mode == NetMode::socketMcast) n.group = val;
    else if (key == "mac" && n.mode != NetMode::none) n.mac = val;
    else return fail(Errc::invalidArgument, cat("network option '", parts[i], "' is not valid for ", mode));
  }
  return n;
}

std::string describeNet(const NetSpec& n) {
  switch (n.mode) {
    case NetMode::none: return "none";
    case NetMode::user: return "user";
    case NetMode::socketUdp: return cat("socket-udp ", n.local, " -> ", n.remote);
    case NetMode::socketMcast: return cat("socket-mcast ", n.group);
  }
  return "?";
}

Status validateVmName(std::string_view name) {
  if (name.empty()) return fail(Errc::invalidArgument, "VM name is empty");
  if (name.size() > 64) return fail(Errc::invalidArgument, cat("VM name '", name, "' is longer than 64 characters"));
  if (name[0] == '.' || name[0] == '-')
    return fail(Errc::invalidArgument, cat("VM name '", name, "' must not start with '.' or '-'"));
  for (char c : name) {
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' ||
              c == '-';
    if (!ok) return fail(Errc::invalidArgument, cat("VM name '", name, "' may only contain letters, digits, '_', '.', '-'"));
  }
  return {};
}

std::string defaultMac(std::string_view name) {
  // FNV-1a of the name; 52:54:00 is QEMU's locally administered prefix.
  std::uint32_t h = 2166136261u;
  for (char c : name) {
    h ^= static_cast<unsigned char>(c);
    h *= 16777619u;
  }
  char buf[32];
  std::snprintf(buf, sizeof buf, "52:54:00:%02x:%02x:%02x", (h >> 16) & 0xff, (h >> 8) & 0xff, h & 0xff);
  return buf;
}

Status VmSpec::validate() const {
  VMCKPT_TRY(validateVmName(name));
  if (vcpus == 0 || vcpus > kMaxVcpus)
    return fail(Errc::invalidArgument, cat("vcpus must be between 1 and ", kMaxVcpus, ", not ", vcpus));
  if (memoryBytes < kMinMemoryBytes)
    return fail(Errc::invalidArgument, cat("memory must be at least ", formatSize(kMinMemoryBytes)));
  if (memoryBytes % (2u << 20) != 0)
    return fail(Errc::invalidArgument, "memory must be a multiple of 2 MiB");
  if (hasInitrd && !kernelBoot) return fail(Errc::invalidArgument, "an initrd needs a kernel (--kernel)");
  if (!kernelBoot && disks.empty()) return fail(Errc::invalidArgument, "nothing to boot: give --kernel or --disk");
  if (machine.empty()) return fail(Errc::invalidArgument, "machine type is empty");
  if (net.mode == NetMode::socketUdp) {
    VMCKPT_TRY(validateHostPort("socket-udp local", net.local));
    VMCKPT_TRY(validateHostPort("socket-udp remote", net.remote));
  }
  if (net.mode == NetMode::socketMcast) {
    VMCKPT_TRY(validateHostPort("socket-mcast group", net.group));
    const int first = std::atoi(net.group.c_str());
    if (first < 224 || first > 239 || net.group.find('.') == std::string::npos)
      return fail(Errc::invalidArgument, cat("socket-mcast group '", net.group, "' is not an IPv4 multicast address (224-239.x.x.x:PORT)"));
  }
  if (!passthrough.empty()) {
    VMCKPT_TRY(vfio::validateAll(passthrough));
    // Each device's slot is a pcie-root-port, which only the q35 machine has.
    if (machine != "q35" && !startsWith(machine, "pc-q35-"))
      return fail(Errc::invalidArgument, cat("passthrough devices need the q35 machine (this VM's is ", machine, ")"));
    if (auto mapped = vfio::applyDeviceMap(passthrough, deviceMap); !mapped) return fail(mapped.error());
  }
  for (const auto& a : extraArgs)
    if (a == "-daemonize" || a == "-pidfile" || a == "-qmp" || a == "-incoming")
      return fail(Errc::invalidArgument, cat("extra QEMU argument '", a, "' is managed by vmckpt and cannot be overridden"));
  return {};
}

std::vector<vfio::PassthroughDevice> VmSpec::passthroughHere() const {
  auto mapped = vfio::applyDeviceMap(passthrough, deviceMap);
  return mapped ? *mapped : passthrough;  // validate() refuses a map that does not apply
}

Json VmSpec::toJson() const {
  Json disksJ = Json::array();
  for (const auto& d : disks)
    disksJ.push_back({{"file", d.file}, {"format", diskFormatName(d.format)}, {"source", d.source}});
  const char* netModes[] = {"none", "user", "socket-udp", "socket-mcast"};
  Json netJ = {{"mode", netModes[static_cast<int>(net.mode)]}};
  if (net.mode == NetMode::socketUdp) {
    netJ["local"] = net.local;
    netJ["remote"] = net.remote;
  }
  if (net.mode == NetMode::socketMcast) netJ["group"] = net.group;
  if (!net.mac.empty()) netJ["mac"] = net.mac;
  Json j = {
      {"format", {{"major", kFormatMajor}, {"minor", passthrough.empty() ? 1 : kFormatMinor}}},
      {"name", name},
      {"vcpus", vcpus},
      {"memory_bytes", memoryBytes},
      {"machine", machine},
      {"cpu", cpu},
      {"accel", accelName(accel)},
      {"kernel_boot", kernelBoot},
      {"initrd", hasInitrd},
      {"append", append},
      {"disks", disksJ},
      {"net", netJ},
      {"agent", agent},
      {"extra_args", extraArgs},
      {"ram", ramBackendName(ram)},
      {"device_map", deviceMap},
  };
  if (!passthrough.empty()) {
    Json pt = Json::array();
    for (const auto& d : passthrough) pt.push_back(vfio::toJson(d));
    j["passthrough"] = pt;
  }
  return j;
}

Result<VmSpec> VmSpec::fromJson(const Json& j) {
  if (!j.is_object()) return fail(Errc::corrupt, "spec is not a JSON object");
  try {
    const Json& f = j.at("format");
    int major = jsonInteger<int>(f.at("major"), "format major"), minor = jsonInteger<int>(f.at("minor"), "format minor");
    if (major > kFormatMajor || (major == kFormatMajor && minor > kFormatMinor))
      return fail(Errc::corrupt, cat("spec format ", major, ".", minor, " is newer than this vmckpt understands (",
                                     kFormatMajor, ".", kFormatMinor, "); upgrade vmckpt"));
    VmSpec s;
    s.name = j.at("name").get<std::string>();
    s.vcpus = jsonInteger<unsigned>(j.at("vcpus"), "vcpus");
    s.memoryBytes = jsonInteger<std::uint64_t>(j.at("memory_bytes"), "memory_bytes");
    s.machine = j.value("machine", std::string("q35"));
    s.cpu = j.value("cpu", std::string());
    auto accel = parseAccel(j.value("accel", std::string("auto")));
    if (!accel) return fail(Errc::corrupt, accel.error().message());
    s.accel = *accel;
    s.kernelBoot = j.value("kernel_boot", false);
    s.hasInitrd = j.value("initrd", false);
    s.append = j.value("append", std::string());
    if (auto d = j.find("disks"); d != j.end()) {
      for (const auto& dj : *d) {
        DiskSpec disk;
        disk.file = dj.at("file").get<std::string>();
        auto fmt = parseDiskFormat(dj.at("format").get<std::string>());
        if (!fmt) return fail(Errc::corrupt, fmt.error().message());
        disk.format = *fmt;
        disk.source = dj.value("source", std::string());
        if (disk.file.empty() || disk.file.find('/') != std::string::npos || disk.file[0] == '.')
          return fail(Errc::corrupt, cat("disk file name '", disk.file, "' is not a plain file name"));
        s.disks.push_back(std::move(disk));
      }
    }
    if (auto n = j.find("net"); n != j.end()) {
      std::string mode = n->at("mode").get<std::string>();
      if (mode == "none") s.net.mode = NetMode::none;
      else if (mode == "user") s.net.mode = NetMode::user;
      else if (mode == "socket-udp") s.net.mode = NetMode::socketUdp;
      else if (mode == "socket-mcast") s.net.mode = NetMode::socketMcast;
      else return fail(Errc::corrupt, cat("unknown network mode '", mode, "'"));
      s.net.local = n->value("local", std::string());
      s.net.remote = n->value("remote", std::string());
      s.net.group = n->value("group", std::string());
      s.net.mac = n->value("mac", std::string());
    }
    s.agent = j.value("agent", true);
    s.extraArgs = j.value("extra_args", std::vector<std::string>{});
    auto ram = parseRamBackend(j.value("ram", std::string("file")));
    if (!ram) return fail(Errc::corrupt, ram.error().message());
    s.ram = *ram;
    if (auto dm = j.find("device_map"); dm != j.end()) {
      if (!dm->is_object() || dm->size() > 64) return fail(Errc::corrupt, "device_map is not an object of at most 64 entries");
      for (const auto& [k, v] : dm->items()) {
        if (!v.is_string()) return fail(Errc::corrupt, cat("device_map value for '", k, "' is not a string"));
        if (auto e = validateDeviceMapEntry(k, v.get<std::string>()); !e) return fail(Errc::corrupt, e.error().message());
        s.deviceMap[k] = v.get<std::string>();
      }
    }
    if (auto pt = j.find("passthrough"); pt != j.end()) {  // format 1.2
      if (!pt->is_array() || pt->size() > vfio::kMaxPassthroughDevices)
        return fail(Errc::corrupt, cat("passthrough is not an array of at most ", vfio::kMaxPassthroughDevices, " devices"));
      for (const auto& dj : *pt) {
        auto d = vfio::fromJson(dj);
        if (!d) return fail(d.error());
        s.passthrough.push_back(std::move(*d));
      }
    }
    if (auto v = s.validate(); !v) return fail(Errc::corrupt, v.error().message());
    return s;
  } catch (const Json::exception& e) {
    return fail(Errc::corrupt, cat("spec: ", e.what()));
  }
}

}  // namespace vmckpt::vmm
