// The interposer preloaded into a real process (no RDMA device needed): programs that
// dlopen libibverbs themselves get the interposer's wrappers, direct verbs are refused
// at dlopen, and features that cannot be checkpointed fail with EOPNOTSUPP and one line.
// Run with LD_PRELOAD=libvmckpt-ib.so (CMake sets it); without it every test skips.
#include <dlfcn.h>
#include <infiniband/verbs.h>

#include <gtest/gtest.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <string>

namespace {

bool preloaded() {
  const char* p = std::getenv("LD_PRELOAD");
  return p != nullptr && std::strstr(p, "libvmckpt-ib.so") != nullptr;
}

// The object that defines `symbol` for a lookup through `handle`.
std::string definingObject(void* handle, const char* symbol) {
  void* f = dlsym(handle, symbol);
  Dl_info info{};
  if (f == nullptr || dladdr(f, &info) == 0 || info.dli_fname == nullptr) return "";
  return info.dli_fname;
}

}  // namespace

TEST(IbPreload, DlopenOfLibibverbsYieldsTheWrappers) {
  if (!preloaded()) GTEST_SKIP() << "run with LD_PRELOAD=libvmckpt-ib.so";
  void* h = dlopen("libibverbs.so.1", RTLD_NOW | RTLD_LOCAL);
  ASSERT_NE(h, nullptr) << dlerror();
  // NCCL-style: every entry point looked up by name must be the interposer's...
  for (const char* fn : {"ibv_open_device", "ibv_create_qp", "ibv_reg_mr", "ibv_modify_qp", "ibv_get_cq_event"})
    EXPECT_NE(definingObject(h, fn).find("libvmckpt-ib.so"), std::string::npos) << fn << " comes from "
                                                                                 << definingObject(h, fn);
  // ...and what it does not wrap still resolves, to libibverbs.
  EXPECT_NE(definingObject(h, "ibv_wc_status_str").find("libibverbs"), std::string::npos);
  dlclose(h);
}

TEST(IbPreload, DirectVerbsAreRefusedAtDlopen) {
  if (!preloaded()) GTEST_SKIP() << "run with LD_PRELOAD=libvmckpt-ib.so";
  EXPECT_EQ(dlopen("libmlx5.so.1", RTLD_NOW), nullptr) << "libmlx5 (mlx5dv) bypasses libibverbs";
}

TEST(IbPreload, FeaturesThatCannotBeCheckpointedAreRefused) {
  if (!preloaded()) GTEST_SKIP() << "run with LD_PRELOAD=libvmckpt-ib.so";
  EXPECT_EQ(ibv_attach_mcast(nullptr, nullptr, 0), EOPNOTSUPP);
  EXPECT_EQ(ibv_detach_mcast(nullptr, nullptr, 0), EOPNOTSUPP);
  EXPECT_EQ(ibv_rereg_mr(nullptr, 0, nullptr, nullptr, 0, 0), EOPNOTSUPP);
  errno = 0;
  EXPECT_EQ(ibv_qp_to_qp_ex(nullptr), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
  errno = 0;
  EXPECT_EQ(ibv_import_device(3), nullptr);
  EXPECT_EQ(errno, EOPNOTSUPP);
}

TEST(IbPreload, ObjectsThatAreNotShadowsAreRejected) {
  if (!preloaded()) GTEST_SKIP() << "run with LD_PRELOAD=libvmckpt-ib.so";
  errno = 0;
  EXPECT_EQ(ibv_alloc_pd(nullptr), nullptr);
  EXPECT_EQ(errno, EINVAL);
  EXPECT_EQ(ibv_dealloc_pd(nullptr), EINVAL);
  EXPECT_EQ(ibv_destroy_qp(nullptr), EINVAL);
}
