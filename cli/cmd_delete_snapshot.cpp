// vmckpt delete-snapshot NAME SNAP
#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addDeleteSnapshot(CLI::App& app, Context& ctx) {
  addSnapshotCommand(app, ctx, "delete-snapshot", "Delete one snapshot (its children keep working)",
                     [&ctx](vmm::VmManager& mgr, const vmm::store::SnapshotEntry& s) -> Status {
                       if (auto r = mgr.deleteSnapshot(s.manifest.vm, s.manifest.id); !r) return r;
                       ctx.emit(Json{{"vm", s.manifest.vm}, {"id", s.manifest.id}, {"deleted", true}},
                                cat("deleted snapshot ", s.manifest.id));
                       return {};
                     });
}

}  // namespace vmckpt::cli
