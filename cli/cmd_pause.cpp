// vmckpt pause NAME
#include "cli/context.hpp"

namespace vmckpt::cli {

void addPause(CLI::App& app, Context& ctx) {
  addTransitionCommand(app, ctx, "pause", "Stop the guest's vCPUs (QMP stop; waits for the STOP event)", true);
}

}  // namespace vmckpt::cli
