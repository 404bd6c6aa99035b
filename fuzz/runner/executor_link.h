// The host's end of the executor's port (docs/executor-protocol.md): frames
// out, frames in with a deadline, and the requests built on them. While a
// program runs, its DEVICE requests go to a DeviceHandler and its replies
// back to the executor.
#ifndef SVMFUZZ_RUNNER_EXECUTOR_LINK_H_
#define SVMFUZZ_RUNNER_EXECUTOR_LINK_H_

#include <functional>
#include <string>
#include <vector>

#include "protocol/protocol.h"
#include "runner/io.h"

namespace svmfuzz {

// How a call to the executor ended.
enum class LinkStatus {
  kOk,
  kTimeout,   // nothing (or not the answer) in time
  kClosed,    // the port closed or reset, or the peer is gone
  kProtocol,  // the executor sent something other than the answer, or garbage
};

// Performs a running program's device actions.
class DeviceHandler {
 public:
  virtual ~DeviceHandler() = default;
  virtual proto::DeviceReply Perform(const proto::DeviceRequest& request) = 0;
  // Does the timed work that is due; seconds until more is.
  virtual double Poll() = 0;
};

// A RESULT, decoded and as it came (for a decoder elsewhere, e.g. Python).
struct Executed {
  proto::ExecResult result;
  std::vector<uint8_t> payload;
};

class ExecutorLink {
 public:
  explicit ExecutorLink(int fd);  // takes the connected stream
  ~ExecutorLink();
  ExecutorLink(const ExecutorLink&) = delete;
  ExecutorLink& operator=(const ExecutorLink&) = delete;

  // Asked every half second of a wait: false ends the wait as kClosed (the
  // guest is gone although the port may never say so).
  void set_alive(std::function<bool()> alive) { alive_ = std::move(alive); }
  // Why the last call did not return kOk: what the peer did, in words.
  const std::string& error() const { return error_; }

  bool Send(proto::MsgType type, const std::vector<uint8_t>& payload);
  LinkStatus Receive(proto::Frame* out, Clock::time_point deadline);

  // The executor's READY, refused unless it speaks our protocol version.
  LinkStatus WaitReady(double timeout, proto::Ready* ready);
  LinkStatus Ping(double timeout, double* seconds);
  // Drops whatever came and was not read yet.
  void Discard();
  // A PING whose PONG may come behind frames of a guest restored from a
  // snapshot: those are dropped.
  LinkStatus Resync(double timeout);
  // Runs one program. Without a handler its DEVICE requests are answered
  // kDeviceUnavailable.
  LinkStatus Execute(const proto::ExecRequest& request, double timeout, DeviceHandler* devices,
                     Executed* out);
  // Asks the executor to power the guest off; kOk once it said BYE.
  LinkStatus PowerOff(double timeout);

 private:
  LinkStatus Fail(LinkStatus status, std::string why);
  LinkStatus Expect(proto::MsgType want, Clock::time_point deadline, proto::Frame* out);

  int fd_;
  proto::FrameReader reader_;
  std::function<bool()> alive_;
  std::string error_;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_RUNNER_EXECUTOR_LINK_H_
