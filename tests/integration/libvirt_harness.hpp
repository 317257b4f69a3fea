// A private libvirtd + virtlogd for one test, as the libvirt scout proved them: in their own
// mount namespace (unshare -m), with /etc/libvirt, /var/lib/libvirt, /run/libvirt,
// /var/log/libvirt and /var/cache/libvirt bind-mounted from a prefix in the test's temp dir
// and the client socket there too. Nothing of the host's libvirt is touched; teardown ends
// both daemons by pid (the namespace and its mounts go with them) and undefines the domains.
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "common/strings.hpp"
#include "harness.hpp"

namespace vmckpt::test {

class LibvirtTest : public VmckptTest {
 protected:
  void SetUp() override;
  void TearDown() override;

  // Why libvirt cannot run here (missing binaries, not root), or nothing.
  static std::optional<std::string> unavailable();
  // The qemu hook directory libvirtd will read (<prefix>/etc/hooks/qemu.d, created).
  std::string hooksDir() const { return prefix_ + "/etc/hooks/qemu.d"; }
  // Starts both daemons and waits (20 s) for a first `virsh version`; a failure is the reason.
  std::optional<std::string> startDaemons();
  // virsh against the private daemon.
  CliRun virsh(const std::vector<std::string>& args);
  // Defines a TCG domain booting the test guest with `devicesXml` added to <devices>;
  // undefined in teardown. `guestArgs` picks the workload (kernel command line). Its
  // serial console is a socket (sendSerial) logged to serialLog(name).
  void defineDomain(const std::string& name, const std::string& devicesXml,
                    const std::string& guestArgs = "vmckpt.workload=counter");
  std::string serialLog(const std::string& name) const { return cat(dir_, "/", name, ".serial"); }
  // Writes a line to the domain's serial console (the guest workload's stdin).
  void sendSerial(const std::string& name, const std::string& line);
  // vmckpt run as a host tool would run beside this libvirtd: in its mount namespace, where
  // the paths libvirt gives out (agent channel sockets under /var/lib/libvirt) are valid.
  // Before the daemon runs, plain vmckpt().
  CliRun vmckptBeside(const std::vector<std::string>& args);
  // The private daemon's URI, for vmckpt --connect.
  std::string uri() const { return cat("qemu+unix:///system?socket=", sockDir_, "/libvirt-sock"); }
  std::string dir_;  // everything of this test's libvirt

 private:
  void stopDaemons();
  std::string prefix_, sockDir_;
  std::vector<std::string> domains_;
  int libvirtdPid_ = -1, virtlogdPid_ = -1;
};

}  // namespace vmckpt::test
