// Small leveled logging to stderr. The CLI sets the level once (-v, -vv); nothing
// below the CLI prints to the terminal except through here.
#pragma once

#include <string_view>

#include "common/strings.hpp"

namespace vmckpt::log {

enum class Level { error = 0, warn = 1, info = 2, debug = 3, trace = 4 };

void setLevel(Level level);
Level level();
bool enabled(Level level);
void write(Level level, std::string_view message);

template <class... Args>
void at(Level lvl, const Args&... args) {
  if (enabled(lvl)) write(lvl, cat(args...));
}
template <class... Args> void error(const Args&... a) { at(Level::error, a...); }
template <class... Args> void warn(const Args&... a) { at(Level::warn, a...); }
template <class... Args> void info(const Args&... a) { at(Level::info, a...); }
template <class... Args> void debug(const Args&... a) { at(Level::debug, a...); }
template <class... Args> void trace(const Args&... a) { at(Level::trace, a...); }

}  // namespace vmckpt::log
