// The host transport against the real executor (its Serve loop in a child
// process, on a socketpair), and against peers that misbehave.
#include "runner/executor_link.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <functional>

#include "executor/server.h"
#include "program/binary.h"
#include "program/text.h"
#include "svmdev/svmdev_hw.h"

namespace svmfuzz {
namespace {

using proto::MsgType;

std::vector<uint8_t> Program(const std::string& text) {
  ParseError error;
  const auto program = Parse(text, &error);
  EXPECT_TRUE(program.has_value()) << error.ToString();
  return program ? Encode(*program) : std::vector<uint8_t>{};
}

class LinkTest : public ::testing::Test {
 protected:
  void TearDown() override {
    link_.reset();
    if (peer_ > 0) {
      kill(peer_, SIGKILL);
      waitpid(peer_, nullptr, 0);
    }
  }
  // `serve` on the other end of a socketpair, in a child process.
  void StartPeer(const std::function<void(int fd)>& serve) {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    peer_ = fork();
    ASSERT_GE(peer_, 0);
    if (peer_ == 0) {
      close(sv[0]);
      serve(sv[1]);
      _exit(0);
    }
    close(sv[1]);
    link_ = std::make_unique<ExecutorLink>(sv[0]);
  }
  // The real executor.
  void StartExecutor() {
    StartPeer([](int fd) {
      Supervisor supervisor;
      _exit(Serve(fd, &supervisor, "test-kernel", false) ? 0 : 2);
    });
  }
  // A peer that writes `bytes`, then keeps the stream open (or closes it).
  void StartPeer(const std::vector<uint8_t>& bytes, bool then_close) {
    StartPeer([&](int fd) {
      WriteAll(fd, bytes.data(), bytes.size());
      if (!then_close) pause();
    });
  }
  proto::ExecRequest Request(const std::string& text, uint32_t op_ms = 5000) {
    return proto::ExecRequest{++id_, proto::kExecCover, op_ms, 20000, 1024, {}, Program(text)};
  }

  pid_t peer_ = -1;
  uint64_t id_ = 0;
  std::unique_ptr<ExecutorLink> link_;
};

class RecordingDevices : public DeviceHandler {
 public:
  proto::DeviceReply Perform(const proto::DeviceRequest& request) override {
    asked.push_back(request);
    return {request.seq, status, 42};
  }
  double Poll() override {
    polls++;
    return 3600;
  }
  std::vector<proto::DeviceRequest> asked;
  uint32_t status = 0;
  int polls = 0;
};

TEST_F(LinkTest, ReadyPingAndPowerOff) {
  StartExecutor();
  proto::Ready ready;
  ASSERT_EQ(link_->WaitReady(20, &ready), LinkStatus::kOk) << link_->error();
  EXPECT_EQ(ready.kernel, "test-kernel");
  double best = 1e9;
  for (int i = 0; i < 200; i++) {
    double seconds = 0;
    ASSERT_EQ(link_->Ping(5, &seconds), LinkStatus::kOk) << link_->error();
    best = std::min(best, seconds);
  }
  EXPECT_GT(best, 0);
  RecordProperty("round_trip_us", static_cast<int>(best * 1e6));
  std::printf("host<->executor round trip over a socketpair: %.1f us (best of 200)\n", best * 1e6);
  EXPECT_EQ(link_->PowerOff(10), LinkStatus::kOk) << link_->error();
  int status = 0;
  ASSERT_EQ(waitpid(peer_, &status, 0), peer_);
  peer_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(LinkTest, ExecuteRelaysDeviceRequestsAndKeepsTheRawResult) {
  StartExecutor();
  proto::Ready ready;
  ASSERT_EQ(link_->WaitReady(20, &ready), LinkStatus::kOk);
  RecordingDevices devices;
  devices.status = SVMDEV_STATUS_DMA_ERROR;
  Executed out;
  ASSERT_EQ(
      link_->Execute(Request("yield\nfail_dma count=3\ndrop_acks count=2\n"), 20, &devices, &out),
      LinkStatus::kOk)
      << link_->error();
  EXPECT_EQ(out.result.id, id_);
  ASSERT_EQ(devices.asked.size(), 2u);
  EXPECT_EQ(devices.asked[0].op, static_cast<uint8_t>(OpCode::kFailDma));
  EXPECT_EQ(devices.asked[0].arg0, 3u);
  EXPECT_EQ(devices.asked[1].op, static_cast<uint8_t>(OpCode::kDropAcks));
  EXPECT_GT(devices.polls, 0);
  ASSERT_EQ(out.result.ops.size(), 3u);
  EXPECT_EQ(out.result.ops[1].err, EIO);
  EXPECT_EQ(out.result.ops[1].ret, SVMDEV_STATUS_DMA_ERROR);
  proto::ExecResult again;
  ASSERT_TRUE(proto::Decode(out.payload, &again));
  EXPECT_EQ(again, out.result);
}

TEST_F(LinkTest, WithoutAHandlerDeviceActionsAreUnsupported) {
  StartExecutor();
  proto::Ready ready;
  ASSERT_EQ(link_->WaitReady(20, &ready), LinkStatus::kOk);
  Executed out;
  ASSERT_EQ(link_->Execute(Request("delay_acks us=10\n"), 20, nullptr, &out), LinkStatus::kOk);
  ASSERT_EQ(out.result.ops.size(), 1u);
  EXPECT_TRUE(out.result.ops[0].flags & proto::kOpUnsupported);
}

TEST_F(LinkTest, NoResultInTimeIsATimeoutAndTheNextProgramStillRuns) {
  StartExecutor();
  proto::Ready ready;
  ASSERT_EQ(link_->WaitReady(20, &ready), LinkStatus::kOk);
  Executed out;
  EXPECT_EQ(link_->Execute(Request("sleep us=600000\n"), 0.2, nullptr, &out), LinkStatus::kTimeout);
  // The late RESULT is not the next program's.
  EXPECT_EQ(link_->Execute(Request("yield\n"), 20, nullptr, &out), LinkStatus::kProtocol);
  EXPECT_NE(link_->error().find("expected " + std::to_string(id_)), std::string::npos)
      << link_->error();
}

TEST_F(LinkTest, AnExecutorOfAnotherVersionIsRefused) {
  const proto::Ready old{1, 0, "old"};
  StartPeer(proto::EncodeFrame(MsgType::kReady, proto::Encode(old)), false);
  proto::Ready ready;
  EXPECT_EQ(link_->WaitReady(5, &ready), LinkStatus::kProtocol);
  EXPECT_NE(link_->error().find("protocol 1"), std::string::npos) << link_->error();
  EXPECT_NE(link_->error().find("rebuild the initramfs"), std::string::npos);
}

TEST_F(LinkTest, AClosedPortIsClosed) {
  StartPeer({}, true);
  proto::Ready ready;
  EXPECT_EQ(link_->WaitReady(5, &ready), LinkStatus::kClosed);
  EXPECT_EQ(link_->error(), "and closed the executor port");
}

TEST_F(LinkTest, GarbageAndWrongAnswersAreProtocolErrors) {
  StartPeer(std::vector<uint8_t>(32, 0x41), false);
  proto::Ready ready;
  EXPECT_EQ(link_->WaitReady(5, &ready), LinkStatus::kProtocol);
  EXPECT_NE(link_->error().find("bad frame header"), std::string::npos) << link_->error();
}

TEST_F(LinkTest, AnErrorFrameIsNamedWithItsText) {
  const std::string text = "cannot read request";
  StartPeer(proto::EncodeFrame(MsgType::kError, std::vector<uint8_t>(text.begin(), text.end())),
            false);
  double seconds;
  EXPECT_EQ(link_->Ping(5, &seconds), LinkStatus::kProtocol);
  EXPECT_EQ(link_->error(), "sent ERROR (cannot read request) instead of PONG");
}

TEST_F(LinkTest, APeerThatIsGoneEndsTheWait) {
  StartPeer({}, false);
  link_->set_alive([] { return false; });
  proto::Ready ready;
  const Clock::time_point start = Clock::now();
  EXPECT_EQ(link_->WaitReady(30, &ready), LinkStatus::kClosed);
  EXPECT_LT(SecondsSince(start), 5);
  EXPECT_EQ(link_->error(), "while the host waited for the executor");
}

}  // namespace
}  // namespace svmfuzz
