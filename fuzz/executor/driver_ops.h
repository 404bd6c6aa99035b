// Ops that go through the svmdev driver: /dev/svmdevN ioctls of
// include/svmdev/svmdev_uapi.h. Device actions (a device-initiated
// access, fault storms, delayed or dropped acks, DMA failure) are the
// device's own doing: the host performs them through the device's control
// channel, asked with a DEVICE message.
#ifndef SVMFUZZ_EXECUTOR_DRIVER_OPS_H_
#define SVMFUZZ_EXECUTOR_DRIVER_OPS_H_

#include <pthread.h>

#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "executor/buffers.h"
#include "protocol/protocol.h"
#include "program/program.h"

namespace svmfuzz {

// True if the guest has the driver's device file.
bool HaveDriver();

// One driver file of a process (Op::file): the driver binds an open file to
// the address space of the task that binds it, so each process of a program
// binds its own, on open_dev or on its first driver op.
class Device {
 public:
  // Which /dev/svmdevN the file is and the personality it binds with.
  struct Config {
    bool declared = false;  // else ops on the file fail with EBADF until open_dev
    uint64_t dev = 0;
    uint64_t personality = 0;  // SVMDEV_PERS_*
  };
  // `knobs`: struct svmdev_knobs fields (ExecRequest.knobs) for the file once
  // it is bound; `on_open` learns the bound file's descriptor.
  Device(Config config, std::vector<uint64_t> knobs, std::function<void(int fd)> on_open);
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device();

  // The bound file, or -errno; binds it first if it is declared.
  int Fd();
  // open_dev: declares the file with `config` and binds it now; -EBUSY if it
  // is bound already, else as Fd().
  int Open(const Config& config);
  // What a fork child's file of the same id starts from.
  Config config();
  // The N of /dev/svmdevN the file is or will be, for device-wide actions.
  uint8_t dev();
  // What the bind returned: the device context of this file's address space
  // and the N of /dev/svmdevN. Valid once Fd() succeeded.
  uint16_t ctx() const { return ctx_; }
  uint8_t index() const { return index_; }
  // Sets one of the driver's injection knobs of this file, keeping the others.
  int SetKnob(uint64_t fail_vram_alloc, uint64_t fail_copy);
  // The device's, driver's and this file's counters (layout in docs/executor-protocol.md)
  // after the driver's notifier balance check; empty if this process never
  // used the device.
  std::vector<uint64_t> CheckedCounters();

 private:
  // SVMDEV_IOC_KNOBS with knobs_; errno or 0.
  int ApplyKnobs(int fd);
  int BindLocked();

  std::mutex mu_;
  Config config_;
  int fd_ = -1;
  uint16_t ctx_ = 0;
  uint8_t index_ = 0;
  std::vector<uint64_t> knobs_;  // svmdev_knobs fields in order
  std::function<void(int)> on_open_;
};

// A program's way to the host: requests go over `fd` to the supervisor,
// which relays them on the port. One request at a time across the
// program's threads and processes (`mu` is process-shared), so each reply
// reaches the one who asked. `mu` is robust: a process killed while it holds
// it (the OOM killer's choice) passes it on to the next caller rather than
// deadlocking the rest of the program.
class HostCaller {
 public:
  // Makes `mu` the process-shared robust mutex Call expects.
  static void InitMutex(pthread_mutex_t* mu);
  HostCaller(int fd, pthread_mutex_t* mu) : fd_(fd), mu_(mu) {}
  // The host's reply; status proto::kDeviceUnavailable if there is none.
  proto::DeviceReply Call(const proto::DeviceRequest& request) const;

 private:
  int fd_;
  pthread_mutex_t* mu_;
};

// The driver counters (drv[], SVMDEV_CTR_*) through a device file, or empty.
std::vector<uint64_t> DriverCounters(int fd);

// True for driver ops, device actions, driver fault injection and open_dev.
bool IsDriverOp(OpCode code);
// Whether any op of `ops` (fork bodies included) is a driver op.
bool UsesDriver(const std::vector<Op>& ops);
OpOutcome RunDriverOp(const Op& op, Buffers* buffers, Device* device, const HostCaller& host,
                    std::vector<PageMismatch>* bad);

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_DRIVER_OPS_H_
