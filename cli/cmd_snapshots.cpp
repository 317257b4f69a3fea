// vmckpt snapshots NAME: the snapshot tree with sizes.
#include <cstdio>
#include <functional>
#include <map>
#include <memory>

#include "cli/context.hpp"
#include "vmm/libvirt/domain_snapshot.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addSnapshots(CLI::App& app, Context& ctx) {
  auto name = std::make_shared<std::string>();
  auto connect = std::make_shared<std::string>();
  auto* sub = app.add_subcommand("snapshots", "List a VM's snapshots as a tree, with pause times and disk cost");
  sub->add_option("name", *name, "VM name (with --connect: libvirt domain name)")->required();
  sub->add_option("--connect,-c", *connect,
                  "A libvirt URI: list the vmckpt snapshots of libvirt domain NAME (read from the store; libvirtd "
                  "is not asked, so this works for undefined domains too)");
  sub->callback([&ctx, name, connect] {
    ctx.action = [&ctx, name, connect]() -> Status {
      auto mgr = ctx.manager();
      if (!mgr) return fail(mgr.error());
      auto all = connect->empty() ? mgr->snapshots(*name) : vmm::libvirt::domainSnapshots(mgr->root().home(), *name);
      if (!all) return fail(all.error());
      auto usage = mgr->snapshotUsage(*all);
      if (!usage) return fail(usage.error());
      Json arr = Json::array();
      std::map<std::string, std::vector<size_t>> children;
      std::vector<size_t> roots;
      std::map<std::string, size_t> index;
      for (size_t i = 0; i < all->size(); ++i) index[(*all)[i].manifest.id] = i;
      for (size_t i = 0; i < all->size(); ++i) {
        const auto& m = (*all)[i].manifest;
        const auto& u = (*usage)[i];
        arr.push_back({{"id", m.id},
                       {"parent", m.parent.empty() ? Json(nullptr) : Json(m.parent)},
                       {"tag", m.tag.empty() ? Json(nullptr) : Json(m.tag)},
                       {"created", m.created},
                       {"pause_ms", m.timings.pauseMs},
                       {"store_mode", vmm::store::storeModeName(m.mode)},
                       {"exclusive_bytes", u.exclusiveBytes},
                       {"shared_bytes", u.sharedBytes},
                       {"exclusive_bytes_when_taken", m.exclusiveBytes}});
        if (!m.parent.empty() && index.count(m.parent)) children[m.parent].push_back(i);
        else roots.push_back(i);
      }
      std::string out;
      char row[256];
      std::snprintf(row, sizeof row, "%-34s %-20s %-10s %9s %12s %12s\n", "SNAPSHOT", "CREATED", "TAG", "PAUSE", "EXCLUSIVE",
                    "SHARED");
      out += row;
      std::function<void(size_t, int)> walk = [&](size_t i, int depth) {
        const auto& m = (*all)[i].manifest;
        std::string label = std::string(static_cast<size_t>(depth) * 2, ' ') + (depth ? "`-" : "") + m.id;
        char pause[32];
        std::snprintf(pause, sizeof pause, m.wasRunning ? "%.1f ms" : "-", m.timings.pauseMs);
        std::snprintf(row, sizeof row, "%-34s %-20s %-10s %9s %12s %12s\n", label.c_str(), m.created.c_str(),
                      m.tag.empty() ? "-" : m.tag.c_str(), pause, formatSize((*usage)[i].exclusiveBytes).c_str(),
                      formatSize((*usage)[i].sharedBytes).c_str());
        out += row;
        for (size_t c : children[m.id]) walk(c, depth + 1);
      };
      for (size_t r : roots) walk(r, 0);
      if (all->empty()) out = cat("VM ", *name, " has no snapshots\n");
      ctx.emit(Json{{"vm", *name}, {"snapshots", arr}}, out);
      return {};
    };
  });
}

}  // namespace vmckpt::cli
