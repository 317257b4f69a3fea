// Runs a callable when the scope ends unless cancel() was called (rollback guard).
#pragma once

#include <utility>

namespace vmckpt {

template <class F>
class [[nodiscard]] ScopeExit {
 public:
  explicit ScopeExit(F fn) : fn_(std::move(fn)) {}
  ScopeExit(const ScopeExit&) = delete;
  ScopeExit& operator=(const ScopeExit&) = delete;
  ~ScopeExit() {
    if (active_) fn_();
  }
  void cancel() { active_ = false; }

 private:
  F fn_;
  bool active_ = true;
};

}  // namespace vmckpt
