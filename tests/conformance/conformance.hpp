// The conformance suite every guest plugin passes (crosvm's Suspendable tests, DMTCP's
// event order). A plugin takes part by registering a Subject: its C descriptor, which
// the suite drives exactly as libvmckpt would, plus three test-only views of its state.
#pragma once

#include <functional>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "vmckpt/plugin.h"

namespace vmckpt::conformance {

class Subject {
 public:
  virtual ~Subject() = default;
  // The plugin's C ABI face (what vmckpt_register gets).
  virtual vmckpt_plugin_descriptor descriptor() = 0;
  // Alters the state the plugin saves (its application doing work).
  virtual void change() = 0;
  // What the last PRECHECKPOINT saved, as bytes; empty if nothing is saved.
  virtual std::string saved() = 0;
  // Whether the plugin does its normal work now (false while quiesced).
  virtual bool works() = 0;
  // The process memory as a VM snapshot captures it, and putting it back as a restore
  // does (before RESTART).
  virtual std::shared_ptr<void> captureMemory() = 0;
  virtual void restoreMemory(const std::shared_ptr<void>& memory) = 0;
  // A subject whose PRESUSPEND fails (to check the failure is reported with a reason).
  virtual bool canFail() const { return false; }
};

struct SubjectFactory {
  std::string name;
  std::function<std::unique_ptr<Subject>(bool failing)> make;
};

std::vector<SubjectFactory>& subjects();

// gtest prints the parameter by name.
inline void PrintTo(const SubjectFactory& f, std::ostream* os) { *os << f.name; }

// Registers a factory at static-initialization time.
struct RegisterSubject {
  explicit RegisterSubject(SubjectFactory f) { subjects().push_back(std::move(f)); }
};

}  // namespace vmckpt::conformance
