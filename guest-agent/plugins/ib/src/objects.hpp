// Every live shadow of this process, for the checkpoint (drain, teardown, rebuild) to
// walk. Wrappers add an object once its real counterpart exists and remove it before
// freeing it; one mutex, the control path only.
#pragma once

#include <atomic>
#include <mutex>
#include <vector>

#include "shadow.hpp"

namespace vmckpt::ib {

struct Objects {
  std::mutex mutex;
  std::vector<ShadowContext*> contexts;
  std::vector<ShadowPd*> pds;
  std::vector<ShadowMr*> mrs;
  std::vector<ShadowChannel*> channels;
  std::vector<ShadowCq*> cqs;
  std::vector<ShadowSrq*> srqs;
  std::vector<ShadowQp*> qps;
  std::vector<ShadowAh*> ahs;
  // Set by a release before capture (release.hpp) until the rebuild: every real object
  // is gone and the device is closed; polls find only the backlogs, notification
  // requests are remembered, channel waits sleep.
  std::atomic<bool> released{false};
  // The application's fd numbers (the device's and the channels') that are copies this
  // plugin made, not the provider's own fds: a rebuild's dup2 of the new file onto the
  // number the application holds, or a release's eventfd placeholder. The provider never
  // closes them; a release replaces them with placeholders and a rebuild dup2s the new
  // files over them. Under `mutex`.
  std::vector<int> owned_numbers;
};

Objects& objects();

template <typename T>
void forget(std::vector<T*>& list, T* item) {
  std::erase(list, item);
}

// Registers the plugin "ib" with the agent, once (plugin.cpp).
void registerWithAgent();

// One line on stderr, "vmckpt-ib: ..." (printf format).
void logLine(const char* format, ...) __attribute__((format(printf, 1, 2)));

}  // namespace vmckpt::ib
