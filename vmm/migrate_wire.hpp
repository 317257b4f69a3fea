// What `vmckpt migrate` and `vmckpt receive` say to each other on the TCP connection
// before (and after) it carries QEMU's migration stream. Frames are "VMCKMIG1", a 32-bit
// big-endian length and that many bytes of JSON; the boot files follow the offer raw.
//
//   source                                   receiver
//   offer (spec, machine, file sha256s,
//          disks with virtual sizes)     ->
//   kernel bytes, initrd bytes            ->
//                                         <- ready (QEMU waits, -incoming defer; with
//                                            disks: nbd_port, where empty images of the
//                                            same size are exported writable) | refused
//   [disks mirrored over NBD, QEMU to QEMU, until every mirror is READY]
//   [agent quiesce]
//   go (quiesced?) | abort                ->
//   ==== QEMU's migration stream; both hand the socket to their QEMU ====
//   [source pauses before the switch-over, ends its mirrors (the copies are complete
//    and consistent), only then lets QEMU send the last of RAM and the devices]
//                                         <- running | failed   (on the same socket)
//
// A completed stream therefore means the disks are in sync: no frame of ours may follow
// `go` from the source, since the receiver's QEMU reads ahead on the socket.
//
// Reads take exactly one frame and never more, so the bytes after `go` stay for QEMU.
// The receiver trusts nothing it is sent: every field is checked here, file names come
// from a fixed set, and text from the peer is cleaned before anyone prints it.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "common/deadline.hpp"
#include "common/error.hpp"
#include "common/tcp.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm::wire {

inline constexpr int kProtocol = 2;  // 2: disks over NBD
inline constexpr std::uint32_t kMaxFrameBytes = 1u << 20;
inline constexpr std::uint64_t kMaxKernelBytes = 256ull << 20;
inline constexpr std::uint64_t kMaxInitrdBytes = 2ull << 30;
inline constexpr std::size_t kMaxPeerText = 400;
inline constexpr std::size_t kMaxDisks = 16;
inline constexpr std::uint64_t kMaxDiskBytes = 64ull << 40;

// A boot file of the VM, sent after the offer: "kernel", then "initrd" (when the spec has them).
struct BootFile {
  std::string name;
  std::uint64_t size = 0;
  std::string sha256;  // 64 lowercase hex digits
};

// A disk of the VM: the receiver creates an empty image like it, which the source's
// QEMU then fills over NBD. `file` and `format` repeat the spec's entry.
struct DiskOffer {
  std::string file;  // "disk<i>.<format>", as `create` names them
  DiskFormat format = DiskFormat::raw;
  std::uint64_t virtualSize = 0;  // bytes the guest sees
};

struct Offer {
  std::string sourceVm;      // the VM's name on the source (informational)
  VmSpec spec;               // as the source has it; the receiver renames it
  std::string machine;       // resolved machine type the source QEMU runs (pc-q35-7.2)
  std::string qemuVersion;   // of the source QEMU (informational)
  std::string accel;         // what the source QEMU runs under ("kvm", "tcg"); the receiver
                             // must use the same (CPU state does not cross). Empty: unknown
  bool postcopy = false;
  std::vector<BootFile> files;
  std::vector<DiskOffer> disks;  // one per spec.disks entry, same order

  Json toJson() const;
  // Checks everything a peer could get wrong or abuse; Errc::protocol with the reason.
  static Result<Offer> fromJson(const Json& j);
};

// The boot files a spec needs, in the order they travel.
std::vector<std::string> bootFileNames(const VmSpec& spec);

// A boolean a peer sent; false when absent or not a boolean.
bool peerFlag(const Json& message, std::string_view key);
// Text a peer sent, safe to print on one line: printable ASCII, at most kMaxPeerText.
std::string peerText(const Json& message, std::string_view key);

// The TCP port of the receiver's NBD server in its "ready" frame (on the host the
// source connected to); Errc::protocol when absent or not a port.
Result<std::uint16_t> nbdPort(const Json& ready);

// The QMP getfd name under which each side hands the connection to its QEMU.
inline constexpr const char* kQemuFdName = "vmckpt-migration";

// For waits under a SignalBlock: Ctrl-C (or TERM, HUP) that arrived ends them with
// "interrupted by SIGINT", and is not delivered afterwards.
Status checkSignals();

Status sendFrame(int fd, const Json& message, Deadline deadline, const tcp::Interrupt& interrupt = {});
// Reads one frame; its "type" must be one of `expected`.
Result<Json> readFrame(int fd, std::initializer_list<std::string_view> expected, Deadline deadline,
                       const tcp::Interrupt& interrupt = {});

}  // namespace vmckpt::vmm::wire
