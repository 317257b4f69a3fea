// Decides between KVM and TCG. KVM is used only where it really boots a Linux kernel:
// on some hosts (nested virtualization) /dev/kvm works for real-mode code but Linux
// guests stall right after the decompressor, so the probe boots a real kernel.
#pragma once

#include <string>

#include "common/error.hpp"
#include "vmm/vm_spec.hpp"

namespace vmckpt::vmm {

struct KvmProbe {
  bool deviceOpens = false;  // /dev/kvm opens read-write and answers KVM_GET_API_VERSION
  bool bootsLinux = false;   // a kernel booted under KVM printed its banner in time
  bool verified = false;     // the boot test ran (false when no kernel was available)
  double bootMs = 0;         // time to the kernel banner
  std::string reason;        // one phrase: why KVM is or is not used
  std::string kernel;        // the kernel the probe booted
};

// Probes KVM (cached per host boot in <home>/host/kvm-probe.json; `fresh` ignores the cache).
// `kernelHint` is a kernel to boot; when empty, the newest /boot/vmlinuz-* readable is used.
KvmProbe probeKvm(const std::string& home, const std::string& qemuBinary, const std::string& kernelHint,
                  bool fresh = false);

struct AccelChoice {
  Accel accel = Accel::tcg;  // effective: kvm or tcg
  std::string reason;
};

// Resolves the spec's accel: kvm and tcg are taken as asked (kvm fails if /dev/kvm is unusable);
// auto uses KVM only when the probe booted Linux with it.
Result<AccelChoice> chooseAccel(Accel requested, const std::string& home, const std::string& qemuBinary,
                                const std::string& kernelHint);

}  // namespace vmckpt::vmm
