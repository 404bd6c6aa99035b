// The executor end to end on this machine: a real Serve() loop in a child
// process, programs run by real forks and threads. KCOV, fault injection and
// the OOM killer are the guest's; here their absence must be handled.
#include "executor/server.h"

#include <dirent.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <fstream>
#include <string>

#include "protocol/protocol.h"
#include "program/binary.h"
#include "program/text.h"

namespace svmfuzz {
namespace {

using proto::MsgType;
using proto::Status;

class ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
    server_ = fork();
    ASSERT_GE(server_, 0);
    if (server_ == 0) {
      close(sv[0]);
      Supervisor supervisor;
      _exit(Serve(sv[1], &supervisor, "test-kernel", false) ? 0 : 2);
    }
    close(sv[1]);
    fd_ = sv[0];
    proto::Frame f = Receive();
    ASSERT_EQ(f.type, MsgType::kReady);
    ASSERT_TRUE(proto::Decode(f.payload, &ready_));
  }
  void TearDown() override {
    close(fd_);
    if (server_ > 0) {
      kill(server_, SIGKILL);
      waitpid(server_, nullptr, 0);
    }
  }

  void Send(MsgType type, const std::vector<uint8_t>& payload) {
    const std::vector<uint8_t> bytes = proto::EncodeFrame(type, payload);
    ASSERT_EQ(write(fd_, bytes.data(), bytes.size()), static_cast<ssize_t>(bytes.size()));
  }
  proto::Frame Receive(int timeout_ms = 20000) {
    proto::Frame f;
    for (;;) {
      if (reader_.Next(&f) == proto::FrameReader::Status::kFrame) return f;
      pollfd p{fd_, POLLIN, 0};
      if (poll(&p, 1, timeout_ms) <= 0) {
        ADD_FAILURE() << "no frame from the executor";
        return {};
      }
      uint8_t buf[65536];
      const ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) {
        ADD_FAILURE() << "executor closed the stream";
        return {};
      }
      reader_.Feed(buf, static_cast<size_t>(n));
    }
  }
  void StartExec(const std::string& text, uint32_t op_ms = 5000, uint32_t prog_ms = 20000) {
    ParseError error;
    const auto program = Parse(text, &error);
    EXPECT_TRUE(program.has_value()) << error.ToString();
    proto::ExecRequest req{++id_, proto::kExecCover, op_ms, prog_ms, 1024, {}, Encode(*program)};
    Send(MsgType::kExec, proto::Encode(req));
  }
  proto::ExecResult Exec(const std::string& text, uint32_t op_ms = 5000, uint32_t prog_ms = 20000) {
    StartExec(text, op_ms, prog_ms);
    return FinishExec();
  }
  proto::ExecResult FinishExec() {
    proto::Frame f = Receive();
    proto::ExecResult r;
    EXPECT_EQ(f.type, MsgType::kResult);
    EXPECT_TRUE(proto::Decode(f.payload, &r));
    EXPECT_EQ(r.id, id_);
    return r;
  }
  // The program process: the server's child.
  pid_t ProgramPid() {
    for (int tries = 0; tries < 200; tries++) {
      DIR* d = opendir("/proc");
      while (dirent* e = readdir(d)) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9') continue;
        std::ifstream f(std::string("/proc/") + e->d_name + "/stat");
        std::string stat((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
        const size_t paren = stat.rfind(')');
        if (paren == std::string::npos) continue;
        if (std::stoi(stat.substr(paren + 4)) == server_) {
          closedir(d);
          return std::stoi(e->d_name);
        }
      }
      closedir(d);
      usleep(10000);
    }
    return -1;
  }

  pid_t server_ = -1;
  int fd_ = -1;
  uint64_t id_ = 0;
  proto::Ready ready_;
  proto::FrameReader reader_;
};

TEST_F(ServerTest, ReadyPingPowerOff) {
  EXPECT_EQ(ready_.version, proto::kVersion);
  EXPECT_EQ(ready_.kernel, "test-kernel");
  Send(MsgType::kPing, {4, 2});
  proto::Frame pong = Receive();
  EXPECT_EQ(pong.type, MsgType::kPong);
  EXPECT_EQ(pong.payload, (std::vector<uint8_t>{4, 2}));
  Send(MsgType::kPowerOff, {});
  EXPECT_EQ(Receive().type, MsgType::kBye);
  int status = 0;
  ASSERT_EQ(waitpid(server_, &status, 0), server_);
  server_ = -1;
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

TEST_F(ServerTest, UnknownAndMalformedRequestsGetErrors) {
  Send(static_cast<MsgType>(99), {});
  EXPECT_EQ(Receive().type, MsgType::kError);
  Send(MsgType::kExec, {1, 2});
  EXPECT_EQ(Receive().type, MsgType::kError);
  Send(MsgType::kPing, {});
  EXPECT_EQ(Receive().type, MsgType::kPong);
}

TEST_F(ServerTest, RunsAProgramWithThreadsAndForks) {
  const proto::ExecResult r = Exec(
      "mmap buf=0 pages=16 kind=anon prot=rw\n"
      "mmap buf=1 pages=4 kind=file_shared prot=rw\n"
      "write buf=0 off=0 pages=16 seed=1\n"
      "thread_create tid=1\n"
      "@1 write buf=1 off=0 pages=4 seed=2\n"
      "@1 madvise buf=0 off=8 pages=8 advice=pageout\n"
      "thread_join tid=1\n"
      "fork wait=yes {\n"
      "  verify buf=0 off=0 pages=16 seed=1\n"
      "  write buf=1 off=0 pages=2 seed=3\n"
      "}\n"
      "verify buf=1 off=0 pages=2 seed=3\n"
      "verify buf=1 off=2 pages=2 seed=2\n"
      "mremap buf=0 pages=32 move=yes\n"
      "read buf=0 off=0 pages=32\n"
      "munmap buf=0 off=0 pages=32\n"
      "yield\n"
      "sleep us=1000\n");
  EXPECT_EQ(r.status, Status::kOk) << r.message;
  ASSERT_EQ(r.ops.size(), 17u);
  for (size_t i = 0; i < r.ops.size(); i++) {
    EXPECT_TRUE(r.ops[i].flags & proto::kOpDone) << i;
    EXPECT_EQ(r.ops[i].err, 0) << i;
  }
  EXPECT_EQ(r.ops[4].thread, 1);
  EXPECT_EQ(r.ops[4].code, static_cast<uint8_t>(OpCode::kWrite));
  EXPECT_TRUE(r.mismatches.empty());
}

TEST_F(ServerTest, DriverOpsAreUnsupportedNotFatal) {
  const proto::ExecResult r = Exec(
      "mmap buf=0 pages=1 kind=anon prot=rw\n"
      "mirror buf=0 off=0 pages=1 write=yes\n"
      "fault_storm buf=0 off=0 pages=1 count=4\n"
      "touch buf=0 off=0 pages=1\n");
  EXPECT_EQ(r.status, Status::kOk);
  ASSERT_EQ(r.ops.size(), 4u);
  EXPECT_EQ(r.ops[1].err, EOPNOTSUPP);
  EXPECT_TRUE(r.ops[1].flags & proto::kOpUnsupported);
  EXPECT_TRUE(r.ops[2].flags & proto::kOpUnsupported);
  EXPECT_EQ(r.ops[3].err, 0);
}

TEST_F(ServerTest, DeviceActionsAskTheHost) {
  StartExec(
      "delay_acks us=5000\n"
      "fail_dma count=3\n"
      "drop_acks count=2\n");
  std::vector<proto::DeviceRequest> asked;
  const std::vector<proto::DeviceReply> replies = {{0, 0, 7}, {0, 6, 0}, {0, proto::kDeviceUnavailable, 0}};
  for (const proto::DeviceReply& want : replies) {
    const proto::Frame f = Receive();
    ASSERT_EQ(f.type, MsgType::kDevice);
    proto::DeviceRequest req;
    ASSERT_TRUE(proto::Decode(f.payload, &req));
    asked.push_back(req);
    // A reply to some earlier request is not this one's.
    proto::DeviceReply stale = want;
    stale.seq = req.seq + 100;
    stale.value = 99;
    Send(MsgType::kDeviceReply, proto::Encode(stale));
    proto::DeviceReply reply = want;
    reply.seq = req.seq;
    Send(MsgType::kDeviceReply, proto::Encode(reply));
  }
  const proto::ExecResult r = FinishExec();
  EXPECT_EQ(r.status, Status::kOk);
  ASSERT_EQ(asked.size(), 3u);
  EXPECT_EQ(asked[0].op, static_cast<uint8_t>(OpCode::kDelayAcks));
  EXPECT_EQ(asked[0].arg0, 5000u);
  EXPECT_EQ(asked[1].op, static_cast<uint8_t>(OpCode::kFailDma));
  EXPECT_EQ(asked[1].arg0, 3u);
  EXPECT_EQ(asked[2].op, static_cast<uint8_t>(OpCode::kDropAcks));
  EXPECT_EQ(asked[0].device, 0);
  EXPECT_NE(asked[0].seq, asked[1].seq);
  ASSERT_EQ(r.ops.size(), 3u);
  EXPECT_EQ(r.ops[0].err, 0);
  EXPECT_EQ(r.ops[0].ret, 7);
  EXPECT_EQ(r.ops[1].err, EIO);  // the device's status in ret
  EXPECT_EQ(r.ops[1].ret, 6);
  EXPECT_EQ(r.ops[2].err, EOPNOTSUPP);
  EXPECT_TRUE(r.ops[2].flags & proto::kOpUnsupported);
}

TEST_F(ServerTest, OpenDevNamesTheDeviceOfItsFilesActions) {
  StartExec(
      "open_dev file=1 dev=2 personality=slow\n"
      "mmap buf=0 pages=1 kind=anon prot=rw\n"
      "mirror buf=0 off=0 pages=1 write=no file=1\n"
      "drop_acks count=1 file=1\n"
      "fail_dma count=1\n"
      "fork wait=yes {\n"
      "  delay_acks us=1 file=1\n"
      "}\n");
  std::vector<uint8_t> devices;
  for (int i = 0; i < 3; i++) {
    const proto::Frame f = Receive();
    ASSERT_EQ(f.type, MsgType::kDevice);
    proto::DeviceRequest req;
    ASSERT_TRUE(proto::Decode(f.payload, &req));
    devices.push_back(req.device);
    Send(MsgType::kDeviceReply, proto::Encode(proto::DeviceReply{req.seq, 0, 0}));
  }
  const proto::ExecResult r = FinishExec();
  EXPECT_EQ(r.status, Status::kOk) << r.message;
  // No /dev/svmdev2 here: the open and the file's driver ops are unsupported.
  ASSERT_EQ(r.ops.size(), 7u);
  EXPECT_TRUE(r.ops[0].flags & proto::kOpUnsupported);
  EXPECT_TRUE(r.ops[2].flags & proto::kOpUnsupported);
  // Device-wide actions go to the file's device, file 0's is device 0, and
  // a fork child's file 1 is its parent's.
  EXPECT_EQ(devices, (std::vector<uint8_t>{2, 0, 2}));
  EXPECT_EQ(r.ops[3].err, 0);
}

TEST_F(ServerTest, KilledChildIsReleasedAndItsUnfinishedOpIsNoHang) {
  // The child's sleep outlives the op bound, but the child is dead by then.
  const proto::ExecResult r = Exec(
      "mmap buf=0 pages=64 kind=anon prot=rw\n"
      "write buf=0 off=0 pages=64 seed=1\n"
      "fork wait=no {\n"
      "  write buf=0 off=0 pages=64 seed=2\n"
      "  sleep us=1000000\n"
      "}\n"
      "fork wait=no {\n"
      "  sleep us=250000\n"
      "}\n"
      "sleep us=50000\n"
      "kill_child child=0\n"
      "mrelease child=0\n"
      "mrelease child=1\n"
      "sleep us=300000\n"
      "sleep us=300000\n"
      "verify buf=0 off=0 pages=64 seed=1\n",
      500, 20000);
  EXPECT_EQ(r.status, Status::kOk) << r.message;
  ASSERT_EQ(r.ops.size(), 14u);
  EXPECT_GT(r.ops[2].ret, 0);  // the child's pid
  EXPECT_TRUE(r.ops[4].flags & proto::kOpStarted);
  EXPECT_FALSE(r.ops[4].flags & (proto::kOpDone | proto::kOpTimedOut));
  EXPECT_EQ(r.ops[8].err, 0);
  // Reaped, or its exit released its memory first.
  EXPECT_TRUE(r.ops[9].err == 0 || r.ops[9].err == ESRCH) << r.ops[9].err;
  // A child that is alive and not dying has no memory to release yet.
  EXPECT_EQ(r.ops[10].err, EINVAL);
  EXPECT_EQ(r.ops[13].err, 0);
  EXPECT_TRUE(r.mismatches.empty());
}

TEST_F(ServerTest, MadviseThatKeepsTheContent) {
  const proto::ExecResult r = Exec(
      "mmap buf=0 pages=512 kind=huge prot=rw\n"
      "write buf=0 off=0 pages=512 seed=9\n"
      "madvise buf=0 off=0 pages=512 advice=pageout\n"
      "madvise buf=0 off=0 pages=512 advice=willneed\n"
      "madvise buf=0 off=0 pages=256 advice=populate_read\n"
      "madvise buf=0 off=256 pages=256 advice=populate_write\n"
      "madvise buf=0 off=0 pages=512 advice=collapse\n"
      "verify buf=0 off=0 pages=512 seed=9\n");
  EXPECT_EQ(r.status, Status::kOk) << r.message;
  ASSERT_EQ(r.ops.size(), 8u);
  for (size_t i : {3, 4, 5}) EXPECT_EQ(r.ops[i].err, 0) << i;
  // MADV_COLLAPSE may find no huge page to be had; it must not change the data.
  EXPECT_TRUE(r.ops[6].err == 0 || r.ops[6].err == EAGAIN || r.ops[6].err == ENOMEM)
      << r.ops[6].err;
  EXPECT_EQ(r.ops[7].err, 0);
  EXPECT_EQ(r.ops[7].ret, 0);
  EXPECT_TRUE(r.mismatches.empty());
}

TEST_F(ServerTest, AHostThatNeverAnswersIsAHangAndItsLateReplyIsDropped) {
  StartExec("delay_acks us=1\nyield\n", 200, 20000);
  const proto::Frame f = Receive();
  ASSERT_EQ(f.type, MsgType::kDevice);
  proto::DeviceRequest req;
  ASSERT_TRUE(proto::Decode(f.payload, &req));
  const proto::ExecResult r = FinishExec();
  EXPECT_EQ(r.status, Status::kHung);
  EXPECT_EQ(r.detail, 0);
  Send(MsgType::kDeviceReply, proto::Encode(proto::DeviceReply{req.seq, 0, 0}));
  Send(MsgType::kPing, {5});
  const proto::Frame pong = Receive();
  EXPECT_EQ(pong.type, MsgType::kPong);
  EXPECT_EQ(pong.payload, (std::vector<uint8_t>{5}));
}

TEST_F(ServerTest, OpOverItsBoundIsAHang) {
  const proto::ExecResult r = Exec("yield\nsleep us=1000000\nyield\n", 100, 20000);
  EXPECT_EQ(r.status, Status::kHung);
  EXPECT_EQ(r.detail, 1);
  ASSERT_EQ(r.ops.size(), 3u);
  EXPECT_TRUE(r.ops[0].flags & proto::kOpDone);
  EXPECT_TRUE(r.ops[1].flags & proto::kOpTimedOut);
  EXPECT_FALSE(r.ops[1].flags & proto::kOpDone);
  EXPECT_EQ(r.ops[2].flags, 0);
  EXPECT_EQ(r.ops[2].code, static_cast<uint8_t>(OpCode::kYield));
  EXPECT_LT(r.duration_us, 900000u);
}

TEST_F(ServerTest, AHangInAThreadNamesThatOpNotTheJoin) {
  const proto::ExecResult r = Exec(
      "thread_create tid=1\n"
      "@1 sleep us=1000000\n"
      "thread_join tid=1\n",
      200, 20000);
  EXPECT_EQ(r.status, Status::kHung);
  EXPECT_EQ(r.detail, 1);
  ASSERT_EQ(r.ops.size(), 3u);
  EXPECT_EQ(r.ops[1].thread, 1);
  EXPECT_TRUE(r.ops[1].flags & proto::kOpTimedOut);
}

TEST_F(ServerTest, ProgramOverItsBoundIsAHang) {
  const proto::ExecResult r =
      Exec("sleep us=300000\nsleep us=300000\nsleep us=300000\n", 5000, 400);
  EXPECT_EQ(r.status, Status::kHung);
  EXPECT_EQ(r.detail, -1);
  EXPECT_TRUE(r.ops[0].flags & proto::kOpDone);
  EXPECT_FALSE(r.ops[1].flags & proto::kOpDone);
}

TEST_F(ServerTest, SurvivesAProgramThatCrashes) {
  ParseError error;
  const auto program = Parse("mmap buf=0 pages=1 kind=anon prot=rw\nsleep us=1000000\n", &error);
  proto::ExecRequest req{1, 0, 5000, 20000, 0, {}, Encode(*program)};
  Send(MsgType::kExec, proto::Encode(req));
  const pid_t pid = ProgramPid();
  ASSERT_GT(pid, 0);
  // The process forked ahead is the program's once it has mapped buffer 0.
  bool started = false;
  for (int tries = 0; tries < 500 && !started; tries++) {
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    for (std::string line; !started && std::getline(maps, line);)
      started = line.rfind("100000000000-", 0) == 0;
    if (!started) usleep(10000);
  }
  ASSERT_TRUE(started);
  kill(pid, SIGSEGV);
  proto::ExecResult r;
  ASSERT_TRUE(proto::Decode(Receive().payload, &r));
  EXPECT_EQ(r.status, Status::kCrashed);
  EXPECT_EQ(r.detail, SIGSEGV);
  // And runs the next one.
  id_ = 1;
  EXPECT_EQ(Exec("yield\n").status, Status::kOk);
}

// Each program gets a process of its own, forked ahead of it or, when the
// request asks, when it comes: a buffer the last program left mapped is not
// in the next one's way.
TEST_F(ServerTest, EachProgramRunsInAFreshProcess) {
  const std::string map = "mmap buf=0 pages=4 kind=anon prot=rw\n";
  for (int i = 0; i < 3; i++) {
    const proto::ExecResult r = Exec(map);
    EXPECT_EQ(r.status, Status::kOk);
    ASSERT_EQ(r.ops.size(), 1u);
    EXPECT_EQ(r.ops[0].err, 0) << "run " << i;
  }
  ParseError error;
  const auto program = Parse(map, &error);
  proto::ExecRequest req{++id_, proto::kExecFreshProcess, 5000, 20000, 0, {}, Encode(*program)};
  Send(MsgType::kExec, proto::Encode(req));
  const proto::ExecResult r = FinishExec();
  EXPECT_EQ(r.status, Status::kOk);
  ASSERT_EQ(r.ops.size(), 1u);
  EXPECT_EQ(r.ops[0].err, 0);
}

// The process forked ahead waits between programs; one that died meanwhile
// (the OOM killer takes it first) is replaced, and the program runs.
TEST_F(ServerTest, AProcessForkedAheadThatDiedIsReplaced) {
  EXPECT_EQ(Exec("yield\n").status, Status::kOk);
  const pid_t spare = ProgramPid();
  ASSERT_GT(spare, 0);
  ASSERT_EQ(kill(spare, SIGKILL), 0);
  const proto::ExecResult r = Exec("yield\n");
  EXPECT_EQ(r.status, Status::kOk) << r.message;
  EXPECT_EQ(r.ops.size(), 1u);
  const pid_t next = ProgramPid();
  EXPECT_GT(next, 0);
  EXPECT_NE(next, spare);
}

}  // namespace
}  // namespace svmfuzz
