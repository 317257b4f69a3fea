// vmckpt list
#include <cstdio>

#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addList(CLI::App& app, Context& ctx) {
  auto* sub = app.add_subcommand("list", "List all VMs in the store");
  sub->callback([&ctx] {
    ctx.action = [&ctx]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto all = mgr->list();
      if (!all) return fail(all.error());
      Json arr = Json::array();
      std::string table;
      char row[256];
      std::snprintf(row, sizeof row, "%-24s %-9s %5s %10s %-5s %8s\n", "NAME", "STATE", "VCPUS", "MEMORY", "ACCEL", "PID");
      table += row;
      for (const auto& s : *all) {
        arr.push_back(s.toJson());
        std::snprintf(row, sizeof row, "%-24s %-9s %5u %10s %-5s %8s\n", s.name.c_str(),
                      std::string(vmm::vmStateName(s.state)).c_str(), s.spec.vcpus, formatSize(s.spec.memoryBytes).c_str(),
                      s.accel.empty() ? std::string(vmm::accelName(s.spec.accel)).c_str() : s.accel.c_str(),
                      s.pid > 0 ? std::to_string(s.pid).c_str() : "-");
        table += row;
      }
      if (all->empty()) table = cat("no VMs in ", mgr->root().home(), "\n");
      ctx.emit(Json{{"vms", arr}, {"home", mgr->root().home()}}, table);
      return {};
    };
  });
}

}  // namespace vmckpt::cli
