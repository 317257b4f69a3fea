// State shared by all subcommands: global flags, the chosen action, and output helpers.
// Only the CLI prints to stdout; everything below reports through return values.
#pragma once

#include <CLI/CLI.hpp>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>

#include "common/error.hpp"
#include "vmm/lifecycle.hpp"

namespace vmckpt::cli {

using Json = nlohmann::json;

struct Context {
  bool json = false;
  int verbosity = 0;
  std::string home;  // --home, else $VMCKPT_HOME / default
  // Set by the chosen subcommand's parse callback; run by main after parsing.
  std::function<Status()> action;
  // Set once a command printed its result; an error after that adds no second JSON document.
  mutable bool emitted = false;

  Result<vmm::VmManager> manager() const;
  // Prints a JSON value (with --json) or the human text.
  void emit(const Json& j, const std::string& human) const;
  bool stdoutIsTty() const;
};

// A one-line progress report on stderr that rewrites itself, for long work (export,
// import, migration): shown only when stderr is a terminal and --json is off, at most
// five times a second. done() ends the line.
class ProgressLine {
 public:
  explicit ProgressLine(const Context& ctx);
  ~ProgressLine() { done(); }
  void update(const std::string& text);
  void done();

 private:
  bool enabled_ = false, shown_ = false;
  long long lastMs_ = 0;
};

// One registration function per subcommand file.
void addCreate(CLI::App& app, Context& ctx);
void addStart(CLI::App& app, Context& ctx);
void addStop(CLI::App& app, Context& ctx);
void addPause(CLI::App& app, Context& ctx);
void addResume(CLI::App& app, Context& ctx);
void addStatus(CLI::App& app, Context& ctx);
void addList(CLI::App& app, Context& ctx);
void addLogs(CLI::App& app, Context& ctx);
void addConsole(CLI::App& app, Context& ctx);
void addAgent(CLI::App& app, Context& ctx);
void addDelete(CLI::App& app, Context& ctx);
void addDoctor(CLI::App& app, Context& ctx);
void addSnapshot(CLI::App& app, Context& ctx);
void addRestore(CLI::App& app, Context& ctx);
void addSnapshots(CLI::App& app, Context& ctx);
void addInspect(CLI::App& app, Context& ctx);
void addVerify(CLI::App& app, Context& ctx);
void addDeleteSnapshot(CLI::App& app, Context& ctx);
void addRecover(CLI::App& app, Context& ctx);
void addMigrate(CLI::App& app, Context& ctx);
void addReceive(CLI::App& app, Context& ctx);
void addExport(CLI::App& app, Context& ctx);
void addImport(CLI::App& app, Context& ctx);
void addLibvirtHook(CLI::App& app, Context& ctx);
void addLibvirtPrepare(CLI::App& app, Context& ctx);

// pause and resume differ only in direction: one registration for both.
void addTransitionCommand(CLI::App& app, Context& ctx, const std::string& verb, const std::string& description,
                          bool toPaused);

// Commands of the form `vmckpt VERB NAME SNAPSHOT`: resolves the snapshot, then runs `fn`.
// `libvirtDomains`: also `--connect URI DOMAIN SNAPSHOT` for a libvirt domain's snapshots.
void addSnapshotCommand(CLI::App& app, Context& ctx, const std::string& verb, const std::string& description,
                        std::function<Status(vmm::VmManager&, const vmm::store::SnapshotEntry&)> fn,
                        bool libvirtDomains = false);

// Human rendering of a VM's status, shared by create/start/stop/status.
std::string describeStatus(const vmm::VmStatus& s);

}  // namespace vmckpt::cli
