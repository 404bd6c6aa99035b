// The control-channel client against a fake device end: events between
// replies, replies in pieces, refusals, a device that hangs up, garbage.
#include "runner/devctl.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include "runner/fake_device.h"

namespace svmfuzz {
namespace {

using fake::Bytes;

svmdev_ctl_event MakeEvent(uint32_t kind, uint64_t va, uint32_t tag = 0) {
  svmdev_ctl_event e{};
  e.stamp = 7;
  e.va = va;
  e.kind = kind;
  e.ctx = 1;
  e.tag = tag;
  return e;
}

TEST(DevCtlTest, EventsBetweenRepliesAreQueued) {
  svmdev_ctl_tlb_entry entry{0x4000, 0x2000, 0x2013, 1, 0, 1, 0};
  fake::Device dev([&](const svmdev_ctl_hdr& h, const Bytes&, bool*) {
    if (h.type == SVMDEV_CTL_TLB) {
      Bytes body(4 + sizeof(entry));
      body[0] = 1;
      std::memcpy(body.data() + 4, &entry, sizeof(entry));
      return fake::Join(fake::Event(MakeEvent(SVMDEV_EVT_FAULT, 0x1000)),
                        fake::Message(h.type | SVMDEV_CTL_REPLY, h.tag, body.data(), body.size()));
    }
    const uint64_t counters[SVMDEV_NUM_COUNTERS] = {5, 6};
    return fake::Join(fake::Event(MakeEvent(SVMDEV_EVT_STALE, 0x2000)),
                      fake::Message(h.type | SVMDEV_CTL_REPLY, h.tag, counters, sizeof(counters)));
  });
  DevCtl ctl(dev.host_fd(), 5);
  std::vector<CtlTlbEntry> tlb;
  ASSERT_TRUE(ctl.Tlb(&tlb)) << ctl.error();
  ASSERT_EQ(tlb.size(), 1u);
  EXPECT_EQ(tlb[0].va, 0x4000u);
  EXPECT_EQ(tlb[0].stale, 1);
  std::vector<uint64_t> counters;
  ASSERT_TRUE(ctl.Counters(&counters)) << ctl.error();
  EXPECT_EQ(counters[1], 6u);
  ASSERT_EQ(ctl.events().size(), 2u);
  CtlEvent e;
  ASSERT_TRUE(ctl.NextEvent(1, &e));
  EXPECT_EQ(e.kind, SVMDEV_EVT_FAULT);
  EXPECT_EQ(e.va, 0x1000u);
  ASSERT_TRUE(ctl.NextEvent(1, &e));
  EXPECT_EQ(e.kind, SVMDEV_EVT_STALE);
  EXPECT_FALSE(ctl.NextEvent(0.05, &e));
  EXPECT_NE(ctl.error().find("timed out"), std::string::npos);
}

TEST(DevCtlTest, ARefusalIsAnErrorAndTheChannelGoesOn) {
  fake::Device dev([](const svmdev_ctl_hdr& h, const Bytes&, bool*) {
    if (h.type == SVMDEV_CTL_PING) {
      const svmdev_ctl_result r{0, SVMDEV_STATUS_BAD_OPCODE, 0};
      return fake::Message(SVMDEV_CTL_ERROR, h.tag, &r, sizeof(r));
    }
    return fake::Reply(h, 9);
  });
  DevCtl ctl(dev.host_fd(), 5);
  uint32_t version, status;
  EXPECT_FALSE(ctl.Ping(&version, &status));
  EXPECT_EQ(ctl.error(), "request 0x1 refused: BAD_OPCODE");
  CtlResult r;
  ASSERT_TRUE(ctl.Release(&r)) << ctl.error();
  EXPECT_EQ(r.value, 9u);
}

TEST(DevCtlTest, RepliesInPiecesAndLateRepliesOfTimedOutRequests) {
  int sv[2];
  ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  // Answers nothing to the first request; then its reply and the second's,
  // a byte at a time.
  std::thread device([fd = sv[1]] {
    uint8_t buf[64];
    svmdev_ctl_hdr first, second;
    read(fd, &first, sizeof(first));
    read(fd, &second, sizeof(second));
    const Bytes out = fake::Join(fake::Reply(first, 1), fake::Reply(second, 2));
    for (uint8_t b : out) {
      write(fd, &b, 1);
      usleep(100);
    }
    while (read(fd, buf, sizeof(buf)) > 0) {
    }
    close(fd);
  });
  DevCtl ctl(sv[0], 0.1);
  CtlResult r;
  EXPECT_FALSE(ctl.Release(&r));
  EXPECT_NE(ctl.error().find("timed out"), std::string::npos) << ctl.error();
  ASSERT_TRUE(ctl.Release(&r)) << ctl.error();
  ctl.Close();
  device.join();
  EXPECT_EQ(r.value, 2u);
}

TEST(DevCtlTest, ADeviceThatHangsUpMidReply) {
  fake::Device dev([](const svmdev_ctl_hdr& h, const Bytes&, bool* hang_up) {
    *hang_up = true;
    Bytes half = fake::Reply(h, 5);
    half.resize(half.size() / 2);
    return half;
  });
  DevCtl ctl(dev.host_fd(), 5);
  CtlResult r;
  EXPECT_FALSE(ctl.FailDma(0, 1, &r));
  EXPECT_EQ(ctl.error(), "control channel closed by the device");
  EXPECT_FALSE(ctl.Release(&r));
}

TEST(DevCtlTest, GarbageBreaksTheChannelForGood) {
  fake::Device dev([](const svmdev_ctl_hdr&, const Bytes&, bool*) { return Bytes(40, 0x33); });
  DevCtl ctl(dev.host_fd(), 5);
  CtlResult r;
  EXPECT_FALSE(ctl.InvalMode(SVMDEV_INVAL_DROP, 1, 0, &r));
  EXPECT_EQ(ctl.error(), "bad magic 0x33 from the device");
  EXPECT_FALSE(ctl.Release(&r));
  EXPECT_EQ(ctl.error(), "bad magic 0x33 from the device");
}

TEST(DevCtlTest, RepliesOfTheWrongSizeOrTypeAreErrors) {
  std::atomic<int> n{0};
  fake::Device dev([&](const svmdev_ctl_hdr& h, const Bytes&, bool*) {
    switch (n++) {
      case 0:
        return fake::Message(h.type | SVMDEV_CTL_REPLY, h.tag, "12345678", 8);
      case 1:
        return fake::Reply(svmdev_ctl_hdr{SVMDEV_CTL_MAGIC, SVMDEV_CTL_PING, 0, h.tag});
      case 2: {
        const uint32_t count = 1000;  // more entries than the reply holds
        return fake::Message(h.type | SVMDEV_CTL_REPLY, h.tag, &count, sizeof(count));
      }
      default: {
        svmdev_ctl_event e = MakeEvent(SVMDEV_EVT_STALE, 0);
        return fake::Message(SVMDEV_CTL_EVENT, 0, &e, sizeof(e) - 1);
      }
    }
  });
  DevCtl ctl(dev.host_fd(), 5);
  CtlResult r;
  EXPECT_FALSE(ctl.Access(1, 0x1000, SVMDEV_ACC_READ, 8, 0, &r));
  EXPECT_EQ(ctl.error(), "reply of 8 bytes to request 0x2, expected 16");
  EXPECT_FALSE(ctl.Release(&r));
  EXPECT_EQ(ctl.error(), "reply type 0x81 to request 0x9");
  std::vector<CtlTlbEntry> tlb;
  EXPECT_FALSE(ctl.Tlb(&tlb));
  EXPECT_EQ(ctl.error(), "TLB reply of 4 bytes for 1000 entries");
  EXPECT_FALSE(ctl.SetEvents(SVMDEV_EVT_STALE, &r));
  EXPECT_EQ(ctl.error(), "event of 39 bytes from the device");
}

TEST(DevCtlTest, RequestsCarryTheSpecLayouts) {
  Bytes seen;
  fake::Device dev([&](const svmdev_ctl_hdr& h, const Bytes& payload, bool*) {
    seen = payload;
    return fake::Reply(h, 0, SVMDEV_STATUS_STALLED, 12);
  });
  DevCtl ctl(dev.host_fd(), 5);
  CtlResult r;
  ASSERT_TRUE(ctl.Access(3, 0x1234000, SVMDEV_ACC_ATOMIC, 8, 1, &r, 0, SVMDEV_AOP_ADD));
  EXPECT_EQ(r.status, SVMDEV_STATUS_STALLED);
  EXPECT_EQ(r.fault_id, 12u);
  ASSERT_EQ(seen.size(), 32u);
  EXPECT_EQ(seen[24], 3);                  // ctx
  EXPECT_EQ(seen[26], SVMDEV_ACC_ATOMIC);  // kind
  EXPECT_EQ(seen[27], 8);                  // size
  ASSERT_TRUE(ctl.FaultStorm(2, 0x5000, 1024, 32, SVMDEV_ACC_READ, &r));
  ASSERT_EQ(seen.size(), 24u);
  EXPECT_EQ(seen[8] | seen[9] << 8, 1024);  // stride
  EXPECT_EQ(seen[18], 32);                  // count
  EXPECT_EQ(ctl.tag(), 2u);
}

}  // namespace
}  // namespace svmfuzz
