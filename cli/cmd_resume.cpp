// vmckpt resume NAME
#include "cli/context.hpp"

namespace vmckpt::cli {

void addResume(CLI::App& app, Context& ctx) {
  addTransitionCommand(app, ctx, "resume", "Continue a paused guest (QMP cont; waits for the RESUME event)", false);
}

}  // namespace vmckpt::cli
