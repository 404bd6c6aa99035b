// DeviceActions against fake devices that record what they were asked.
#include "runner/device_actions.h"

#include <gtest/gtest.h>

#include <mutex>
#include <thread>

#include "program/program.h"
#include "runner/fake_device.h"

namespace svmfuzz {
namespace {

using fake::Bytes;

struct Asked {
  uint8_t type;
  Bytes payload;
};

// A device that answers every request (ACCESS as `access` says) and records them.
class RecordingDevice {
 public:
  using Access = std::function<Bytes(const svmdev_ctl_hdr&)>;
  explicit RecordingDevice(Access access = nullptr)
      : device_([this, access](const svmdev_ctl_hdr& h, const Bytes& payload, bool*) {
          {
            std::lock_guard<std::mutex> lock(mu_);
            asked_.push_back({h.type, payload});
          }
          if (h.type == SVMDEV_CTL_PING) {
            const uint32_t reply[2] = {1, 0};
            return fake::Join(pending_events_, fake::Message(h.type | SVMDEV_CTL_REPLY, h.tag,
                                                             reply, sizeof(reply)));
          }
          if (h.type == SVMDEV_CTL_ACCESS && access) return access(h);
          return fake::Reply(h);
        }),
        ctl_(std::make_shared<DevCtl>(device_.host_fd(), 5)) {}

  std::shared_ptr<DevCtl> ctl() { return ctl_; }
  std::vector<Asked> asked() {
    std::lock_guard<std::mutex> lock(mu_);
    return asked_;
  }
  std::vector<uint8_t> types() {
    std::vector<uint8_t> out;
    for (const Asked& a : asked()) out.push_back(a.type);
    return out;
  }
  // Sent before the next PING's reply.
  Bytes pending_events_;

 private:
  std::mutex mu_;
  std::vector<Asked> asked_;
  fake::Device device_;
  std::shared_ptr<DevCtl> ctl_;
};

proto::DeviceRequest Ask(OpCode op, uint64_t arg0, uint64_t arg1 = 0, uint8_t device = 0) {
  return proto::DeviceRequest{5, static_cast<uint8_t>(op), device, 3, 0x100000000000, arg0, arg1};
}

template <typename T>
T Field(const Bytes& payload) {
  T out;
  EXPECT_EQ(payload.size(), sizeof(out));
  std::memcpy(&out, payload.data(), std::min(payload.size(), sizeof(out)));
  return out;
}

svmdev_ctl_event Done(uint32_t tag, uint64_t value, uint32_t status) {
  svmdev_ctl_event e{};
  e.kind = SVMDEV_EVT_ACCESS_DONE;
  e.tag = tag;
  e.arg = value;
  e.code = status;
  return e;
}

TEST(DeviceActionsTest, StartAsksForTheRunnersEvents) {
  RecordingDevice a, b;
  DeviceActions actions({a.ctl(), b.ctl()}, 1, nullptr);
  std::string error;
  ASSERT_TRUE(actions.Start(&error)) << error;
  for (RecordingDevice* d : {&a, &b}) {
    ASSERT_EQ(d->asked().size(), 1u);
    EXPECT_EQ(d->asked()[0].type, SVMDEV_CTL_EVENTS);
    EXPECT_EQ(Field<uint32_t>(d->asked()[0].payload), kRunnerEvents);
  }
}

TEST(DeviceActionsTest, AStalledAccessIsWaitedForUntilItsAccessDone) {
  // STALLED, then an ACCESS_DONE of some other request, then its own.
  RecordingDevice dev([](const svmdev_ctl_hdr& h) {
    return fake::Join(fake::Join(fake::Reply(h, 0, SVMDEV_STATUS_STALLED, 4),
                                 fake::Event(Done(h.tag + 100, 1, 0))),
                      fake::Event(Done(h.tag, 0xabc, SVMDEV_STATUS_OK)));
  });
  DeviceActions actions({dev.ctl()}, 2, nullptr);
  const proto::DeviceReply reply = actions.Perform(Ask(OpCode::kDeviceAccess, SVMDEV_ACC_WRITE));
  EXPECT_EQ(reply.seq, 5u);
  EXPECT_EQ(reply.status, SVMDEV_STATUS_OK);
  EXPECT_EQ(reply.value, 0xabcu);
  const auto access = Field<svmdev_ctl_access>(dev.asked()[0].payload);
  EXPECT_EQ(access.kind, SVMDEV_ACC_WRITE);
  EXPECT_EQ(access.value, 1u);  // a write of 1
  EXPECT_EQ(access.size, 8);
  EXPECT_EQ(access.ctx, 3);
  // The other request's event stays queued for whoever wants it.
  EXPECT_EQ(dev.ctl()->events().size(), 1u);
}

TEST(DeviceActionsTest, AnAccessThatStaysStalledSaysSoAfterTheTimeout) {
  RecordingDevice dev(
      [](const svmdev_ctl_hdr& h) { return fake::Reply(h, 0, SVMDEV_STATUS_STALLED, 4); });
  DeviceActions actions({dev.ctl()}, 0.2, nullptr);
  const Clock::time_point start = Clock::now();
  const proto::DeviceReply reply = actions.Perform(Ask(OpCode::kDeviceAccess, SVMDEV_ACC_READ));
  EXPECT_GE(SecondsSince(start), 0.2);
  EXPECT_EQ(reply.status, SVMDEV_STATUS_STALLED);
}

TEST(DeviceActionsTest, FaultStormSpreadsItsAccessesOverThePages) {
  RecordingDevice dev([](const svmdev_ctl_hdr& h) { return fake::Reply(h); });
  DeviceActions actions({dev.ctl()}, 1, nullptr);
  actions.Perform(Ask(OpCode::kFaultStorm, 8, 32));
  const auto storm = Field<svmdev_ctl_storm>(dev.asked()[0].payload);
  EXPECT_EQ(storm.stride, 8u * 4096 / 32);
  EXPECT_EQ(storm.count, 32);
  EXPECT_EQ(storm.va, 0x100000000000u);
  EXPECT_EQ(storm.kind, SVMDEV_ACC_READ);
}

TEST(DeviceActionsTest, DelayedAcksAreReleasedOnTime) {
  RecordingDevice dev;
  DeviceActions actions({dev.ctl()}, 1, nullptr);
  EXPECT_EQ(actions.Perform(Ask(OpCode::kDelayAcks, 100000)).status, 0u);
  const auto mode = Field<svmdev_ctl_inval_mode>(dev.asked()[0].payload);
  EXPECT_EQ(mode.mode, SVMDEV_INVAL_DELAY);
  EXPECT_EQ(mode.count, kAllInvalidations);
  EXPECT_EQ(mode.commands, 0u);
  const double due = actions.Poll();
  EXPECT_GT(due, 0.05);
  EXPECT_LE(due, 0.1);
  EXPECT_EQ(dev.asked().size(), 1u);
  std::this_thread::sleep_for(std::chrono::milliseconds(120));
  EXPECT_GT(actions.Poll(), 60);  // nothing more due
  ASSERT_EQ(dev.types(), (std::vector<uint8_t>{SVMDEV_CTL_INVAL_MODE, SVMDEV_CTL_INVAL_MODE,
                                               SVMDEV_CTL_RELEASE}));
  EXPECT_EQ(Field<svmdev_ctl_inval_mode>(dev.asked()[1].payload).mode, SVMDEV_INVAL_NORMAL);
}

TEST(DeviceActionsTest, DropAcksReplacesADelayWhoseReleaseKeepsTheDrop) {
  RecordingDevice dev;
  DeviceActions actions({dev.ctl()}, 1, nullptr);
  actions.Perform(Ask(OpCode::kDelayAcks, 1000));
  actions.Perform(Ask(OpCode::kDropAcks, 2));
  std::this_thread::sleep_for(std::chrono::milliseconds(5));
  actions.Poll();
  ASSERT_EQ(dev.types(), (std::vector<uint8_t>{SVMDEV_CTL_INVAL_MODE, SVMDEV_CTL_INVAL_MODE,
                                               SVMDEV_CTL_RELEASE}));
  const auto drop = Field<svmdev_ctl_inval_mode>(dev.asked()[1].payload);
  EXPECT_EQ(drop.mode, SVMDEV_INVAL_DROP);
  EXPECT_EQ(drop.count, 2u);
}

TEST(DeviceActionsTest, FinishResetsWhatTheProgramArmedAndHandsOverStaleAccesses) {
  RecordingDevice armed, idle;
  svmdev_ctl_event stale{};
  stale.kind = SVMDEV_EVT_STALE;
  stale.va = 0x100000001008;
  stale.ctx = 2;
  idle.pending_events_ = fake::Join(fake::Event(stale), fake::Event(Done(9, 0, 0)));
  DeviceActions actions({armed.ctl(), idle.ctl()}, 1, nullptr);
  actions.Perform(Ask(OpCode::kFailDma, 3));
  EXPECT_EQ(Field<svmdev_ctl_fail_dma>(armed.asked()[0].payload).count, 3u);
  std::vector<CtlEvent> found;
  std::string error;
  ASSERT_TRUE(actions.Finish(&found, &error)) << error;
  EXPECT_EQ(armed.types(), (std::vector<uint8_t>{SVMDEV_CTL_FAIL_DMA, SVMDEV_CTL_INVAL_MODE,
                                                 SVMDEV_CTL_FAIL_DMA, SVMDEV_CTL_RELEASE}));
  EXPECT_EQ(Field<svmdev_ctl_fail_dma>(armed.asked()[2].payload).count, 0u);
  EXPECT_EQ(idle.types(), (std::vector<uint8_t>{SVMDEV_CTL_PING}));
  ASSERT_EQ(found.size(), 1u);
  EXPECT_EQ(found[0].va, 0x100000001008u);
  EXPECT_TRUE(idle.ctl()->events().empty());
  // Nothing is armed any more: the next Finish only pings.
  idle.pending_events_.clear();
  ASSERT_TRUE(actions.Finish(&found, &error));
  EXPECT_EQ(armed.types().back(), SVMDEV_CTL_PING);
  EXPECT_TRUE(found.empty());
}

TEST(DeviceActionsTest, UnreachableDevicesAndOtherOpsAreUnavailable) {
  std::vector<std::string> logged;
  fake::Device broken([](const svmdev_ctl_hdr&, const Bytes&, bool* hang_up) {
    *hang_up = true;
    return Bytes();
  });
  DeviceActions actions({std::make_shared<DevCtl>(broken.host_fd(), 5)}, 1,
                        [&](const std::string& line) { logged.push_back(line); });
  EXPECT_EQ(actions.Perform(Ask(OpCode::kFailDma, 1)).status, proto::kDeviceUnavailable);
  ASSERT_EQ(logged.size(), 1u);
  EXPECT_EQ(logged[0], "runner: fail_dma on svm0: control channel closed by the device");
  EXPECT_EQ(actions.Perform(Ask(OpCode::kFailDma, 1, 0, 1)).status, proto::kDeviceUnavailable);
  EXPECT_EQ(actions.Perform(Ask(OpCode::kMirror, 1)).status, proto::kDeviceUnavailable);
  std::vector<CtlEvent> found;
  std::string error;
  EXPECT_FALSE(actions.Finish(&found, &error));
  EXPECT_EQ(error, "svm0: control channel closed by the device");
}

}  // namespace
}  // namespace svmfuzz
