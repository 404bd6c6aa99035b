// HostCaller against a stand-in supervisor: one request at a time across
// processes, and a caller killed while it holds the host-call mutex (as the
// OOM killer may) neither deadlocks the next caller nor hands it its reply.
#include "executor/driver_ops.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <thread>

#include "protocol/protocol.h"

namespace svmfuzz {
namespace {

class HostCallerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    void* shared = mmap(nullptr, sizeof(pthread_mutex_t), PROT_READ | PROT_WRITE,
                        MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    ASSERT_NE(shared, MAP_FAILED);
    mu_ = static_cast<pthread_mutex_t*>(shared);
    HostCaller::InitMutex(mu_);
    int sv[2];
    ASSERT_EQ(socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv), 0);
    supervisor_fd_ = sv[0];
    program_fd_ = sv[1];
    // Answers each request with its va.
    supervisor_ = std::thread([this] {
      std::vector<uint8_t> in(64);
      for (ssize_t n; (n = recv(supervisor_fd_, in.data(), in.size(), 0)) > 0;) {
        proto::DeviceRequest request;
        if (!proto::Decode(std::vector<uint8_t>(in.begin(), in.begin() + n), &request)) break;
        proto::DeviceReply reply;
        reply.value = request.va;
        const std::vector<uint8_t> out = proto::Encode(reply);
        send(supervisor_fd_, out.data(), out.size(), MSG_NOSIGNAL);
        answered_++;
      }
    });
  }
  void TearDown() override {
    shutdown(supervisor_fd_, SHUT_RDWR);
    supervisor_.join();
    close(supervisor_fd_);
    close(program_fd_);
    munmap(mu_, sizeof(pthread_mutex_t));
  }

  // The value a call for `va` got, from a process of its own; -1 when it
  // did not return within seconds (deadlocked).
  int64_t CallInAProcess(uint64_t va) {
    int pipe_fds[2];
    if (pipe(pipe_fds) != 0) return -2;
    const pid_t pid = fork();
    if (pid == 0) {
      proto::DeviceRequest request;
      request.va = va;
      const proto::DeviceReply reply = HostCaller(program_fd_, mu_).Call(request);
      const int64_t value = reply.status == 0 ? static_cast<int64_t>(reply.value) : -3;
      _exit(write(pipe_fds[1], &value, sizeof(value)) == sizeof(value) ? 0 : 1);
    }
    close(pipe_fds[1]);
    int64_t value = -1;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    int status = 0;
    while (waitpid(pid, &status, WNOHANG) == 0) {
      if (std::chrono::steady_clock::now() > deadline) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        close(pipe_fds[0]);
        return -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (read(pipe_fds[0], &value, sizeof(value)) != sizeof(value)) value = -2;
    close(pipe_fds[0]);
    return value;
  }

  // A process that takes the mutex and is SIGKILLed holding it.
  void DieHolding() {
    const pid_t pid = fork();
    if (pid == 0) {
      pthread_mutex_lock(mu_);
      kill(getpid(), SIGKILL);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  }

  pthread_mutex_t* mu_ = nullptr;
  int supervisor_fd_ = -1;
  int program_fd_ = -1;
  std::thread supervisor_;
  std::atomic<int> answered_{0};
};

TEST_F(HostCallerTest, EachCallGetsItsOwnReply) {
  EXPECT_EQ(CallInAProcess(7), 7);
  EXPECT_EQ(CallInAProcess(8), 8);
}

TEST_F(HostCallerTest, AHolderKilledBeforeItAskedDoesNotDeadlockTheNextCaller) {
  DieHolding();
  EXPECT_EQ(CallInAProcess(2), 2);
  EXPECT_EQ(CallInAProcess(3), 3);
}

TEST_F(HostCallerTest, AHolderKilledBeforeItsReplyCameDoesNotHandItOn) {
  // Killed once the supervisor has queued the reply it will never read.
  const pid_t pid = fork();
  if (pid == 0) {
    pthread_mutex_lock(mu_);
    proto::DeviceRequest request;
    request.va = 1;
    const std::vector<uint8_t> out = proto::Encode(request);
    send(program_fd_, out.data(), out.size(), MSG_NOSIGNAL);
    pause();
  }
  while (answered_ == 0) std::this_thread::sleep_for(std::chrono::milliseconds(1));
  kill(pid, SIGKILL);
  int status = 0;
  ASSERT_EQ(waitpid(pid, &status, 0), pid);
  EXPECT_EQ(CallInAProcess(2), 2);
  EXPECT_EQ(CallInAProcess(3), 3);
}

}  // namespace
}  // namespace svmfuzz
