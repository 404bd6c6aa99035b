#include "executor/fault_injection.h"

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <string>

#include "protocol/protocol.h"

namespace svmfuzz::faults {
namespace {

constexpr const char* kFailslab = "/sys/kernel/debug/failslab/";
constexpr const char* kFailPageAlloc = "/sys/kernel/debug/fail_page_alloc/";

int WriteFile(const std::string& path, const std::string& value) {
  const int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) return errno;
  const ssize_t n = write(fd, value.data(), value.size());
  const int err = n == static_cast<ssize_t>(value.size()) ? 0 : (n < 0 ? errno : EIO);
  close(fd);
  return err;
}

bool Exists(const std::string& path) { return access(path.c_str(), F_OK) == 0; }

int Set(const std::string& dir, uint64_t percent, uint64_t times) {
  if (int err = WriteFile(dir + "times", std::to_string(times))) return err;
  return WriteFile(dir + "probability", std::to_string(percent));
}

}  // namespace

uint32_t Probe() {
  uint32_t features = 0;
  if (Exists("/proc/thread-self/fail-nth")) features |= proto::kFeatureFailNth;
  if (Exists(kFailslab)) features |= proto::kFeatureFailslab;
  if (Exists(kFailPageAlloc)) features |= proto::kFeatureFailPageAlloc;
  return features;
}

void PrepareGuest() {
  for (const std::string dir : {kFailslab, kFailPageAlloc}) {
    if (!Exists(dir)) continue;
    WriteFile(dir + "probability", "0");
    WriteFile(dir + "interval", "1");
    WriteFile(dir + "times", "0");
    // One line per injected failure keeps the console (and TCG) fast.
    WriteFile(dir + "verbose", "0");
    WriteFile(dir + "task-filter", "Y");
    // Sleeping allocations are where the interesting error paths are.
    WriteFile(dir + "ignore-gfp-wait", "N");
  }
  if (Exists(kFailPageAlloc)) {
    WriteFile(std::string(kFailPageAlloc) + "ignore-gfp-highmem", "N");
    WriteFile(std::string(kFailPageAlloc) + "min-order", "0");
  }
}

void MarkProcess() { WriteFile("/proc/self/make-it-fail", "1"); }

int SetFailslab(uint64_t percent, uint64_t times) { return Set(kFailslab, percent, times); }

int SetFailPageAlloc(uint64_t percent, uint64_t times) {
  return Set(kFailPageAlloc, percent, times);
}

void Disarm() {
  for (const std::string dir : {kFailslab, kFailPageAlloc}) {
    if (Exists(dir)) Set(dir, 0, 0);
  }
}

FailNth::~FailNth() {
  if (fd_ >= 0) close(fd_);
}

bool FailNth::Available() {
  if (fd_ == -2) fd_ = open("/proc/thread-self/fail-nth", O_RDWR | O_CLOEXEC);
  return fd_ >= 0;
}

void FailNth::Arm(uint64_t nth) {
  const std::string v = std::to_string(nth);
  pwrite(fd_, v.data(), v.size(), 0);
}

bool FailNth::Disarm() {
  char buf[32] = {};
  const ssize_t n = pread(fd_, buf, sizeof(buf) - 1, 0);
  if (n > 0 && std::atoi(buf) == 0) return true;
  pwrite(fd_, "0", 1, 0);
  return false;
}

}  // namespace svmfuzz::faults
