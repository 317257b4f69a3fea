// vmckpt recover NAME: finish or roll back what a killed vmckpt left (every command that
// changes a VM does this first; this one only that, and says what it did).
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addRecover(CLI::App& app, Context& ctx) {
  auto name = std::make_shared<std::string>();
  auto* sub = app.add_subcommand(
      "recover", "Finish or roll back an interrupted snapshot, restore or migrate (resume the guest, drop partial files)");
  sub->add_option("name", *name, "VM name")->required();
  sub->callback([&ctx, name] {
    ctx.action = [&ctx, name]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto r = mgr->recover(*name);
      if (!r) return fail(r.error());
      std::string human;
      if (r->actions.empty()) {
        human = cat("VM ", *name, ": nothing to recover\n");
      } else {
        human = r->operation.empty() ? cat("VM ", *name, ": cleaned up leftovers\n")
                                     : cat("VM ", *name, ": recovered an interrupted ", r->operation,
                                           r->snapshot.empty() ? "" : cat(" (snapshot ", r->snapshot, ")"), "\n");
        for (const auto& a : r->actions) human += cat("  ", a, "\n");
      }
      ctx.emit(r->toJson(), human);
      return {};
    };
  });
}

}  // namespace vmckpt::cli
