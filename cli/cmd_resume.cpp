// vmckpt resume NAME
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addResume(CLI::App& app, Context& ctx) {
  auto name = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("resume", "Continue a paused guest (QMP cont; waits for the RESUME event)");
  sub->add_option("name", *name, "VM name")->required();
  sub->callback([&ctx, name] {
    ctx.action = [&ctx, name]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto t = mgr->resume(*name);
      if (!t) return fail(t.error());
      Json j = t->status.toJson();
      j["event"] = t->event;
      j["elapsed_ms"] = t->elapsedMs;
      ctx.emit(j, cat("resumed VM ", *name, " (QMP ", t->event, " after ", static_cast<int>(t->elapsedMs + 0.5), " ms)"));
      return {};
    };
  });
}

}  // namespace vmckpt::cli
