// vmckpt export NAME SNAP [--parent P] -o FILE|- / vmckpt import -i FILE|- [--as NEW] [--map K=V]
#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <memory>

#include "cli/context.hpp"
#include "common/scope_exit.hpp"
#include "common/strings.hpp"
#include "common/unique_fd.hpp"

namespace vmckpt::cli {
namespace {

// The result line: on stdout, unless stdout carries the stream; then on stderr.
void report(const Context& ctx, bool stdoutIsStream, const Json& j, const std::string& human) {
  if (!stdoutIsStream) return ctx.emit(j, human);
  std::string out = ctx.json ? j.dump(2) : human;
  std::fprintf(stderr, "%s\n", out.c_str());
  ctx.emitted = true;
}

}  // namespace

void addExport(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, snap, parent, out;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("export", "Write a snapshot as a stream for `vmckpt import` (only changes with --parent)");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_option("snapshot", o->snap, "Snapshot id, unique id prefix, or tag")->required();
  sub->add_option("--parent", o->parent,
                  "A snapshot the importing store already has: send only the blocks that differ from it");
  sub->add_option("-o,--output", o->out, "Output file, or - for stdout (e.g. | ssh host vmckpt import -i -)")->required();
  sub->footer("The stream is checksummed end to end; a damaged or truncated one is refused by import. "
              "A file is written under FILE.part and renamed when complete. With -o -, the result goes to stderr.");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      const bool toStdout = o->out == "-";
      if (toStdout && ::isatty(STDOUT_FILENO))
        return fail(Errc::invalidArgument, "refusing to write a binary stream to a terminal: give -o FILE or redirect stdout");
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      UniqueFd file;
      std::string part = o->out + ".part";
      ScopeExit dropPart([&] {
        if (file) ::unlink(part.c_str());
      });
      if (!toStdout) {
        file = UniqueFd(::open(part.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600));
        if (!file) return failErrno(cat("open ", part), errno);
      }
      ProgressLine progress(ctx);
      vmm::ExportOptions opts{o->parent, [&](std::uint64_t done, std::uint64_t total) {
                                progress.update(cat("export: ", formatSize(done), " of ", formatSize(total), " done"));
                              }};
      auto r = mgr->exportSnapshot(o->name, o->snap, opts, toStdout ? STDOUT_FILENO : file.get());
      progress.done();
      if (!r) return fail(r.error());
      if (!toStdout) {
        if (::fsync(file.get()) != 0) return failErrno(cat("fsync ", part), errno);
        if (::rename(part.c_str(), o->out.c_str()) != 0) return failErrno(cat("rename ", part, " -> ", o->out), errno);
        dropPart.cancel();
      }
      Json j = {{"vm", r->vm},
                {"snapshot", r->snapshot},
                {"parent", r->parent.empty() ? Json(nullptr) : Json(r->parent)},
                {"stream_bytes", r->streamBytes},
                {"data_bytes", r->dataBytes},
                {"bytes_read", r->bytesRead},
                {"output", o->out}};
      report(ctx, toStdout, j,
             cat("exported snapshot ", r->snapshot, " of VM ", r->vm,
                 r->parent.empty() ? std::string(" (whole)") : cat(" (changes since ", r->parent, ")"), ": ",
                 formatSize(r->streamBytes), " stream for ", formatSize(r->dataBytes), " of files (",
                 formatSize(r->bytesRead), " read), to ",
                 toStdout ? std::string("stdout") : o->out));
      return {};
    };
  });
}

void addImport(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string in, as;
    std::vector<std::string> maps;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("import", "Read a snapshot stream from `vmckpt export` into this store");
  sub->add_option("-i,--input", o->in, "Input file, or - for stdin")->required();
  sub->add_option("--as", o->as, "Import under this VM name instead of the exported VM's");
  sub->add_option("--map", o->maps,
                  "KEY=VALUE: what the VM gets instead of a device it had, for its next restore "
                  "(e.g. ib=rxe:eth0, gpu=none, net=user; repeatable)");
  sub->footer("A VM the store does not have is created (state 'created'; restore it with `vmckpt restore NAME SNAP`). "
              "An increment (exported with --parent) needs its parent imported first. Nothing is visible unless the "
              "whole stream arrived and every checksum matched.");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      vmm::ImportOptions opts;
      opts.asName = o->as;
      for (const auto& m : o->maps) VMCKPT_TRY(vmm::parseDeviceMapArg(m, opts.deviceMap));
      UniqueFd file;
      if (o->in != "-") {
        file = UniqueFd(::open(o->in.c_str(), O_RDONLY | O_CLOEXEC));
        if (!file) return failErrno(cat("open ", o->in), errno);
      } else if (::isatty(STDIN_FILENO)) {
        return fail(Errc::invalidArgument, "stdin is a terminal: pipe a stream in, or give -i FILE");
      }
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      ProgressLine progress(ctx);
      opts.progress = [&](std::uint64_t done) { progress.update(cat("import: ", formatSize(done), " read")); };
      auto r = mgr->importSnapshot(file ? file.get() : STDIN_FILENO, opts);
      progress.done();
      if (!r) return fail(r.error());
      Json j = {{"vm", r->vm},
                {"snapshot", r->snapshot},
                {"parent", r->parent.empty() ? Json(nullptr) : Json(r->parent)},
                {"stream_bytes", r->streamBytes},
                {"created_vm", r->createdVm}};
      ctx.emit(j, cat("imported snapshot ", r->snapshot, " into ", r->createdVm ? "new " : "", "VM ", r->vm, " (",
                      formatSize(r->streamBytes), " stream", r->parent.empty() ? "" : cat(", on parent ", r->parent), ")"));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
