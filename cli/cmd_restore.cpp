// vmckpt restore NAME SNAP [--as NEW] [--paused] [--map KEY=VALUE]...
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addRestore(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, snap, as;
    bool paused = false;
    std::vector<std::string> maps;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("restore", "Bring a VM back from a snapshot (in place when stopped, or --as a new VM)");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_option("snapshot", o->snap, "Snapshot id, unique id prefix, or tag")->required();
  sub->add_option("--as", o->as, "Restore into a new VM of this name; the original is untouched");
  sub->add_flag("--paused", o->paused, "Leave the restored guest paused");
  sub->add_option("--map", o->maps,
                  "KEY=VALUE: what the VM gets instead of a device it had, told to the guest agent's plugins "
                  "(e.g. ib=rxe:eth0, gpu=none, net=user; repeatable; kept in the VM spec)");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
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
                        {"cont", r->phases.contMs}};
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
