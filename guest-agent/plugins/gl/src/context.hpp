// Context replacement and the frame-boundary handshake with the agent's thread.
#pragma once

#include <string>

namespace vmckpt::gl {

// The driver's entry point for a GL function, or nullptr.
void* resolveDriverOptional(const char* name);

// On the render thread: destroys the recorded context, creates a new one (optionally on
// another Mesa driver), makes it current and replays the log into it.
bool restartContext(const char* galliumDriver, std::string& error);

// On the render thread: glFinish and read back what is not recorded (state().captured).
bool checkpointContext(std::string& error);

// Registers the plugin with the guest agent, once, when its socket is there.
void registerWithAgent();
// Remembers the thread that makes the recorded context current.
void noteRenderThread();
// Parks the render thread while a checkpoint is pending; 1 when the context was
// replaced, 0 when nothing happened, -1 when a replay failed.
int frameBoundary();

}  // namespace vmckpt::gl
