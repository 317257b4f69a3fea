// vmckpt-cuda-workload: the CUDA test workload. Several streams keep kernels in flight on
// buffers in device memory (or managed memory with --managed, which the CPU also writes
// between rounds); at the end it prints a checksum of every buffer, identical for every
// run with the same arguments however often the process was checkpointed in between.
//   vmckpt-cuda-workload [--mib N] [--streams S] [--rounds R] [--managed] [--sleep-ms M]
//                        [--alloc-loop N]
// Prints "ready PID" once its buffers exist, "round K" after each round, then
// "elapsed_ms T" (the rounds) and "checksum HEX". --alloc-loop N first times N rounds of
// allocation and free (1 MiB device, 1 MiB managed, 4 KiB device) and prints
// "alloc_loop_ms T". Exit 1 with "error: ..." on any CUDA failure.
#include <cuda_runtime.h>
#include <unistd.h>

#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>
#include <vector>

namespace {

__global__ void mix(uint32_t* p, size_t n, uint32_t round) {
  for (size_t i = blockIdx.x * static_cast<size_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<size_t>(gridDim.x) * blockDim.x) {
    uint32_t x = p[i] ^ static_cast<uint32_t>(i);
    for (int k = 0; k < 32; ++k) x = x * 1664525u + 1013904223u + round;
    p[i] = x;
  }
}

void check(cudaError_t e, const char* what) {
  if (e == cudaSuccess) return;
  std::printf("error: %s: %s\n", what, cudaGetErrorString(e));
  std::exit(1);
}

long arg(int& i, int argc, char** argv) {
  if (i + 1 >= argc) {
    std::printf("error: %s needs a value\n", argv[i]);
    std::exit(2);
  }
  return std::strtol(argv[++i], nullptr, 10);
}

}  // namespace

int main(int argc, char** argv) {
  long mib = 256, streams = 4, rounds = 200, sleepMs = 0, allocLoop = 0;
  bool managed = false;
  for (int i = 1; i < argc; ++i) {
    if (!std::strcmp(argv[i], "--mib")) mib = arg(i, argc, argv);
    else if (!std::strcmp(argv[i], "--streams")) streams = arg(i, argc, argv);
    else if (!std::strcmp(argv[i], "--rounds")) rounds = arg(i, argc, argv);
    else if (!std::strcmp(argv[i], "--sleep-ms")) sleepMs = arg(i, argc, argv);
    else if (!std::strcmp(argv[i], "--alloc-loop")) allocLoop = arg(i, argc, argv);
    else if (!std::strcmp(argv[i], "--managed")) managed = true;
    else {
      std::printf("error: unknown argument %s\n", argv[i]);
      return 2;
    }
  }
  if (mib < 1 || streams < 1 || streams > 64 || rounds < 1) {
    std::printf("error: want --mib >= 1, --streams 1..64, --rounds >= 1\n");
    return 2;
  }
  using Clock = std::chrono::steady_clock;
  auto msSince = [](Clock::time_point t0) {
    return std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
  };
  check(cudaFree(nullptr), "cudaFree(0)");  // context creation is not timed below
  if (allocLoop > 0) {
    auto t0 = Clock::now();
    for (long i = 0; i < allocLoop; ++i) {
      void *a = nullptr, *b = nullptr, *c = nullptr;
      check(cudaMalloc(&a, 1 << 20), "cudaMalloc");
      check(cudaMallocManaged(&b, 1 << 20), "cudaMallocManaged");
      check(cudaMalloc(&c, 4096), "cudaMalloc");
      check(cudaFree(c), "cudaFree");
      check(cudaFree(b), "cudaFree");
      check(cudaFree(a), "cudaFree");
    }
    std::printf("alloc_loop_ms %.1f\n", msSince(t0));
  }
  size_t n = static_cast<size_t>(mib) * 1024 * 1024 / 4 / static_cast<size_t>(streams);
  std::vector<uint32_t*> buf(static_cast<size_t>(streams));
  std::vector<cudaStream_t> s(static_cast<size_t>(streams));
  for (size_t k = 0; k < buf.size(); ++k) {
    check(cudaStreamCreateWithFlags(&s[k], cudaStreamNonBlocking), "cudaStreamCreate");
    check(managed ? cudaMallocManaged(&buf[k], n * 4) : cudaMalloc(&buf[k], n * 4), "alloc");
    check(cudaMemsetAsync(buf[k], static_cast<int>(k + 1), n * 4, s[k]), "cudaMemsetAsync");
  }
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::printf("ready %d\n", static_cast<int>(getpid()));
  std::fflush(stdout);
  auto started = Clock::now();
  for (long r = 0; r < rounds; ++r) {
    // Eight launches per stream per round, no synchronization in between: kernels in flight.
    for (int j = 0; j < 8; ++j)
      for (size_t k = 0; k < buf.size(); ++k)
        mix<<<264, 256, 0, s[k]>>>(buf[k], n, static_cast<uint32_t>(r * 8 + j));
    check(cudaGetLastError(), "launch");
    for (size_t k = 0; k < buf.size(); ++k) check(cudaStreamSynchronize(s[k]), "cudaStreamSynchronize");
    if (managed)  // the CPU writes managed memory between rounds
      for (size_t k = 0; k < buf.size(); ++k) buf[k][(static_cast<size_t>(r) * 4099) % n] += static_cast<uint32_t>(r);
    std::printf("round %ld\n", r);
    std::fflush(stdout);
    if (sleepMs > 0) std::this_thread::sleep_for(std::chrono::milliseconds(sleepMs));
  }
  check(cudaDeviceSynchronize(), "cudaDeviceSynchronize");
  std::printf("elapsed_ms %.1f\n", msSince(started));
  uint64_t h = 1469598103934665603ull;
  std::vector<uint32_t> host(n);
  for (size_t k = 0; k < buf.size(); ++k) {
    check(cudaMemcpy(host.data(), buf[k], n * 4, cudaMemcpyDeviceToHost), "cudaMemcpy");
    for (uint32_t v : host) {
      h ^= v;
      h *= 1099511628211ull;
    }
    check(cudaFree(buf[k]), "cudaFree");
  }
  std::printf("checksum %016llx\n", static_cast<unsigned long long>(h));
  return 0;
}
