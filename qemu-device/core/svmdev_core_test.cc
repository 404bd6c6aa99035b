#include "svmdev/svmdev_core.h"

#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "svmdev/svmdev_hw.h"

namespace {

struct Host {
  std::vector<std::string> errors;
  static void GuestError(void* opaque, const char* msg) {
    static_cast<Host*>(opaque)->errors.emplace_back(msg);
  }
};

class CoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    svmdev_config cfg{};
    cfg.vram_size = 1 << 20;
    svmdev_host_ops ops{};
    ops.opaque = &host_;
    ops.guest_error = Host::GuestError;
    char err[128] = "";
    core_ = svmdev_core_new(&cfg, &ops, err, sizeof(err));
    ASSERT_NE(core_, nullptr) << err;
  }
  void TearDown() override { svmdev_core_free(core_); }

  Host host_;
  svmdev_core* core_ = nullptr;
};

TEST_F(CoreTest, IdentifiesItself) {
  EXPECT_EQ(svmdev_core_mmio_read(core_, SVMDEV_REG_ID, 4), SVMDEV_ID_MAGIC);
  EXPECT_EQ(svmdev_core_mmio_read(core_, SVMDEV_REG_VERSION, 4), SVMDEV_VERSION);
  EXPECT_TRUE(host_.errors.empty());
}

TEST_F(CoreTest, UnknownRegisterIsAGuestErrorNotACrash) {
  EXPECT_EQ(svmdev_core_mmio_read(core_, 0xfff8, 4), ~0ull);
  svmdev_core_mmio_write(core_, SVMDEV_REG_ID, 1, 4);
  EXPECT_EQ(host_.errors.size(), 2u);
  EXPECT_EQ(svmdev_core_mmio_read(core_, SVMDEV_REG_ID, 4), SVMDEV_ID_MAGIC);
}

TEST(CoreConfig, RejectsUnalignedVram) {
  svmdev_config cfg{};
  cfg.vram_size = 4097;
  svmdev_host_ops ops{};
  char err[128] = "";
  EXPECT_EQ(svmdev_core_new(&cfg, &ops, err, sizeof(err)), nullptr);
  EXPECT_NE(std::string(err).find("4097"), std::string::npos);
}

}  // namespace
