// vmckpt: snapshot manager for QEMU/KVM virtual machines. Parses argv, runs one
// subcommand, and turns its result into output and an exit code.
#include <signal.h>
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <cstdio>

#include "cli/context.hpp"
#include "common/log.hpp"

using namespace vmckpt;

namespace {

// Exit codes (documented in the README).
int exitCodeFor(Errc c) {
  switch (c) {
    case Errc::invalidArgument: return 2;
    case Errc::notFound: return 3;
    case Errc::alreadyExists: return 4;
    case Errc::wrongState: return 5;
    case Errc::timeout: return 6;
    default: return 1;
  }
}

void reportError(const cli::Context& ctx, const Error& e) {
  // One line on stderr always; the same as JSON on stdout for machines.
  std::string msg = e.message();
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  std::fprintf(stderr, "vmckpt: error: %s\n", msg.c_str());
  if (ctx.json && !ctx.emitted) {
    cli::Json j = {{"error", {{"code", errcName(e.code()), }, {"message", msg}}}};
    std::printf("%s\n", j.dump(2).c_str());
  }
}

}  // namespace

int main(int argc, char** argv) {
  ::signal(SIGPIPE, SIG_IGN);
  cli::Context ctx;
  CLI::App app{"vmckpt " VMCKPT_VERSION " - snapshot manager for QEMU/KVM virtual machines", "vmckpt"};
  app.set_version_flag("--version", VMCKPT_VERSION);
  app.require_subcommand(1);
  app.fallthrough();  // global flags are accepted after the subcommand too
  app.add_flag("--json", ctx.json, "Print machine-readable JSON on stdout");
  app.add_flag("-v,--verbose", ctx.verbosity, "More log output on stderr (-v info, -vv debug, -vvv QMP trace)");
  app.add_option("--home", ctx.home, "Store directory (default: $VMCKPT_HOME, /var/lib/vmckpt for root)");
  app.footer("Run 'vmckpt COMMAND --help' for a command's options. Exit codes: 0 ok, 1 failure, "
             "2 invalid input, 3 not found, 4 already exists, 5 wrong state, 6 timeout.");

  cli::addCreate(app, ctx);
  cli::addStart(app, ctx);
  cli::addStop(app, ctx);
  cli::addPause(app, ctx);
  cli::addResume(app, ctx);
  cli::addStatus(app, ctx);
  cli::addList(app, ctx);
  cli::addLogs(app, ctx);
  cli::addConsole(app, ctx);
  cli::addAgent(app, ctx);
  cli::addDelete(app, ctx);
  cli::addDoctor(app, ctx);
  cli::addSnapshot(app, ctx);
  cli::addRestore(app, ctx);
  cli::addSnapshots(app, ctx);
  cli::addInspect(app, ctx);
  cli::addVerify(app, ctx);
  cli::addDeleteSnapshot(app, ctx);
  cli::addRecover(app, ctx);
  cli::addMigrate(app, ctx);
  cli::addReceive(app, ctx);
  cli::addExport(app, ctx);
  cli::addImport(app, ctx);
  cli::addLibvirtHook(app, ctx);
  cli::addLibvirtPrepare(app, ctx);

  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string what = e.what();
    std::fprintf(stderr, "vmckpt: error: %s (see 'vmckpt --help')\n", what.c_str());
    if (ctx.json) std::printf("%s\n", cli::Json({{"error", {{"code", "usage"}, {"message", what}}}}).dump(2).c_str());
    return 2;
  }

  log::Level level = ::isatty(STDERR_FILENO) && !ctx.json ? log::Level::info : log::Level::warn;
  if (ctx.verbosity == 1) level = log::Level::info;
  if (ctx.verbosity == 2) level = log::Level::debug;
  if (ctx.verbosity >= 3) level = log::Level::trace;
  log::setLevel(level);

  if (!ctx.action) {
    std::fprintf(stderr, "vmckpt: error: no command given (see 'vmckpt --help')\n");
    return 2;
  }
  Status s = ctx.action();
  if (!s) {
    reportError(ctx, s.error());
    return exitCodeFor(s.error().code());
  }
  return 0;
}
