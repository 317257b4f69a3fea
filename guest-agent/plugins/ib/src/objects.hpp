// Every live shadow of this process, for the checkpoint (drain, teardown, rebuild) to
// walk. Wrappers add an object once its real counterpart exists and remove it before
// freeing it; one mutex, the control path only.
#pragma once

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
