// vmckpt delete NAME [--force]
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addDelete(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name;
    bool force = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("delete", "Delete a stopped VM and all of its files and snapshots");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_flag("--force,-f", o->force, "Stop it first (QMP quit) if it is running");
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      if (o->force) {
        auto st = mgr->status(o->name);
        if (!st) return fail(st.error());
        if (st->state == vmm::VmState::running || st->state == vmm::VmState::paused) {
          auto stopped = mgr->stop(o->name, {true, std::chrono::seconds(0)});
          if (!stopped) return fail(stopped.error().context("delete"));
        }
      }
      if (auto r = mgr->remove(o->name); !r) return r;
      ctx.emit(Json{{"name", o->name}, {"deleted", true}}, cat("deleted VM ", o->name));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
