#include "executor/guest_port.h"

#include <gtest/gtest.h>
#include <stdlib.h>
#include <sys/stat.h>

#include <fstream>
#include <string>

#include "protocol/protocol.h"

namespace {

class FakeSysfs : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/guest_port_test.XXXXXX";
    ASSERT_NE(mkdtemp(tmpl), nullptr);
    root_ = tmpl;
  }
  void TearDown() override { ASSERT_EQ(system(("rm -rf " + root_).c_str()), 0); }
  void AddPort(const std::string& dev, const std::string& name) {
    const std::string dir = root_ + "/class/virtio-ports/" + dev;
    ASSERT_EQ(system(("mkdir -p " + dir).c_str()), 0);
    std::ofstream(dir + "/name") << name << "\n";
  }
  std::string root_;
};

TEST_F(FakeSysfs, FindsThePortByName) {
  AddPort("vport0p1", "org.qemu.guest_agent.0");
  AddPort("vport1p1", "svmfuzz.exec");
  EXPECT_EQ(svmfuzz::FindVirtioPort(root_, svmfuzz::proto::kExecutorPortName), "/dev/vport1p1");
}

TEST_F(FakeSysfs, NoSuchPort) {
  AddPort("vport0p1", "other");
  EXPECT_EQ(svmfuzz::FindVirtioPort(root_, "svmfuzz.exec"), "");
  EXPECT_EQ(svmfuzz::FindVirtioPort(root_ + "/missing", "svmfuzz.exec"), "");
}

}  // namespace
