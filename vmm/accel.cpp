#include "vmm/accel.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <chrono>
#include <nlohmann/json.hpp>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/log.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::vmm {
namespace {

using namespace std::chrono_literals;

constexpr int kProbeFormat = 1;
constexpr auto kProbeBootTimeout = 8s;
constexpr std::string_view kBanner = "Linux version";

bool kvmDeviceOpens(std::string* why) {
  UniqueFd fd(::open("/dev/kvm", O_RDWR | O_CLOEXEC));
  if (!fd) {
    *why = cat("/dev/kvm: ", std::strerror(errno));
    return false;
  }
  int v = ::ioctl(fd.get(), KVM_GET_API_VERSION, 0);
  if (v != KVM_API_VERSION) {
    *why = cat("/dev/kvm: unexpected API version ", v);
    return false;
  }
  return true;
}

std::string newestHostKernel() {
  std::vector<std::string> found;
  if (DIR* d = ::opendir("/boot")) {
    while (dirent* e = ::readdir(d))
      if (startsWith(e->d_name, "vmlinuz-")) found.push_back(std::string("/boot/") + e->d_name);
    ::closedir(d);
  }
  std::sort(found.begin(), found.end());
  for (auto it = found.rbegin(); it != found.rend(); ++it)
    if (::access(it->c_str(), R_OK) == 0) return *it;
  return {};
}

std::string bootId() {
  auto r = fs::readFile("/proc/sys/kernel/random/boot_id", 256);
  return r ? std::string(trim(*r)) : std::string();
}

// Boots `kernel` under KVM with the serial console on a file and waits for the banner.
void bootProbe(KvmProbe& p, const std::string& qemuBinary, const std::string& kernel) {
  char tmpl[] = "/tmp/vmckpt-kvm-probe-XXXXXX";
  if (!::mkdtemp(tmpl)) {
    p.reason = "could not create a temporary directory for the KVM probe";
    return;
  }
  std::string dir = tmpl, serial = dir + "/serial.log";
  auto child = ChildProcess::spawn({
      .argv = {qemuBinary, "-accel", "kvm", "-cpu", "max", "-m", "128", "-nodefaults", "-no-user-config", "-display",
               "none", "-no-reboot", "-kernel", kernel, "-append", "console=ttyS0 earlyprintk=serial,ttyS0 panic=-1",
               "-serial", cat("file:", serial)},
      .stdoutTo = Redirect::null(),
      .stderrTo = Redirect::toFile(dir + "/qemu.log"),
  });
  if (!child) {
    p.reason = cat("KVM probe could not start QEMU: ", child.error().message());
    (void)fs::removeTree(dir);
    return;
  }
  auto start = std::chrono::steady_clock::now();
  auto deadline = Deadline::in(kProbeBootTimeout);
  bool exited = false;
  while (!deadline.expired()) {
    auto log = fs::readFile(serial, 1 << 20);
    if (log && log->find(kBanner) != std::string::npos) {
      p.bootsLinux = true;
      p.bootMs = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();
      break;
    }
    if (!child->running()) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(50ms);
  }
  child->kill();
  p.verified = true;
  if (p.bootsLinux) {
    p.reason = cat("KVM booted a Linux kernel in ", static_cast<int>(p.bootMs), " ms");
  } else if (exited) {
    auto err = fs::readFile(dir + "/qemu.log", 4096);
    std::string last = err ? std::string(trim(*err)) : std::string();
    if (auto nl = last.rfind('\n'); nl != std::string::npos) last = last.substr(nl + 1);
    p.reason = cat("QEMU with KVM failed: ", last.empty() ? "no message" : last);
  } else {
    p.reason = cat("KVM present but a Linux guest made no progress in ", kProbeBootTimeout.count(),
                   " s (nested virtualization?)");
  }
  (void)fs::removeTree(dir);
}

}  // namespace

KvmProbe probeKvm(const std::string& home, const std::string& qemuBinary, const std::string& kernelHint, bool fresh) {
  const std::string cacheDir = home + "/host", cachePath = cacheDir + "/kvm-probe.json";
  const std::string boot = bootId();
  if (!fresh) {
    if (auto text = fs::readFile(cachePath, 64 << 10)) {
      auto j = nlohmann::json::parse(*text, nullptr, false);
      if (j.is_object() && j.value("format", 0) == kProbeFormat && j.value("boot_id", "") == boot &&
          j.value("qemu", "") == qemuBinary) {
        KvmProbe p;
        p.deviceOpens = j.value("device_opens", false);
        p.bootsLinux = j.value("boots_linux", false);
        p.verified = j.value("verified", false);
        p.bootMs = j.value("boot_ms", 0.0);
        p.reason = j.value("reason", "");
        p.kernel = j.value("kernel", "");
        if (p.verified || !p.deviceOpens) return p;  // an unverified result is retried
      }
    }
  }

  KvmProbe p;
  std::string why;
  p.deviceOpens = kvmDeviceOpens(&why);
  if (!p.deviceOpens) {
    p.reason = why;
  } else {
    p.kernel = !kernelHint.empty() && ::access(kernelHint.c_str(), R_OK) == 0 ? kernelHint : newestHostKernel();
    if (p.kernel.empty()) p.reason = "no kernel to test KVM with; not trusting KVM unverified";
    else {
      log::info("probing KVM by booting ", p.kernel, " (once per host boot)");
      bootProbe(p, qemuBinary, p.kernel);
    }
  }
  nlohmann::json j = {{"format", kProbeFormat}, {"boot_id", boot},        {"qemu", qemuBinary},
                      {"device_opens", p.deviceOpens}, {"boots_linux", p.bootsLinux}, {"verified", p.verified},
                      {"boot_ms", p.bootMs},    {"reason", p.reason},     {"kernel", p.kernel}};
  if (fs::makeDirs(cacheDir, 0700)) (void)fs::writeFileAtomic(cachePath, j.dump(2) + "\n");
  return p;
}

Result<AccelChoice> chooseAccel(Accel requested, const std::string& home, const std::string& qemuBinary,
                                const std::string& kernelHint) {
  if (requested == Accel::tcg) return AccelChoice{Accel::tcg, "tcg requested"};
  if (requested == Accel::kvm) {
    std::string why;
    if (!kvmDeviceOpens(&why)) return fail(Errc::unsupported, cat("accel kvm requested but ", why));
    return AccelChoice{Accel::kvm, "kvm requested"};
  }
  KvmProbe p = probeKvm(home, qemuBinary, kernelHint);
  if (p.bootsLinux) return AccelChoice{Accel::kvm, cat("auto: ", p.reason)};
  return AccelChoice{Accel::tcg, cat("auto: TCG because ", p.reason)};
}

}  // namespace vmckpt::vmm
