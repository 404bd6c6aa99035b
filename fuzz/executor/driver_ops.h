// Ops that go through the svmdev driver: /dev/svmdev0 ioctls of
// guest-driver/uapi/svmdev_uapi.h. Device actions (a device-initiated
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
#include "executor/protocol.h"
#include "program/program.h"

namespace svmfuzz {

// True if the guest has the driver's device file.
bool HaveDriver();

// One process's binding to the device: the driver binds an open file to the
// address space of the task that binds it, so each process of a program
// opens its own, on its first driver op.
class Device {
 public:
  // `knobs`: struct svmdev_knobs fields (ExecRequest.knobs) for the file once
  // it is bound; `on_open` learns the bound file's descriptor.
  Device(std::vector<uint64_t> knobs, std::function<void(int fd)> on_open);
  Device(const Device&) = delete;
  Device& operator=(const Device&) = delete;
  ~Device();

  // The bound file, or -errno.
  int Fd();
  // What the bind returned: the device context of this file's address space
  // and the N of /dev/svmdevN. Valid once Fd() succeeded.
  uint16_t ctx() const { return ctx_; }
  uint8_t index() const { return index_; }
  // Sets one of the driver's injection knobs of this file, keeping the others.
  int SetKnob(uint64_t fail_vram_alloc, uint64_t fail_copy);
  // The device's, driver's and this file's counters (layout in PROTOCOL.md)
  // after the driver's notifier balance check; empty if this process never
  // used the device.
  std::vector<uint64_t> CheckedCounters();

 private:
  // SVMDEV_IOC_KNOBS with knobs_; errno or 0.
  int ApplyKnobs(int fd);

  std::mutex mu_;
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

// True for driver ops, device actions and driver fault injection.
bool IsDriverOp(OpCode code);
// Whether any op of `ops` (fork bodies included) is a driver op.
bool UsesDriver(const std::vector<Op>& ops);
Outcome RunDriverOp(const Op& op, Buffers* buffers, Device* device, const HostCaller& host,
                    std::vector<PageMismatch>* bad);

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_DRIVER_OPS_H_
