// vmckpt snapshot NAME [--tag T] [--store-mode M] [--live]
// vmckpt snapshot NAME... --group JOB: the VMs of one job, all stopped for the capture
// vmckpt snapshot --connect URI DOMAIN [--tag T]: a libvirt-managed domain
#include <cstdio>
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "vmm/libvirt/domain_snapshot.hpp"

namespace vmckpt::cli {
namespace {

Json snapshotJson(const vmm::SnapshotResult& r, const std::string& connect) {
  const auto& m = r.manifest;
  Json j = {{"id", m.id},
            {"vm", m.vm},
            {"tag", m.tag.empty() ? Json(nullptr) : Json(m.tag)},
            {"pause_ms", m.timings.pauseMs},
            {"total_ms", m.timings.totalMs},
            {"devstate_bytes", m.devstateBytes},
            {"exclusive_bytes", m.exclusiveBytes},
            {"parent", m.parent.empty() ? Json(nullptr) : Json(m.parent)},
            {"store_mode", vmm::store::storeModeName(m.mode)},
            {"live", m.ram == vmm::store::SnapshotRam::stream},
            {"ram", vmm::store::snapshotRamName(m.ram)},
            {"quiesce_ms", m.timings.quiesceMs},
            {"agent", {{"quiesced", m.quiesced}, {"plugins", m.agentPlugins},
                       {"note", r.agentNote.empty() ? Json(nullptr) : Json(r.agentNote)}}},
            {"timings",
             {{"flush_ms", m.timings.flushMs},
              {"devstate_ms", m.timings.devstateMs},
              {"capture_ms", m.timings.captureMs},
              {"stream_ms", m.timings.streamMs},
              {"unplug_ms", m.timings.unplugMs},
              {"replug_ms", m.timings.replugMs}}},
            {"unplugged", m.unplugged},
            {"dir", r.dir},
            {"libvirt", connect.empty() ? Json(nullptr) : Json(connect)}};
  if (m.group) j["group"] = {{"name", m.group->name}, {"id", m.group->id}, {"vms", m.group->vms}};
  return j;
}

std::string snapshotLine(const vmm::SnapshotResult& r, const std::string& connect) {
  const auto& m = r.manifest;
  char pause[32], total[32];
  std::snprintf(pause, sizeof pause, "%.1f", m.timings.pauseMs);
  std::snprintf(total, sizeof total, "%.0f", m.timings.totalMs);
  const bool live = m.ram == vmm::store::SnapshotRam::stream;
  return cat(live ? "live snapshot " : "snapshot ", m.id, connect.empty() ? " of VM " : " of libvirt domain ", m.vm,
             m.tag.empty() ? "" : cat(" (tag ", m.tag, ")"), ": paused ",
             m.wasRunning ? cat(pause, " ms") : std::string("- (VM was paused)"), ", total ", total, " ms",
             live ? cat(m.wasRunning ? " (RAM written while the guest ran)" : "", ", state stream ",
                        formatSize(m.devstateBytes))
                  : cat(", device state ", formatSize(m.devstateBytes)),
             ", exclusive ", formatSize(m.exclusiveBytes), ", ", vmm::store::storeModeName(m.mode), " store",
             m.mode == vmm::store::StoreMode::copy && !live ? " (slow: RAM was copied while the guest was paused)" : "",
             ", parent ", m.parent.empty() ? "none" : m.parent,
             m.quiesced ? cat(", guest agent quiesced in ", static_cast<int>(m.timings.quiesceMs + 0.5), " ms")
                        : std::string(", guest agent not used"),
             m.unplugged.empty() ? std::string()
                                 : cat(", passthrough ", join(m.unplugged, ", "), " unplugged in ",
                                       static_cast<int>(m.timings.unplugMs + 0.5), " ms and plugged back in ",
                                       static_cast<int>(m.timings.replugMs + 0.5), " ms"));
}

}  // namespace

void addSnapshot(CLI::App& app, Context& ctx) {
  struct Opts {
    std::vector<std::string> names;
    std::string tag, mode = "auto", agent = "auto", connect, group;
    unsigned quiesceTimeoutMs = 10000, unplugTimeoutMs = 5000;
    bool live = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("snapshot", "Capture a running VM (pause of milliseconds on btrfs/XFS)");
  sub->add_option("name", o->names, "VM name; several with --group (with --connect: one libvirt domain name)")
      ->required();
  sub->add_option("--group,-g", o->group,
                  "The VMs named are one job: quiesce all (plugins drain), release all (plugins close their "
                  "devices), pause all, capture all, resume all, then the agents rebuild and reconnect together (a "
                  "snapshot per VM, one group id in each manifest, restored together; any failure leaves none)");
  sub->add_option("--connect,-c", o->connect,
                  "A libvirt URI (e.g. qemu:///system): snapshot the libvirt domain NAME through libvirt; the fast "
                  "path where its memory is a shared file, else a live snapshot");
  sub->add_option("--tag,-t", o->tag, "A name for the snapshot (usable instead of its id)");
  sub->add_option("--store-mode", o->mode, "auto | btrfs | reflink | copy")->capture_default_str();
  sub->add_option("--agent", o->agent,
                  "required | auto (use the guest agent if it answers within 1 s) | off")->capture_default_str();
  sub->add_option("--quiesce-timeout", o->quiesceTimeoutMs, "Milliseconds the agent's plugins get to quiesce")
      ->capture_default_str();
  sub->add_option("--unplug-timeout", o->unplugTimeoutMs,
                  "Milliseconds the guest gets to release each passthrough device (device_del to QEMU's "
                  "DEVICE_DELETED); past it the snapshot fails and the devices stay plugged")
      ->capture_default_str();
  sub->add_flag("--live", o->live,
                "QEMU's background-snapshot, for VMs with anonymous RAM (create --ram anon): all of RAM is "
                "written while the guest runs; it pauses only while QEMU saves its devices");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      vmm::SnapshotOptions opts{o->tag, {}};
      auto policy = vmm::parseAgentPolicy(o->agent);
      if (!policy) return fail(policy.error());
      opts.agent = *policy;
      if (o->quiesceTimeoutMs == 0 || o->quiesceTimeoutMs > 600000)
        return fail(Errc::invalidArgument, "--quiesce-timeout must be between 1 and 600000 ms");
      opts.quiesceTimeout = std::chrono::milliseconds(o->quiesceTimeoutMs);
      if (o->unplugTimeoutMs == 0 || o->unplugTimeoutMs > 600000)
        return fail(Errc::invalidArgument, "--unplug-timeout must be between 1 and 600000 ms");
      opts.unplugTimeout = std::chrono::milliseconds(o->unplugTimeoutMs);
      opts.live = o->live;
      if (o->mode != "auto") {
        auto m = vmm::store::parseStoreMode(o->mode);
        if (!m) return fail(m.error());
        opts.mode = *m;
      }
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      if (!o->group.empty()) {
        if (!o->connect.empty()) return fail(Errc::invalidArgument, "--group does not apply with --connect yet");
        auto g = mgr->snapshotGroup(o->names, o->group, opts);
        if (!g) return fail(g.error());
        Json j = {{"group", g->group},          {"id", g->id},
                  {"pause_ms", g->pauseMs},       {"exchange_ms", g->exchangeMs},
                  {"published_bytes", g->publishedBytes}, {"total_ms", g->totalMs},
                  {"snapshots", Json::array()}};
        std::string human = cat("group snapshot ", g->id, " of job ", g->group, " (", g->members.size(), " VMs): ");
        char pause[32];
        std::snprintf(pause, sizeof pause, "%.1f", g->pauseMs);
        human += cat("first pause to last resume ", pause, " ms");
        if (g->exchangeMs > 0)
          human += cat(", agents reconnected in ", static_cast<long long>(g->exchangeMs + 0.5), " ms");
        for (const auto& r : g->members) {
          j["snapshots"].push_back(snapshotJson(r, ""));
          human += "\n  " + snapshotLine(r, "");
        }
        ctx.emit(j, human);
        return {};
      }
      if (o->names.size() != 1)
        return fail(Errc::invalidArgument, "several VMs are snapshotted together only as a job: add --group JOB");
      const std::string& name = o->names.front();
      Result<vmm::SnapshotResult> r = fail(Errc::internal, "no snapshot");
      if (!o->connect.empty()) {
        if (o->live || o->mode != "auto")
          return fail(Errc::invalidArgument, "--live and --store-mode do not apply with --connect (vmckpt picks the "
                                             "path by the domain's memory backing)");
        auto conn = vmm::libvirt::Connection::open(o->connect);
        if (!conn) return fail(conn.error());
        r = vmm::libvirt::snapshotDomain(*conn, mgr->root().home(), name, {o->tag, opts.agent, opts.quiesceTimeout});
      } else {
        r = mgr->snapshot(name, opts);
      }
      if (!r) return fail(r.error());
      ctx.emit(snapshotJson(*r, o->connect), snapshotLine(*r, o->connect));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
