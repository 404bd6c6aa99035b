// The executor's end of the host port: frames out, frames in. Requests are
// read between programs; DEVICE replies are read while a program runs, and
// whatever else arrives then waits for the request loop.
#ifndef SVMFUZZ_EXECUTOR_PORT_H_
#define SVMFUZZ_EXECUTOR_PORT_H_

#include <deque>
#include <vector>

#include "protocol/protocol.h"

namespace svmfuzz {

class Port {
 public:
  enum class Got { kFrame, kBad };

  explicit Port(int fd) : fd_(fd) {}
  Port(const Port&) = delete;
  Port& operator=(const Port&) = delete;

  int fd() const { return fd_; }
  bool Send(proto::MsgType type, const std::vector<uint8_t>& payload);
  // Reads once (the caller knows the port is readable, or may block); false
  // at end of stream (no host connected, for a virtio port) or on an error.
  bool ReadOnce();
  // The next frame (a deferred one first), or a bad header; false if none
  // is complete.
  bool Take(proto::Frame* out, Got* got);
  // The same, passing over deferred frames.
  bool TakeRead(proto::Frame* out, Got* got);
  // Keeps a frame (or a bad header) for a later Take.
  void Defer(const proto::Frame& frame, Got got);

 private:
  int fd_;
  proto::FrameReader reader_;
  std::deque<std::pair<Got, proto::Frame>> deferred_;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_PORT_H_
