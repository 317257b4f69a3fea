// The GL plugin against Mesa's software drivers: a scene renders N frames; at frame k
// its context is destroyed and replaced by a replayed one; frames k..N must match an
// uninterrupted run. Real drivers, real pixels; nothing here is faked.
#include <fcntl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <gtest/gtest.h>

namespace {

constexpr int kSize = 96;
constexpr int kFrames = 24;
constexpr int kRestartAt = 12;
constexpr std::size_t kFrameBytes = static_cast<std::size_t>(kSize) * kSize * 4;

struct SceneRun {
  int exitCode = -1;
  std::string out;  // stdout and stderr
  std::vector<unsigned char> pixels;
};

std::string tempPath(const std::string& tag) {
  return ::testing::TempDir() + "vmckpt-gl-" + std::to_string(::getpid()) + "-" + tag;
}

// Runs the scene program; `preload` puts libvmckpt-gl.so in front.
SceneRun runScene(const std::vector<std::string>& args, bool preload,
             const std::map<std::string, std::string>& env = {}) {
  static int counter = 0;
  const std::string outFile = tempPath("frames-" + std::to_string(++counter));
  const std::string logFile = outFile + ".log";
  std::vector<std::string> argv = {VMCKPT_GL_SCENE};
  argv.insert(argv.end(), args.begin(), args.end());
  argv.push_back("--out");
  argv.push_back(outFile);
  const pid_t pid = ::fork();
  if (pid == 0) {
    const int fd = ::open(logFile.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::setenv("EGL_PLATFORM", "surfaceless", 1);
    ::setenv("VMCKPT_GL_NO_AGENT", "1", 1);
    ::unsetenv("GALLIUM_DRIVER");
    for (const auto& [k, v] : env) ::setenv(k.c_str(), v.c_str(), 1);
    if (preload) ::setenv("LD_PRELOAD", VMCKPT_GL_LIB, 1);
    std::vector<char*> cargv;
    for (auto& a : argv) cargv.push_back(a.data());
    cargv.push_back(nullptr);
    ::execv(cargv[0], cargv.data());
    ::_exit(127);
  }
  SceneRun r;
  int status = 0;
  ::waitpid(pid, &status, 0);
  r.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  std::ifstream log(logFile);
  r.out.assign(std::istreambuf_iterator<char>(log), {});
  std::ifstream px(outFile, std::ios::binary);
  r.pixels.assign(std::istreambuf_iterator<char>(px), {});
  ::unlink(outFile.c_str());
  ::unlink(logFile.c_str());
  return r;
}

std::vector<std::string> sceneArgs(const std::string& scene, int frames = kFrames) {
  return {"--scene", scene, "--frames", std::to_string(frames), "--size", std::to_string(kSize)};
}

struct Diff {
  int maxDiff = 0;
  double meanAbs = 0;
  double fractionOver2 = 0;  // channels differing by more than 2 (of 255)
};

Diff compareFrames(const SceneRun& a, const SceneRun& b, int from, int to) {
  Diff d;
  std::size_t n = 0, over = 0;
  double sum = 0;
  for (std::size_t i = static_cast<std::size_t>(from) * kFrameBytes;
       i < static_cast<std::size_t>(to) * kFrameBytes; ++i) {
    const int x = std::abs(static_cast<int>(a.pixels[i]) - static_cast<int>(b.pixels[i]));
    d.maxDiff = std::max(d.maxDiff, x);
    sum += x;
    over += x > 2 ? 1 : 0;
    ++n;
  }
  d.meanAbs = n ? sum / static_cast<double>(n) : 0;
  d.fractionOver2 = n ? static_cast<double>(over) / static_cast<double>(n) : 0;
  return d;
}

bool framesEqual(const SceneRun& a, const SceneRun& b, int from, int to) {
  return std::equal(a.pixels.begin() + static_cast<long>(from * kFrameBytes),
                    a.pixels.begin() + static_cast<long>(to * kFrameBytes),
                    b.pixels.begin() + static_cast<long>(from * kFrameBytes));
}

std::vector<std::string> withRestart(std::vector<std::string> args, const char* driver = nullptr) {
  args.push_back("--restart-at");
  args.push_back(std::to_string(kRestartAt));
  args.push_back("--print-renderer");
  if (driver) {
    args.push_back("--restart-driver");
    args.push_back(driver);
  }
  return args;
}

class GlReplay : public ::testing::TestWithParam<const char*> {};

// llvmpipe -> llvmpipe: the replayed context renders exactly what the old one would have.
TEST_P(GlReplay, SameDriverRestartIsPixelIdentical) {
  const std::string scene = GetParam();
  const SceneRun native = runScene(sceneArgs(scene), false);
  ASSERT_EQ(native.exitCode, 0) << native.out;
  ASSERT_EQ(native.pixels.size(), kFrames * kFrameBytes);
  const SceneRun replayed = runScene(withRestart(sceneArgs(scene)), true);
  ASSERT_EQ(replayed.exitCode, 0) << replayed.out;
  ASSERT_EQ(replayed.pixels.size(), kFrames * kFrameBytes);
  EXPECT_TRUE(framesEqual(native, replayed, 0, kRestartAt))
      << "the interposer changed rendering before the restart";
  const Diff d = compareFrames(native, replayed, kRestartAt, kFrames);
  EXPECT_EQ(d.maxDiff, 0) << scene << ": frames " << kRestartAt << ".." << kFrames
                          << " differ after the restart (mean " << d.meanAbs << ")";
}

// Recorded on llvmpipe, replayed on softpipe. The stated tolerance against the
// uninterrupted llvmpipe run is what the two drivers differ by anyway: mean absolute
// difference <= 0.5 (of 255) and at most 2% of channels off by more than 2. Against an
// uninterrupted softpipe run the replayed frames differ by at most 1 LSB.
TEST_P(GlReplay, CrossDriverRestartIsWithinTolerance) {
  const std::string scene = GetParam();
  const SceneRun llvmpipe = runScene(sceneArgs(scene), false);
  ASSERT_EQ(llvmpipe.exitCode, 0) << llvmpipe.out;
  const SceneRun softpipe = runScene(sceneArgs(scene), false, {{"GALLIUM_DRIVER", "softpipe"}});
  ASSERT_EQ(softpipe.exitCode, 0) << softpipe.out;
  const SceneRun replayed = runScene(withRestart(sceneArgs(scene), "softpipe"), true);
  ASSERT_EQ(replayed.exitCode, 0) << replayed.out;
  ASSERT_EQ(replayed.pixels.size(), kFrames * kFrameBytes);
  EXPECT_NE(replayed.out.find("renderer: llvmpipe"), std::string::npos) << replayed.out;
  EXPECT_NE(replayed.out.find("renderer: softpipe"), std::string::npos)
      << "the replay did not run on softpipe:\n" << replayed.out;

  const Diff vsRecorded = compareFrames(llvmpipe, replayed, kRestartAt, kFrames);
  EXPECT_LE(vsRecorded.meanAbs, 0.5) << scene;
  EXPECT_LE(vsRecorded.fractionOver2, 0.02) << scene;
  const Diff vsSoftpipe = compareFrames(softpipe, replayed, kRestartAt, kFrames);
  EXPECT_LE(vsSoftpipe.maxDiff, 1) << scene << ": replayed softpipe frames differ from a "
                                   << "native softpipe run (mean " << vsSoftpipe.meanAbs << ")";
  // A broken replay would not be this close: the drivers' own distance, for the record.
  const Diff drivers = compareFrames(llvmpipe, softpipe, kRestartAt, kFrames);
  std::printf("%s: replayed-on-softpipe vs llvmpipe: max %d, mean %.3f, >2: %.3f%%; "
              "llvmpipe vs softpipe natively: max %d, mean %.3f\n",
              scene.c_str(), vsRecorded.maxDiff, vsRecorded.meanAbs,
              100 * vsRecorded.fractionOver2, drivers.maxDiff, drivers.meanAbs);
}

INSTANTIATE_TEST_SUITE_P(Scenes, GlReplay, ::testing::Values("core", "fixed"),
                         [](const ::testing::TestParamInfo<const char*>& p) { return std::string(p.param); });

long logBytesAt(const std::string& out, int frames) {
  const std::string tag = "log_bytes frames=" + std::to_string(frames) + " bytes=";
  const auto at = out.find(tag);
  return at == std::string::npos ? -1 : std::atol(out.c_str() + at + tag.size());
}

// The log holds live state, not history: 10,000 frames cost what 10 did (within 3%).
TEST(GlLog, SizeAfter10000FramesIsThatAfter10) {
  const SceneRun r = runScene({"--scene", "core", "--size", "16", "--frames", "10000",
                          "--log-bytes-at", "10,1000,10000"},
                         true);
  ASSERT_EQ(r.exitCode, 0) << r.out;
  const long at10 = logBytesAt(r.out, 10), at10k = logBytesAt(r.out, 10000);
  ASSERT_GT(at10, 0) << r.out;
  ASSERT_GT(at10k, 0) << r.out;
  std::printf("log bytes after 10 frames: %ld, after 10000: %ld\n", at10, at10k);
  EXPECT_LE(std::abs(at10k - at10), at10 * 3 / 100) << r.out;
}

// Without a restart the interposer must not change a single pixel of either scene.
TEST(GlLog, RecordingAloneChangesNoPixel) {
  for (const char* scene : {"core", "fixed"}) {
    const SceneRun native = runScene(sceneArgs(scene, 8), false);
    const SceneRun recorded = runScene(sceneArgs(scene, 8), true);
    ASSERT_EQ(native.exitCode, 0) << native.out;
    ASSERT_EQ(recorded.exitCode, 0) << recorded.out;
    EXPECT_EQ(native.pixels, recorded.pixels) << scene;
  }
}

}  // namespace
