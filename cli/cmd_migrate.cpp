// vmckpt migrate NAME --to HOST:PORT / vmckpt receive NAME --listen ADDR:PORT
#include <unistd.h>

#include <cstdio>
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {
namespace {

std::string fixed(double v, int decimals) {
  char buf[48];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// "1G", "512M/s", "100MiB/s" -> bytes per second.
Result<std::uint64_t> parseBandwidth(std::string_view text) {
  std::string_view size = text;
  if (size.ends_with("/s")) size.remove_suffix(2);
  ParsedSize p = parseSize(size);
  if (!p.ok) return fail(Errc::invalidArgument, cat("--bandwidth '", text, "': ", p.error, " (e.g. 1G or 500M/s)"));
  return p.bytes;
}

std::string describeProgress(const std::string& vm, const vmm::MigrationProgress& p) {
  if (p.status == "mirroring disks")
    return cat("migrating ", vm, ": mirroring disks, ", formatSize(p.transferredBytes), " of ", formatSize(p.totalBytes),
               " copied, ", fixed(p.elapsedMs / 1000, 1), " s");
  return cat("migrating ", vm, ": ", p.status, ", ", formatSize(p.transferredBytes), " sent, ", formatSize(p.remainingBytes),
             " left, dirty ", p.dirtyPagesRate, " pages/s, pass ", p.iterations, ", ", fixed(p.mbps, 0), " Mbit/s, ",
             fixed(p.elapsedMs / 1000, 1), " s");
}

}  // namespace

void addMigrate(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, to, agent = "auto", bandwidth;
    unsigned quiesceTimeoutMs = 10000, downtimeMs = 300, timeoutS = 600;
    bool postcopy = false, cleanup = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("migrate", "Move a running VM live to 'vmckpt receive' on another host");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_option("--to", o->to, "HOST:PORT where 'vmckpt receive' listens")->required();
  sub->add_option("--agent", o->agent, "required | auto (use the guest agent if it answers within 1 s) | off")
      ->capture_default_str();
  sub->add_option("--quiesce-timeout", o->quiesceTimeoutMs, "Milliseconds the agent's plugins get to quiesce")
      ->check(CLI::Range(1u, 600000u))
      ->capture_default_str();
  sub->add_option("--downtime-ms", o->downtimeMs, "Longest pause QEMU aims for at the switch-over")
      ->check(CLI::Range(1u, 2000000u))
      ->capture_default_str();
  sub->add_option("--bandwidth", o->bandwidth, "Cap on the migration's bandwidth, e.g. 1G or 500M/s (default: none)");
  sub->add_flag("--postcopy", o->postcopy,
                "After the first pass over RAM, run the guest on the destination and fetch the rest on demand");
  sub->add_flag("--cleanup", o->cleanup, "Delete the VM here (files and snapshots) once it runs on the destination");
  sub->add_option("--timeout", o->timeoutS, "Seconds the whole migration may take")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto policy = vmm::parseAgentPolicy(o->agent);
      if (!policy) return fail(policy.error());
      vmm::MigrateOptions opts{.to = o->to,
                               .agent = *policy,
                               .quiesceTimeout = std::chrono::milliseconds(o->quiesceTimeoutMs),
                               .downtimeLimit = std::chrono::milliseconds(o->downtimeMs),
                               .postcopy = o->postcopy,
                               .cleanup = o->cleanup,
                               .timeout = std::chrono::seconds(o->timeoutS)};
      if (!o->bandwidth.empty()) {
        auto bw = parseBandwidth(o->bandwidth);
        if (!bw) return fail(bw.error());
        opts.bandwidthBytesPerSec = *bw;
      }
      // Progress is for people: an updating line on a terminal, full lines with -v.
      const bool tty = ::isatty(STDERR_FILENO) == 1;
      bool lineOpen = false;
      double lastPrinted = -1000;
      if (tty || ctx.verbosity > 0) {
        opts.progress = [&, tty](const vmm::MigrationProgress& p) {
          std::string line = describeProgress(o->name, p);
          if (tty) {
            std::fprintf(stderr, "\r\033[K%s", line.c_str());
            lineOpen = true;
          } else if (p.elapsedMs - lastPrinted >= 1000) {
            std::fprintf(stderr, "%s\n", line.c_str());
            lastPrinted = p.elapsedMs;
          }
        };
      }
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto r = mgr->migrate(o->name, opts);
      if (lineOpen) std::fprintf(stderr, "\r\033[K");
      if (!r) return fail(r.error());
      Json j = {{"vm", o->name},
                {"to", r->to},
                {"total_ms", r->totalMs},
                {"downtime_ms", r->downtimeMs},
                {"transferred_bytes", r->transferredBytes},
                {"postcopy", r->postcopy},
                {"cleaned_up", r->cleanedUp},
                {"source", r->source.toJson()},
                {"agent_note", r->agentNote.empty() ? Json(nullptr) : Json(r->agentNote)}};
      ctx.emit(j, cat("migrated VM ", o->name, " to ", r->to, " in ", fixed(r->totalMs / 1000, 1), " s: downtime ",
                      fixed(r->downtimeMs, 0), " ms, ", formatSize(r->transferredBytes), " transferred",
                      r->postcopy ? " (postcopy)" : "",
                      r->cleanedUp ? "; deleted here" : "; the VM here is stopped",
                      r->agentNote.empty() ? std::string() : cat(" (", r->agentNote, ")")));
      return {};
    };
  });
}

void addReceive(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, listen;
    std::vector<std::string> maps;
    unsigned timeoutS = 600;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("receive", "Wait for one 'vmckpt migrate' and run the VM it sends here");
  sub->add_option("name", o->name, "Name of the VM here (no VM of that name may exist)")->required();
  sub->add_option("--listen", o->listen, "ADDR:PORT (or PORT, on all addresses) to wait on; port 0 picks a free one")
      ->required();
  sub->add_option("--map", o->maps, "KEY=VALUE: the device the guest gets here instead (e.g. ib=rxe:eth0, gpu=none)");
  sub->add_option("--timeout", o->timeoutS, "Seconds to wait for the source and the migration")
      ->check(CLI::Range(1u, 86400u))
      ->capture_default_str();
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      vmm::ReceiveOptions opts{.listen = o->listen, .timeout = std::chrono::seconds(o->timeoutS)};
      for (const auto& m : o->maps) VMCKPT_TRY(vmm::parseDeviceMapArg(m, opts.deviceMap));
      opts.onListening = [](const std::string& address) {
        std::fprintf(stderr, "listening on %s\n", address.c_str());
        std::fflush(stderr);
      };
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto r = mgr->receive(o->name, opts);
      if (!r) return fail(r.error());
      Json j = r->status.toJson();
      j["from"] = r->from;
      j["total_ms"] = r->totalMs;
      j["agent_ms"] = r->agentMs;
      j["agent_note"] = r->agentNote.empty() ? Json(nullptr) : Json(r->agentNote);
      ctx.emit(j, cat("received VM ", r->status.name, " from ", r->from, " in ", fixed(r->totalMs / 1000, 1), " s (",
                      vmm::vmStateName(r->status.state), ", QEMU pid ", r->status.pid, ")",
                      r->agentNote.empty() ? std::string() : cat("; ", r->agentNote)));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
