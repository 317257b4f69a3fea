// vmckpt pause NAME
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addPause(CLI::App& app, Context& ctx) {
  auto name = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("pause", "Stop the guest's vCPUs (QMP stop; waits for the STOP event)");
  sub->add_option("name", *name, "VM name")->required();
  sub->callback([&ctx, name] {
    ctx.action = [&ctx, name]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto t = mgr->pause(*name);
      if (!t) return fail(t.error());
      Json j = t->status.toJson();
      j["event"] = t->event;
      j["elapsed_ms"] = t->elapsedMs;
      ctx.emit(j, cat("paused VM ", *name, " (QMP ", t->event, " after ", static_cast<int>(t->elapsedMs + 0.5), " ms)"));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
