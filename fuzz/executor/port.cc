#include "executor/port.h"

#include <unistd.h>

#include <cerrno>

namespace svmfuzz {

bool Port::Send(proto::MsgType type, const std::vector<uint8_t>& payload) {
  const std::vector<uint8_t> bytes = proto::EncodeFrame(type, payload);
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd_, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool Port::ReadOnce() {
  uint8_t buf[64 * 1024];
  for (;;) {
    const ssize_t n = read(fd_, buf, sizeof(buf));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    reader_.Feed(buf, static_cast<size_t>(n));
    return true;
  }
}

bool Port::Take(proto::Frame* out, Got* got) {
  if (!deferred_.empty()) {
    *got = deferred_.front().first;
    *out = std::move(deferred_.front().second);
    deferred_.pop_front();
    return true;
  }
  return TakeRead(out, got);
}

bool Port::TakeRead(proto::Frame* out, Got* got) {
  switch (reader_.Next(out)) {
    case proto::FrameReader::Status::kFrame:
      *got = Got::kFrame;
      return true;
    case proto::FrameReader::Status::kBad:
      *got = Got::kBad;
      return true;
    case proto::FrameReader::Status::kNeedMore:
      return false;
  }
  return false;
}

void Port::Defer(const proto::Frame& frame, Got got) { deferred_.emplace_back(got, frame); }

}  // namespace svmfuzz
