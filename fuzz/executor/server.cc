#include "executor/server.h"

#include <unistd.h>

#include <cerrno>

#include "executor/protocol.h"

namespace svmfuzz {
namespace {

bool WriteAll(int fd, const std::vector<uint8_t>& bytes) {
  size_t done = 0;
  while (done < bytes.size()) {
    const ssize_t n = write(fd, bytes.data() + done, bytes.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

bool Send(int fd, proto::MsgType type, const std::vector<uint8_t>& payload) {
  return WriteAll(fd, proto::EncodeFrame(type, payload));
}

bool SendError(int fd, const std::string& message) {
  return Send(fd, proto::MsgType::kError, std::vector<uint8_t>(message.begin(), message.end()));
}

}  // namespace

bool Serve(int fd, Supervisor* supervisor, const std::string& kernel, bool wait_for_host) {
  proto::Ready ready;
  ready.features = supervisor->features();
  ready.kernel = kernel;
  if (!Send(fd, proto::MsgType::kReady, proto::Encode(ready))) return false;
  proto::FrameReader reader;
  std::vector<uint8_t> buf(64 * 1024);
  for (;;) {
    const ssize_t n = read(fd, buf.data(), buf.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return false;
    if (n == 0) {
      if (!wait_for_host) return false;
      usleep(100 * 1000);
      continue;
    }
    reader.Feed(buf.data(), static_cast<size_t>(n));
    proto::Frame frame;
    for (;;) {
      const proto::FrameReader::Status st = reader.Next(&frame);
      if (st == proto::FrameReader::Status::kNeedMore) break;
      bool ok = true;
      if (st == proto::FrameReader::Status::kBad) {
        ok = SendError(fd, "bad frame header");
      } else if (frame.type == proto::MsgType::kPing) {
        ok = Send(fd, proto::MsgType::kPong, frame.payload);
      } else if (frame.type == proto::MsgType::kPowerOff) {
        Send(fd, proto::MsgType::kBye, {});
        return true;
      } else if (frame.type == proto::MsgType::kExec) {
        proto::ExecRequest request;
        if (!proto::Decode(frame.payload, &request)) {
          ok = SendError(fd, "bad EXEC request");
        } else {
          ok = Send(fd, proto::MsgType::kResult,
                    proto::Encode(supervisor->Execute(request, fd)));
        }
      } else {
        ok = SendError(fd, "unknown request type " +
                               std::to_string(static_cast<uint32_t>(frame.type)));
      }
      if (!ok) return false;
    }
  }
}

}  // namespace svmfuzz
