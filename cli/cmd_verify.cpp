// vmckpt verify NAME SNAP: every file present with its size and checksum.
#include "cli/context.hpp"
#include "common/strings.hpp"

namespace vmckpt::cli {

void addVerify(CLI::App& app, Context& ctx) {
  addSnapshotCommand(
      app, ctx, "verify", "Check that a snapshot's files are all there, with their sizes and checksums",
      [&ctx](vmm::VmManager&, const vmm::store::SnapshotEntry& s) -> Status {
        auto r = vmm::store::verifySnapshot(s);
        std::string human = cat("snapshot ", s.manifest.id, ": ", s.manifest.files.size(), " files, ",
                                formatSize(r.checkedBytes), " checksummed: ", r.ok ? "ok" : "DAMAGED", "\n");
        for (const auto& p : r.problems) human += cat("  ", p, "\n");
        ctx.emit(Json{{"id", s.manifest.id}, {"ok", r.ok}, {"problems", r.problems}, {"checked_bytes", r.checkedBytes}},
                 human);
        if (!r.ok) return fail(Errc::corrupt, cat("snapshot ", s.manifest.id, " is damaged: ", r.problems.front()));
        return {};
      },
      true);
}

}  // namespace vmckpt::cli
