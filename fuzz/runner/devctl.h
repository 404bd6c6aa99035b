// Client of svmdev's host control channel (docs/device-spec.md, "Host control
// channel"): 8-byte headers (magic, type, length, tag), replies matched by
// tag, events (SVMDEV_CTL_EVENT) queued whenever they arrive. Layouts are the
// spec header's. Whatever the device sends, a call fails with a reason rather
// than misreading it.
#ifndef SVMFUZZ_RUNNER_DEVCTL_H_
#define SVMFUZZ_RUNNER_DEVCTL_H_

#include <cstdint>
#include <deque>
#include <string>
#include <vector>

#include "runner/io.h"
#include "svmdev/svmdev_hw.h"

namespace svmfuzz {

using CtlResult = svmdev_ctl_result;
using CtlEvent = svmdev_ctl_event;
using CtlTlbEntry = svmdev_ctl_tlb_entry;

class DevCtl {
 public:
  // Takes a connected stream; `timeout`: seconds a request waits for its reply.
  explicit DevCtl(int fd, double timeout = 10);
  ~DevCtl();
  DevCtl(const DevCtl&) = delete;
  DevCtl& operator=(const DevCtl&) = delete;

  // Each returns false with error() saying why: no reply in time, the
  // channel closed, an ERROR reply, a reply of the wrong type or size.
  bool Ping(uint32_t* version, uint32_t* status);
  bool Access(uint16_t ctx, uint64_t va, uint8_t kind, uint8_t size, uint64_t value, CtlResult* out,
              uint64_t compare = 0, uint8_t aop = SVMDEV_AOP_ADD);
  bool FaultStorm(uint16_t ctx, uint64_t va, uint64_t stride, uint16_t count, uint8_t kind,
                  CtlResult* out);
  bool InvalMode(uint32_t mode, uint32_t count, uint32_t commands, CtlResult* out);
  bool FailDma(uint32_t skip, uint32_t count, CtlResult* out);
  bool Counters(std::vector<uint64_t>* out);
  bool Tlb(std::vector<CtlTlbEntry>* out);
  bool SetEvents(uint32_t mask, CtlResult* out);
  bool Release(CtlResult* out);

  // The next event, queued or arriving within `timeout` seconds.
  bool NextEvent(double timeout, CtlEvent* out);
  // Queues the events that arrive within `timeout` seconds; false only on
  // an error, not when none came.
  bool PollEvents(double timeout);
  std::deque<CtlEvent>& events() { return events_; }

  // The tag of the last request: an EVT_ACCESS_DONE about it carries it.
  uint32_t tag() const { return tag_; }
  const std::string& error() const { return error_; }
  // Ends the connection; every later call fails.
  void Close();

 private:
  // Sends a request and waits for its reply's payload.
  bool Request(uint8_t type, const void* payload, size_t size, std::vector<uint8_t>* reply);
  enum class Got { kMessage, kTimeout, kFailed };
  Got NextMessage(Clock::time_point deadline, svmdev_ctl_hdr* hdr, std::vector<uint8_t>* payload);
  bool Fail(std::string why);
  bool QueueEvent(const svmdev_ctl_hdr& hdr, const std::vector<uint8_t>& body);
  bool ResultRequest(uint8_t type, const void* payload, size_t size, CtlResult* out);

  int fd_;
  double timeout_;
  uint32_t tag_ = 0;
  std::vector<uint8_t> buf_;
  std::deque<CtlEvent> events_;
  std::string error_;
  bool broken_ = false;  // garbage or a closed stream: nothing more can be trusted
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_RUNNER_DEVCTL_H_
