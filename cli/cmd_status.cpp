// vmckpt status NAME
#include <memory>

#include "cli/context.hpp"

namespace vmckpt::cli {

void addStatus(CLI::App& app, Context& ctx) {
  auto name = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("status", "Show a VM's state, QEMU process and accelerator");
  sub->add_option("name", *name, "VM name")->required();
  sub->callback([&ctx, name] {
    ctx.action = [&ctx, name]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->status(*name);
      if (!st) return fail(st.error());
      ctx.emit(st->toJson(), describeStatus(*st));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
