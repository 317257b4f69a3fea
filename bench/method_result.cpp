#include "bench/methods.hpp"

namespace vmckpt::bench {

Json MethodResult::toJson() const {
  Json j = {{"method", method},
            {"label", label},
            {"ok", ok},
            {"pause_ms", stats(pauseMs)},
            {"total_ms", stats(totalMs)},
            {"restore_ms", stats(restoreMs)},
            {"written_bytes", stats(writtenBytes)},
            {"second_snapshot_bytes", stats(secondSnapshotBytes)},
            {"restores_verified", restoresVerified},
            {"extra", extra}};
  if (!ok) j["error"] = error;
  return j;
}

}  // namespace vmckpt::bench
