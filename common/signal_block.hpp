// Holds SIGINT, SIGTERM and SIGHUP back for a scope (they are delivered when it ends):
// for windows where dying would leave something half-done, such as a paused guest.
#pragma once

#include <signal.h>

#include <ctime>

namespace vmckpt {

class SignalBlock {
 public:
  SignalBlock() {
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    sigaddset(&set, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &set, &old_);
  }
  SignalBlock(const SignalBlock&) = delete;
  SignalBlock& operator=(const SignalBlock&) = delete;
  ~SignalBlock() { pthread_sigmask(SIG_SETMASK, &old_, nullptr); }

  // One of the held-back signals that is pending, taken so that it is never delivered, or
  // 0: for long waits inside the scope that Ctrl-C should end cleanly.
  static int takePending() {
    sigset_t pending;
    if (sigpending(&pending) != 0) return 0;
    for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
      if (!sigismember(&pending, sig)) continue;
      sigset_t one;
      sigemptyset(&one);
      sigaddset(&one, sig);
      timespec now{};
      if (sigtimedwait(&one, nullptr, &now) == sig) return sig;
    }
    return 0;
  }

 private:
  sigset_t old_;
};

}  // namespace vmckpt
