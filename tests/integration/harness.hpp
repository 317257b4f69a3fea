// Runs the real vmckpt binary against a private store in a temporary directory and
// cleans up every QEMU it started, by pid, whatever the test did.
#pragma once

#include <gtest/gtest.h>

#include <chrono>
#include <map>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

namespace vmckpt::test {

using Json = nlohmann::json;

// vmckpt-memtest over three quarters of a guest's free memory (its pattern is verified
// after every restore).
inline constexpr const char* kMemtestArgs = "vmckpt.memtest=--percent,75";

struct CliRun {
  int code = -1;
  std::string out, err;
  Json json() const;  // stdout parsed (fails the test if it is not JSON)
};

// Runs argv (with `env` as its whole environment, when given) and gathers its output and
// exit code (128 + signal when killed). When it cannot run at all: code -1, err says why.
CliRun runCli(const std::vector<std::string>& argv, std::chrono::seconds timeout,
              const std::vector<std::string>* env = nullptr);

class VmckptTest : public ::testing::Test {
 protected:
  void SetUp() override;
  void TearDown() override;

  // The environment vmckpt runs with: ours, plus VMCKPT_HOME and `extra`.
  std::vector<std::string> environment(const std::map<std::string, std::string>& extra = {}) const;
  // Runs build/bin/vmckpt with VMCKPT_HOME set to this test's store (after `prefix`, a
  // wrapper such as nsenter, when given); a vmckpt that cannot run fails the test.
  CliRun vmckpt(const std::vector<std::string>& args, const std::map<std::string, std::string>& env = {},
                const std::vector<std::string>& prefix = {});
  // Creates (asserting success) a VM booting the test guest with the given workload.
  void createGuest(const std::string& name, const std::string& workload = "counter",
                   const std::vector<std::string>& extra = {}, const std::string& memory = "256M",
                   const std::string& moreKernelArgs = "");
  // Waits until the guest's console contains `text`.
  bool waitForConsole(const std::string& name, const std::string& text,
                      std::chrono::seconds timeout = std::chrono::seconds(90));
  std::string console(const std::string& name);
  // Highest "counter N" printed so far (0 if none).
  int lastCounter(const std::string& name);
  // Pids of QEMU processes (not zombies) whose command line mentions this test's store.
  std::vector<int> qemuPids();
  // Types `line` + "\n" on the guest's serial console (run/console.sock).
  void sendConsole(const std::string& name, const std::string& line);
  // Moves this test's store to `dir` (e.g. onto a loop filesystem).
  void useHome(const std::string& dir);

  std::string home_;
  static std::string kernel() { return std::string(VMCKPT_TEST_GUEST_DIR) + "/kernel"; }
  static std::string initrd() { return std::string(VMCKPT_TEST_GUEST_DIR) + "/initrd"; }
};

// Asserts that a failed command printed exactly one line on stderr.
void expectOneLineError(const CliRun& r, const std::string& mustContain);

// The console lines of `text` that start with "<tag>: ", without the tag and '\r'.
std::vector<std::string> tagged(const std::string& text, const std::string& tag);
// The console after the last "[vmckpt: restored from snapshot ...]" line (empty if none),
// and before it (all of it if none).
std::string sinceRestore(const std::string& log);
std::string beforeRestore(const std::string& log);

}  // namespace vmckpt::test
