// vmckpt agent NAME ping|info|status: talk to the guest agent.
#include <memory>

#include "cli/context.hpp"
#include "common/strings.hpp"
#include "vmm/agent/agent_client.hpp"

namespace vmckpt::cli {

void addAgent(CLI::App& app, Context& ctx) {
  struct Opts {
    std::string name, cmd;
    unsigned timeoutMs = 3000;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("agent", "Ask the guest agent: ping, info (plugins, processes) or status");
  sub->add_option("name", o->name, "VM name")->required();
  sub->add_option("command", o->cmd, "ping | info | status")->required()->check(CLI::IsMember({"ping", "info", "status"}));
  sub->add_option("--timeout", o->timeoutMs, "Milliseconds to wait for the agent")->capture_default_str();
  sub->callback([&ctx, o] {
    ctx.action = [&ctx, o]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto st = mgr->status(o->name);
      if (!st) return fail(st.error());
      if (st->state != vmm::VmState::running)
        return fail(Errc::wrongState, cat("agent: VM ", o->name, " is not running (state: ", vmm::vmStateName(st->state), ")"));
      if (!st->spec.agent) return fail(Errc::unsupported, cat("agent: VM ", o->name, " was created with --no-agent"));
      auto deadline = Deadline::in(std::chrono::milliseconds(o->timeoutMs));
      auto c = vmm::agent::Client::connect(mgr->root().vm(o->name).agentSocket, deadline);
      if (!c) return fail(c.error().context("agent"));
      auto t0 = std::chrono::steady_clock::now();
      auto r = c->call(o->cmd, Json::object(), deadline);
      if (!r) return fail(r.error());
      double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
      Json j = {{"name", o->name}, {"command", o->cmd}, {"result", *r}, {"round_trip_ms", ms}};
      std::string human;
      if (o->cmd == "ping") {
        human = cat("agent of VM ", o->name, ": version ", r->value("version", "?"), ", API ", r->value("api_version", 0),
                    ", round trip ", static_cast<int>(ms + 0.5), " ms");
      } else {
        human = r->dump(2);
      }
      ctx.emit(j, human);
      return {};
    };
  });
}

}  // namespace vmckpt::cli
