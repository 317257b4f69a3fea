#include "harness.hpp"

#include <dirent.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>
#include <thread>

#include "common/child_process.hpp"
#include "common/fs.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

extern char** environ;

namespace vmckpt::test {

using namespace std::chrono_literals;

Json CliRun::json() const {
  Json j = Json::parse(out, nullptr, false);
  EXPECT_FALSE(j.is_discarded()) << "not JSON: " << out << "\nstderr: " << err;
  return j;
}

void VmckptTest::SetUp() {
  ::signal(SIGPIPE, SIG_IGN);
  char t[] = "/tmp/vmckpt-it-XXXXXX";
  ASSERT_NE(::mkdtemp(t), nullptr);
  home_ = t;
  ASSERT_TRUE(fs::exists(kernel())) << "test guest not built: " << kernel();
}

std::vector<int> VmckptTest::qemuPids() {
  std::vector<int> pids;
  DIR* d = ::opendir("/proc");
  if (!d) return pids;
  while (dirent* e = ::readdir(d)) {
    int pid = std::atoi(e->d_name);
    if (pid <= 0) continue;
    auto cmd = fs::readFile(cat("/proc/", pid, "/cmdline"), 1 << 20);
    if (!cmd || cmd->find("qemu-system") == std::string::npos || cmd->find(home_ + "/") == std::string::npos) continue;
    auto st = fs::readFile(cat("/proc/", pid, "/stat"), 4096);
    if (st) {
      auto close = st->rfind(')');
      if (close != std::string::npos && close + 2 < st->size() && (*st)[close + 2] == 'Z') continue;
    }
    pids.push_back(pid);
  }
  ::closedir(d);
  return pids;
}

void VmckptTest::useHome(const std::string& dir) {
  (void)fs::removeTree(home_);
  home_ = dir;
  ASSERT_TRUE(fs::makeDirs(home_, 0700));
}

void VmckptTest::sendConsole(const std::string& name, const std::string& line) {
  std::string path = cat(home_, "/vms/", name, "/run/console.sock");
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  ASSERT_LT(path.size(), sizeof addr.sun_path);
  std::strcpy(addr.sun_path, path.c_str());
  ASSERT_EQ(::connect(fd.get(), reinterpret_cast<sockaddr*>(&addr), sizeof addr), 0) << path << ": " << std::strerror(errno);
  std::string data = line + "\n";
  ASSERT_EQ(::send(fd.get(), data.data(), data.size(), MSG_NOSIGNAL), static_cast<ssize_t>(data.size()));
  std::this_thread::sleep_for(100ms);  // let QEMU read it before the hang-up
}

void VmckptTest::TearDown() {
  // Whatever happened, no QEMU of this test survives it.
  for (int pid : qemuPids()) ::kill(pid, SIGKILL);
  for (int i = 0; i < 100 && !qemuPids().empty(); ++i) std::this_thread::sleep_for(50ms);
  EXPECT_TRUE(qemuPids().empty()) << "QEMU processes left behind";
  (void)fs::removeTree(home_);
}

std::vector<std::string> VmckptTest::environment(const std::map<std::string, std::string>& env) const {
  std::map<std::string, std::string> vars;
  for (char** e = environ; *e; ++e) {
    std::string kv = *e;
    auto eq = kv.find('=');
    if (eq != std::string::npos) vars[kv.substr(0, eq)] = kv.substr(eq + 1);
  }
  vars["VMCKPT_HOME"] = home_;
  for (const auto& [k, v] : env) vars[k] = v;
  std::vector<std::string> envList;
  for (const auto& [k, v] : vars) envList.push_back(k + "=" + v);
  return envList;
}

CliRun runCli(const std::vector<std::string>& argv, std::chrono::seconds timeout, const std::vector<std::string>* env) {
  CliRun run;
  auto r = env ? runCommand(argv, Deadline::in(timeout), *env) : runCommand(argv, Deadline::in(timeout));
  if (!r) {
    run.err = cat("running ", argv.empty() ? std::string("nothing") : argv[0], " failed: ", r.error().message());
    return run;
  }
  run.code = r->status.exited() ? r->status.code : 128 + r->status.signal;
  run.out = r->out;
  run.err = r->err;
  return run;
}

CliRun VmckptTest::vmckpt(const std::vector<std::string>& args, const std::map<std::string, std::string>& env,
                          const std::vector<std::string>& prefix) {
  std::vector<std::string> envList = environment(env);
  std::vector<std::string> argv = prefix;
  argv.push_back(VMCKPT_BIN);
  argv.insert(argv.end(), args.begin(), args.end());
  CliRun run = runCli(argv, 120s, &envList);
  if (run.code == -1) ADD_FAILURE() << run.err;
  return run;
}

void VmckptTest::createGuest(const std::string& name, const std::string& workload,
                             const std::vector<std::string>& extra, const std::string& memory,
                             const std::string& moreKernelArgs) {
  std::vector<std::string> args = {"create",   name,      "--memory", memory, "--kernel",
                                   kernel(),   "--initrd", initrd(),  "--accel", "tcg",
                                   "--append", cat("console=ttyS0 quiet vmckpt.workload=", workload, " ", moreKernelArgs)};
  args.insert(args.end(), extra.begin(), extra.end());
  CliRun r = vmckpt(args);
  ASSERT_EQ(r.code, 0) << r.err;
}

std::string VmckptTest::console(const std::string& name) {
  auto t = fs::readFile(cat(home_, "/vms/", name, "/run/serial.log"), 64 << 20);
  return t ? *t : std::string();
}

bool VmckptTest::waitForConsole(const std::string& name, const std::string& text, std::chrono::seconds timeout) {
  auto deadline = Deadline::in(timeout);
  while (!deadline.expired()) {
    if (console(name).find(text) != std::string::npos) return true;
    std::this_thread::sleep_for(100ms);
  }
  return false;
}

int VmckptTest::lastCounter(const std::string& name) {
  std::istringstream in(console(name));
  std::string line;
  int last = 0;
  while (std::getline(in, line))
    if (startsWith(line, "counter ")) last = std::max(last, std::atoi(line.c_str() + 8));
  return last;
}

void expectOneLineError(const CliRun& r, const std::string& mustContain) {
  EXPECT_NE(r.code, 0);
  EXPECT_TRUE(startsWith(r.err, "vmckpt: error: ")) << r.err;
  EXPECT_EQ(std::count(r.err.begin(), r.err.end(), '\n'), 1) << "expected one line, got: " << r.err;
  EXPECT_NE(r.err.find(mustContain), std::string::npos) << "missing '" << mustContain << "' in: " << r.err;
}

std::vector<std::string> tagged(const std::string& text, const std::string& tag) {
  std::vector<std::string> out;
  std::istringstream in(text);
  std::string line;
  const std::string prefix = tag + ": ";
  while (std::getline(in, line)) {
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (startsWith(line, prefix)) out.push_back(line.substr(prefix.size()));
  }
  return out;
}

std::string sinceRestore(const std::string& log) {
  auto pos = log.rfind("[vmckpt: restored from snapshot");
  return pos == std::string::npos ? std::string() : log.substr(pos);
}

std::string beforeRestore(const std::string& log) {
  auto pos = log.rfind("[vmckpt: restored from snapshot");
  return pos == std::string::npos ? log : log.substr(0, pos);
}

}  // namespace vmckpt::test
