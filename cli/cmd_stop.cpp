// vmckpt stop NAME [--force] [--timeout S]
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addStop(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name;
    bool force = false;
    unsigned timeout = 30;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("stop", "Power the guest down (ACPI); --force ends QEMU at once");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_flag("--force,-f", o->force, "Quit QEMU without asking the guest (like pulling the plug)");
  sub->add_option("--timeout", o->timeout, "Seconds the guest may take to power down")->capture_default_str();
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->stop(o->name, {o->force, std::chrono::seconds(o->timeout)});
      if (!st) return fail(st.error());
      ctx.emit(st->toJson(), cat("stopped VM ", st->name, o->force ? " (forced)" : ""));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
