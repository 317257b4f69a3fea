#include "vmm/migrate_wire.hpp"

#include <array>
#include <cstring>
#include <string.h>

#include "common/signal_block.hpp"
#include "common/strings.hpp"
#include "qmp/qmp_client.hpp"

namespace vmckpt::vmm::wire {
namespace {

constexpr std::array<char, 8> kMagic = {'V', 'M', 'C', 'K', 'M', 'I', 'G', '1'};

Unexpected<Error> refuse(std::string why) { return fail(Errc::protocol, std::move(why)); }

bool isToken(std::string_view s, std::size_t maxLen, std::string_view extra) {
  if (s.size() > maxLen) return false;
  for (char c : s)
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
          extra.find(c) != std::string_view::npos))
      return false;
  return true;
}

bool isSha256Hex(std::string_view s) {
  if (s.size() != 64) return false;
  for (char c : s)
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
  return true;
}

std::uint64_t limitFor(const std::string& file) { return file == "kernel" ? kMaxKernelBytes : kMaxInitrdBytes; }

// The disk list must repeat the spec's disks, under the names `create` gives them (so a
// peer cannot make the receiver write over mem, kernel or initrd), with sane sizes.
Result<std::vector<DiskOffer>> disksFromJson(const Json& j, const VmSpec& spec) {
  if (spec.disks.size() > kMaxDisks) return refuse(cat("the source VM has ", spec.disks.size(), " disks (at most ", kMaxDisks, ")"));
  auto disks = j.find("disks");
  if (spec.disks.empty() && disks == j.end()) return std::vector<DiskOffer>{};
  if (disks == j.end() || !disks->is_array() || disks->size() != spec.disks.size())
    return refuse(cat("the offer must list the VM's ", spec.disks.size(), " disks with their sizes"));
  std::vector<DiskOffer> out;
  for (std::size_t i = 0; i < spec.disks.size(); ++i) {
    const Json& d = (*disks)[i];
    const DiskSpec& s = spec.disks[i];
    const std::string expected = cat("disk", i, ".", diskFormatName(s.format));
    if (s.file != expected || qmp::stringField(d, "file") != expected || qmp::stringField(d, "format") != diskFormatName(s.format))
      return refuse(cat("disk ", i, " must be ", expected, " in the spec and in the disk list"));
    long long size = qmp::intField(d, "virtual_size", -1);
    if (size <= 0 || static_cast<std::uint64_t>(size) > kMaxDiskBytes || size % 512 != 0)
      return refuse(cat(expected, ": virtual size must be a multiple of 512 B between 512 B and ", formatSize(kMaxDiskBytes)));
    out.push_back({expected, s.format, static_cast<std::uint64_t>(size)});
  }
  return out;
}

}  // namespace

std::vector<std::string> bootFileNames(const VmSpec& spec) {
  std::vector<std::string> names;
  if (spec.kernelBoot) names.push_back("kernel");
  if (spec.hasInitrd) names.push_back("initrd");
  return names;
}

// A peer's JSON is never read with .at()/value(), which throw on a wrong type.
bool peerFlag(const Json& message, std::string_view key) {
  if (!message.is_object()) return false;
  auto it = message.find(key);
  return it != message.end() && it->is_boolean() && it->get<bool>();
}

std::string peerText(const Json& message, std::string_view key) {
  std::string raw = qmp::stringField(message, key, "(no reason given)");
  std::string out;
  for (char c : raw) {
    if (out.size() >= kMaxPeerText) {
      out += "...";
      break;
    }
    out += (c >= ' ' && c <= '~') ? c : '?';
  }
  return out;
}

Json Offer::toJson() const {
  Json filesJ = Json::array();
  for (const auto& f : files) filesJ.push_back({{"name", f.name}, {"size", f.size}, {"sha256", f.sha256}});
  Json disksJ = Json::array();
  for (const auto& d : disks)
    disksJ.push_back({{"file", d.file}, {"format", diskFormatName(d.format)}, {"virtual_size", d.virtualSize}});
  return {{"type", "offer"},       {"protocol", kProtocol}, {"vm", sourceVm},
          {"spec", spec.toJson()}, {"machine", machine},    {"qemu_version", qemuVersion},
          {"postcopy", postcopy},  {"files", filesJ},       {"disks", disksJ},
          {"accel", accel.empty() ? Json(nullptr) : Json(accel)}};
}

Result<Offer> Offer::fromJson(const Json& j) {
  Offer o;
  if (long long p = qmp::intField(j, "protocol", -1); p != kProtocol)
    return refuse(cat("the source speaks migration protocol ", p, ", this vmckpt speaks ", kProtocol));
  auto specJ = j.find("spec");
  if (specJ == j.end()) return refuse("the offer has no VM spec");
  auto spec = VmSpec::fromJson(*specJ);
  if (!spec) return refuse(cat("the source's VM spec is not acceptable: ", spec.error().message()));
  o.spec = std::move(*spec);
  // QEMU arguments from a peer could name any file on this host: never run them.
  if (!o.spec.extraArgs.empty())
    return refuse("the source VM has extra QEMU arguments (create --qemu-arg); receive does not run arguments a peer sends");
  if (!isToken(o.spec.cpu, 128, "._-,=+"))
    return refuse("the source's CPU model has characters other than letters, digits and ._-,=+");
  o.sourceVm = qmp::stringField(j, "vm");
  if (!validateVmName(o.sourceVm)) o.sourceVm = "?";
  o.machine = qmp::stringField(j, "machine");
  if (o.machine.empty() || !isToken(o.machine, 64, "._-"))
    return refuse("the source's machine type is missing or has characters other than letters, digits and ._-");
  o.qemuVersion = qmp::stringField(j, "qemu_version");
  if (!isToken(o.qemuVersion, 32, ".+~-")) o.qemuVersion = "?";
  if (auto a = j.find("accel"); a != j.end() && !a->is_null()) {
    auto accel = a->is_string() ? parseAccel(a->get<std::string>()) : Result<Accel>(fail(Errc::invalidArgument, "not text"));
    if (!accel || *accel == Accel::automatic) return refuse("the source's accelerator is not kvm or tcg");
    o.accel = std::string(accelName(*accel));
  }
  if (auto pc = j.find("postcopy"); pc != j.end() && !pc->is_boolean()) return refuse("postcopy is not a boolean");
  o.postcopy = peerFlag(j, "postcopy");

  auto disks = disksFromJson(j, o.spec);
  if (!disks) return fail(disks.error());
  o.disks = std::move(*disks);
  for (auto& d : o.spec.disks) d.source.clear();  // a path on the source host: nothing to us

  const std::vector<std::string> names = bootFileNames(o.spec);
  auto files = j.find("files");
  if (files == j.end() || !files->is_array() || files->size() != names.size())
    return refuse(cat("the offer must list exactly the boot files the spec needs (", join(names, ", "), ")"));
  for (std::size_t i = 0; i < names.size(); ++i) {
    const Json& f = (*files)[i];
    BootFile b{qmp::stringField(f, "name"), 0, qmp::stringField(f, "sha256")};
    if (b.name != names[i]) return refuse(cat("boot file ", i, " must be ", names[i]));
    long long size = qmp::intField(f, "size", -1);
    if (size <= 0 || static_cast<std::uint64_t>(size) > limitFor(b.name))
      return refuse(cat(b.name, ": size must be between 1 B and ", formatSize(limitFor(b.name))));
    b.size = static_cast<std::uint64_t>(size);
    if (!isSha256Hex(b.sha256)) return refuse(cat(b.name, ": sha256 is not 64 lowercase hex digits"));
    o.files.push_back(std::move(b));
  }
  return o;
}

Result<std::uint16_t> nbdPort(const Json& ready) {
  long long port = qmp::intField(ready, "nbd_port", -1);
  if (port < 1 || port > 65535) return refuse("the receiver's ready message has no NBD port for the disks");
  return static_cast<std::uint16_t>(port);
}

Status checkSignals() {
  if (int sig = SignalBlock::takePending(); sig != 0)
    return fail(Errc::processFailed, cat("interrupted by SIG", ::sigabbrev_np(sig)));
  return {};
}

Status sendFrame(int fd, const Json& message, Deadline deadline, const tcp::Interrupt& interrupt) {
  std::string body = message.dump(-1, ' ', false, Json::error_handler_t::replace);
  if (body.size() > kMaxFrameBytes) return fail(Errc::internal, cat("migration message of ", body.size(), " bytes is too large"));
  std::string frame(kMagic.begin(), kMagic.end());
  const auto len = static_cast<std::uint32_t>(body.size());
  for (int shift : {24, 16, 8, 0}) frame += static_cast<char>((len >> shift) & 0xff);
  frame += body;
  return tcp::sendAll(fd, frame.data(), frame.size(), deadline, interrupt);
}

Result<Json> readFrame(int fd, std::initializer_list<std::string_view> expected, Deadline deadline,
                       const tcp::Interrupt& interrupt) {
  std::array<unsigned char, kMagic.size() + 4> head{};
  VMCKPT_TRY(tcp::readExact(fd, head.data(), head.size(), deadline, interrupt));
  if (std::memcmp(head.data(), kMagic.data(), kMagic.size()) != 0)
    return refuse("the peer does not speak the vmckpt migration protocol (wrong magic)");
  std::uint32_t len = 0;
  for (std::size_t i = kMagic.size(); i < head.size(); ++i) len = (len << 8) | head[i];
  if (len == 0 || len > kMaxFrameBytes)
    return refuse(cat("the peer sent a message of ", len, " bytes (at most ", kMaxFrameBytes, ")"));
  std::string body(len, '\0');
  VMCKPT_TRY(tcp::readExact(fd, body.data(), body.size(), deadline, interrupt));
  Json j = Json::parse(body, nullptr, false);
  if (j.is_discarded() || !j.is_object()) return refuse("the peer sent a message that is not a JSON object");
  std::string type = qmp::stringField(j, "type");
  std::string want;
  for (auto e : expected) {
    if (type == e) return j;
    want += cat(want.empty() ? "" : " or ", e);
  }
  return refuse(cat("the peer sent '", peerText(j, "type"), "' where ", want, " was expected"));
}

}  // namespace vmckpt::vmm::wire
