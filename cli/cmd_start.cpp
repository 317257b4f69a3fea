// vmckpt start NAME
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addStart(CLI::App& app, Context& ctx) {
  auto name = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("start", "Boot a created or stopped VM (QEMU runs daemonized)");
  sub->add_option("name", *name, "VM name")->required();
  sub->callback([&ctx, name] {
    ctx.action = [&ctx, name]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->start(*name);
      if (!st) return fail(st.error());
      ctx.emit(st->toJson(), cat("started VM ", st->name, " (QEMU pid ", st->pid, ", accel ", st->accel, "); console: vmckpt logs ",
                                 st->name));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
