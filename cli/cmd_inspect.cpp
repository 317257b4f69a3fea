// vmckpt inspect NAME SNAP: the manifest as JSON.
#include "cli/context.hpp"

namespace vmckpt::cli {

void addInspect(CLI::App& app, Context& ctx) {
  addSnapshotCommand(app, ctx, "inspect", "Print a snapshot's manifest as JSON",
                     [&ctx](vmm::VmManager&, const vmm::store::SnapshotEntry& s) -> Status {
                       Json j = s.manifest.toJson();
                       j["dir"] = s.dir;
                       ctx.emit(j, j.dump(2));  // JSON either way: this command exists to show the manifest
                       return {};
                     },
      true);
}

}  // namespace vmckpt::cli
