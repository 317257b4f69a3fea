#include "libvirt_harness.hpp"

#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::test {

using namespace std::chrono_literals;

namespace {

bool onPath(const std::string& tool) {
  for (const auto& dir : split(std::getenv("PATH") ? std::getenv("PATH") : "/usr/bin:/bin", ':'))
    if (::access(cat(dir, "/", tool).c_str(), X_OK) == 0) return true;
  for (const char* dir : {"/usr/sbin", "/sbin"})
    if (::access(cat(dir, "/", tool).c_str(), X_OK) == 0) return true;
  return false;
}

int readPid(const std::string& path) {
  auto t = fs::readFile(path, 64);
  return t ? std::atoi(t->c_str()) : -1;
}

// SIGTERM, then SIGKILL after 5 s; the daemons are not our children, so poll /proc.
void endByPid(int pid) {
  if (pid <= 0) return;
  ::kill(pid, SIGTERM);
  for (int i = 0; i < 100 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(50ms);
  if (::kill(pid, 0) == 0) ::kill(pid, SIGKILL);
  for (int i = 0; i < 40 && ::kill(pid, 0) == 0; ++i) std::this_thread::sleep_for(50ms);
}

}  // namespace

std::optional<std::string> LibvirtTest::unavailable() {
  if (::geteuid() != 0) return "needs root (private libvirtd with bind mounts)";
  for (const char* tool : {"libvirtd", "virtlogd", "virsh", "unshare", "nsenter"})
    if (!onPath(tool)) return cat(tool, " not installed (scripts/install-deps.sh installs libvirt)");
  return std::nullopt;
}

void LibvirtTest::SetUp() {
  VmckptTest::SetUp();
  if (HasFatalFailure()) return;
  if (auto why = unavailable()) GTEST_SKIP() << *why;
  // Under the store, so that the base teardown also kills a QEMU libvirt left (its serial
  // path names this directory) and removes everything.
  dir_ = home_ + "/lv";
  prefix_ = dir_ + "/prefix";
  sockDir_ = dir_ + "/sock";
  for (const char* d : {"etc", "lib", "run", "log", "cache", "etc/hooks/qemu.d"})
    ASSERT_TRUE(fs::makeDirs(cat(prefix_, "/", d), 0755));
  ASSERT_TRUE(fs::makeDirs(sockDir_, 0700));
  ASSERT_TRUE(fs::makeDirs(dir_ + "/pids", 0700));
  ASSERT_TRUE(fs::writeFileAtomic(prefix_ + "/etc/libvirtd.conf",
                                  cat("unix_sock_dir = \"", sockDir_, "\"\nunix_sock_group = \"root\"\n",
                                      "unix_sock_rw_perms = \"0770\"\nauth_unix_rw = \"none\"\nauth_unix_ro = \"none\"\n",
                                      "log_outputs = \"3:file:/var/log/libvirt/libvirtd.log\"\n"), 0644));
  ASSERT_TRUE(fs::writeFileAtomic(prefix_ + "/etc/virtlogd.conf",
                                  "log_outputs = \"3:file:/var/log/libvirt/virtlogd.log\"\n", 0644));
  ASSERT_TRUE(fs::writeFileAtomic(prefix_ + "/etc/qemu.conf",
                                  cat("user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nsecurity_driver = \"none\"\n"
                                  "namespaces = [ ]\ncgroup_controllers = [ ]\n",
                                  "memory_backing_dir = \"", dir_, "/ram\"\n"), 0644));
  // The RAM files of file-backed domains, on the store's filesystem (the fast path clones them).
  ASSERT_TRUE(fs::makeDirs(dir_ + "/ram", 0700));
}

std::optional<std::string> LibvirtTest::startDaemons() {
  std::string script = cat("mkdir -p /var/lib/libvirt /run/libvirt /var/log/libvirt /var/cache/libvirt\n",
                           "mount --bind ", prefix_, "/etc /etc/libvirt\n", "mount --bind ", prefix_, "/lib /var/lib/libvirt\n",
                           "mount --bind ", prefix_, "/run /run/libvirt\n", "mount --bind ", prefix_, "/log /var/log/libvirt\n",
                           "mount --bind ", prefix_, "/cache /var/cache/libvirt\n", "virtlogd -d -p ", dir_,
                           "/pids/virtlogd.pid\n", "libvirtd -d -p ", dir_, "/pids/libvirtd.pid\n");
  auto r = runCommand({"unshare", "-m", "--propagation", "private", "sh", "-ec", script}, Deadline::in(30s));
  virtlogdPid_ = readPid(dir_ + "/pids/virtlogd.pid");
  libvirtdPid_ = readPid(dir_ + "/pids/libvirtd.pid");
  if (!r) return cat("starting libvirtd: ", r.error().message());
  if (!r->status.success()) return cat("starting libvirtd: ", r->status.describe(), ": ", trim(r->err));
  auto deadline = Deadline::in(20s);
  std::string last;
  while (!deadline.expired()) {
    // libvirtd writes its pid file after daemonizing: read it again until it is there.
    if (libvirtdPid_ <= 0) libvirtdPid_ = readPid(dir_ + "/pids/libvirtd.pid");
    if (fs::exists(sockDir_ + "/libvirt-sock")) {
      CliRun v = virsh({"version"});
      if (v.code == 0) return std::nullopt;
      last = v.err;
    }
    std::this_thread::sleep_for(200ms);
  }
  return cat("libvirtd did not answer within 20 s: ", trim(last));
}

CliRun LibvirtTest::virsh(const std::vector<std::string>& args) {
  std::vector<std::string> argv = {"virsh", "-q", "-c", cat("qemu+unix:///system?socket=", sockDir_, "/libvirt-sock")};
  argv.insert(argv.end(), args.begin(), args.end());
  return runCli(argv, 60s);
}

CliRun LibvirtTest::vmckptBeside(const std::vector<std::string>& args) {
  if (libvirtdPid_ <= 0) return vmckpt(args);
  return vmckpt(args, {}, {"nsenter", "-t", std::to_string(libvirtdPid_), "-m", "--"});
}

void LibvirtTest::sendSerial(const std::string& name, const std::string& line) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un a{};
  a.sun_family = AF_UNIX;
  std::string path = cat(dir_, "/", name, ".console");
  ASSERT_LT(path.size(), sizeof a.sun_path);
  std::memcpy(a.sun_path, path.c_str(), path.size() + 1);
  ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&a), sizeof a), 0) << path << ": " << std::strerror(errno);
  std::string data = line + "\n";
  ASSERT_EQ(::write(fd.get(), data.data(), data.size()), static_cast<ssize_t>(data.size()));
}

void LibvirtTest::defineDomain(const std::string& name, const std::string& devicesXml, const std::string& guestArgs) {
  std::string xml = cat("<domain type='qemu'>\n  <name>", name, "</name>\n  <memory unit='MiB'>256</memory>\n",
                        "  <vcpu>1</vcpu>\n  <os>\n    <type arch='x86_64' machine='pc'>hvm</type>\n",
                        "    <kernel>", kernel(), "</kernel>\n    <initrd>", initrd(), "</initrd>\n",
                        "    <cmdline>console=ttyS0 quiet ", guestArgs, "</cmdline>\n  </os>\n",
                        "  <cpu mode='maximum' check='none'/>\n  <on_poweroff>destroy</on_poweroff>\n",
                        "  <on_reboot>destroy</on_reboot>\n  <on_crash>destroy</on_crash>\n  <devices>\n",
                        "    <emulator>/usr/bin/qemu-system-x86_64</emulator>\n",
                        "    <serial type='unix'><source mode='bind' path='", dir_, "/", name, ".console'/><log file='", serialLog(name),
                        "'/><target port='0'/></serial>\n",
                        devicesXml, "    <memballoon model='none'/>\n  </devices>\n</domain>\n");
  std::string path = cat(dir_, "/", name, ".xml");
  ASSERT_TRUE(fs::writeFileAtomic(path, xml, 0644));
  CliRun r = virsh({"define", path});
  ASSERT_EQ(r.code, 0) << r.err;
  domains_.push_back(name);
}

void LibvirtTest::stopDaemons() {
  endByPid(libvirtdPid_);
  endByPid(virtlogdPid_);
  libvirtdPid_ = virtlogdPid_ = -1;
}

void LibvirtTest::TearDown() {
  if (libvirtdPid_ > 0) {
    for (const auto& d : domains_) {
      (void)virsh({"destroy", d});
      (void)virsh({"undefine", d});
    }
  }
  stopDaemons();
  VmckptTest::TearDown();
}

}  // namespace vmckpt::test
