// vmckpt restore NAME SNAP [--as NEW] [--paused] [--map KEY=VALUE]...
// vmckpt restore NAME... --group JOB|ID [--paused] [--map KEY=VALUE]...: a group snapshot
// vmckpt restore --connect URI DOMAIN [SNAP] [--paused] [--force]: a libvirt-managed domain
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "vmm/libvirt/domain_snapshot.hpp"

namespace vmckpt::cli {

void addRestore(CLI::App& app, Context& ctx) {
  struct Opts {
    std::vector<std::string> args;  // NAME [SNAP], or with --group the member VMs
    std::string name, snap, as, connect, group;
    bool paused = false, force = false;
    std::vector<std::string> maps;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("restore", "Bring a VM back from a snapshot (in place when stopped, or --as a new VM)");
  sub->add_option("name snapshot", o->args,
                  "VM name (with --connect: libvirt domain name), then the snapshot id, unique id prefix, or tag (with "
                  "--connect: default the newest); with --group: the member VMs")
      ->required();
  sub->add_option("--group", o->group,
                  "Restore the VMs named together from their snapshots of this group snapshot (its id, or the group's "
                  "name for its newest): all loaded paused, then all continued, then every agent told 'restored' "
                  "(plugins rebuild, on --map's device, and publish new ids), 'connect' (every member's ids) and "
                  "'thaw'. A member whose devices were released is refused alone, and with --paused");
  sub->add_option("--connect,-c", o->connect,
                  "A libvirt URI (e.g. qemu:///system): revert the libvirt domain NAME to a vmckpt snapshot (the "
                  "domain must be shut off; it is defined again if it was undefined)");
  sub->add_flag("--force", o->force, "With --connect: destroy the domain first if it runs");
  sub->add_option("--as", o->as, "Restore into a new VM of this name; the original is untouched");
  sub->add_flag("--paused", o->paused, "Leave the restored guest paused");
  sub->add_option("--map", o->maps,
                  "KEY=VALUE: what the VM gets instead of a device it had, told to the guest agent's plugins "
                  "(e.g. ib=rxe1 (a verbs device name), gpu=none or gpu=GPU-<uuid> (the GPU the CUDA "
                  "processes restore onto), net=user; repeatable; kept in the VM spec). "
                  "pci_ID=DDDD:BB:DD.F: the host device the passthrough device ID is plugged back on (its host=)");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      if (!o->group.empty()) {
        if (!o->connect.empty() || !o->as.empty())
          return fail(Errc::invalidArgument, "--connect and --as do not apply with --group");
        vmm::RestoreOptions opts{"", o->paused, {}};
        for (const auto& m : o->maps) VMCKPT_TRY(vmm::parseDeviceMapArg(m, opts.deviceMap));
        auto r = mgr->restoreGroup(o->args, o->group, opts);
        if (!r) return fail(r.error());
        Json members = Json::array();
        for (const auto& m : r->members)
          members.push_back({{"vm", m.vm},
                             {"snapshot", m.snapshot},
                             {"restore_ms", m.restoreMs},
                             {"agent_ms", m.agentMs},
                             {"agent_note", m.agentNote.empty() ? Json(nullptr) : Json(m.agentNote)}});
        Json j = {{"group", r->group},   {"id", r->id},       {"paused", o->paused}, {"members", members},
                  {"resume_spread_ms", r->resumeSpreadMs}, {"exchange_ms", r->exchangeMs},
                  {"published_bytes", r->publishedBytes}, {"total_ms", r->totalMs}};
        char ms[32];
        std::snprintf(ms, sizeof ms, "%.0f", r->totalMs);
        ctx.emit(j, cat("restored group ", r->group, " (", r->id, "): ", r->members.size(), " VMs in ", ms, " ms (",
                        o->paused ? "paused" : "running", ")"));
        return {};
      }
      if (o->args.size() > 2)
        return fail(Errc::invalidArgument, "restore: give one VM and one snapshot (several VMs need --group)");
      o->name = o->args[0];
      if (o->args.size() == 2) o->snap = o->args[1];
      if (!o->connect.empty()) {
        if (!o->as.empty() || !o->maps.empty())
          return fail(Errc::invalidArgument, "--as and --map do not apply with --connect (the device map of a libvirt "
                                             "domain is set with vmckpt libvirt-hook map)");
        auto conn = vmm::libvirt::Connection::open(o->connect);
        if (!conn) return fail(conn.error());
        auto r = vmm::libvirt::restoreDomain(*conn, mgr->root().home(), o->name, o->snap, {o->paused, o->force});
        if (!r) return fail(r.error());
        Json j = {{"domain", r->domain},        {"snapshot", r->snapshotId}, {"libvirt", o->connect},
                  {"defined", r->defined},      {"paused", r->paused},       {"restore_ms", r->totalMs},
                  {"load_ms", r->loadMs},       {"xml_changes", r->xmlChanges},
                  {"agent_note", r->agentNote.empty() ? Json(nullptr) : Json(r->agentNote)}};
        char ms[32];
        std::snprintf(ms, sizeof ms, "%.0f", r->totalMs);
        ctx.emit(j, cat("restored libvirt domain ", r->domain, " from snapshot ", r->snapshotId, " in ", ms, " ms (",
                        r->paused ? "paused" : "running", r->defined ? ", defined again" : "", ")"));
        return {};
      }
      if (o->snap.empty()) return fail(Errc::invalidArgument, "restore: name the snapshot (id, id prefix or tag)");
      vmm::RestoreOptions opts{o->as, o->paused, {}};
      for (const auto& m : o->maps) VMCKPT_TRY(vmm::parseDeviceMapArg(m, opts.deviceMap));
      auto r = mgr->restore(o->name, o->snap, opts);
      if (!r) return fail(r.error());
      Json j = r->status.toJson();
      j["snapshot"] = r->snapshot;
      j["restore_ms"] = r->restoreMs;
      j["agent_ms"] = r->agentMs;
      j["phases_ms"] = {{"clone", r->phases.cloneMs},
                        {"qemu_start", r->phases.qemuStartMs},
                        {"devstate", r->phases.devstateMs},
                        {"cont", r->phases.contMs},
                        {"replug", r->phases.replugMs}};
      j["agent_note"] = r->agentNote.empty() ? Json(nullptr) : Json(r->agentNote);
      char ms[32];
      std::snprintf(ms, sizeof ms, "%.0f", r->restoreMs);
      ctx.emit(j, cat("restored VM ", r->status.name, " from snapshot ", r->snapshot, " in ", ms, " ms (",
                      vmm::vmStateName(r->status.state), ", QEMU pid ", r->status.pid, ")"));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
