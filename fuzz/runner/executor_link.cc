#include "runner/executor_link.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <random>

namespace svmfuzz {
namespace {

using proto::MsgType;

// How often a long wait asks whether the guest is still there.
constexpr int kAliveCheckMs = 500;

std::string Text(const std::vector<uint8_t>& bytes) {
  return std::string(bytes.begin(), bytes.end());
}

const char* MsgName(MsgType type) {
  switch (type) {
    case MsgType::kReady:
      return "READY";
    case MsgType::kPing:
      return "PING";
    case MsgType::kPong:
      return "PONG";
    case MsgType::kPowerOff:
      return "POWEROFF";
    case MsgType::kBye:
      return "BYE";
    case MsgType::kExec:
      return "EXEC";
    case MsgType::kResult:
      return "RESULT";
    case MsgType::kError:
      return "ERROR";
    case MsgType::kDevice:
      return "DEVICE";
    case MsgType::kDeviceReply:
      return "DEVICE_REPLY";
  }
  return "an unknown message";
}

// "sent ERROR (why) instead of PONG"
std::string Unexpected(const proto::Frame& got, MsgType want) {
  std::string why = std::string("sent ") + MsgName(got.type);
  if (got.type == MsgType::kError) why += " (" + Text(got.payload) + ")";
  return why + " instead of " + MsgName(want);
}

}  // namespace

ExecutorLink::ExecutorLink(int fd) : fd_(fd) {}

ExecutorLink::~ExecutorLink() { close(fd_); }

LinkStatus ExecutorLink::Fail(LinkStatus status, std::string why) {
  error_ = std::move(why);
  return status;
}

bool ExecutorLink::Send(MsgType type, const std::vector<uint8_t>& payload) {
  const std::vector<uint8_t> bytes = proto::EncodeFrame(type, payload);
  if (WriteAll(fd_, bytes.data(), bytes.size())) return true;
  error_ = "and closed the executor port";
  return false;
}

LinkStatus ExecutorLink::Receive(proto::Frame* out, Clock::time_point deadline) {
  for (;;) {
    switch (reader_.Next(out)) {
      case proto::FrameReader::Status::kFrame:
        return LinkStatus::kOk;
      case proto::FrameReader::Status::kBad:
        return Fail(LinkStatus::kProtocol, "and sent a bad frame header on the executor port");
      case proto::FrameReader::Status::kNeedMore:
        break;
    }
    if (!WaitReadable(fd_, deadline, alive_ ? kAliveCheckMs : -1)) {
      if (SecondsLeft(deadline) <= 0) return Fail(LinkStatus::kTimeout, "timed out");
      if (!alive_()) {
        return Fail(LinkStatus::kClosed, "while the host waited for the executor");
      }
      continue;
    }
    uint8_t buf[64 * 1024];
    const ssize_t n = read(fd_, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    // QEMU aborting drops the port with a reset rather than end of stream.
    if (n <= 0) return Fail(LinkStatus::kClosed, "and closed the executor port");
    reader_.Feed(buf, static_cast<size_t>(n));
  }
}

LinkStatus ExecutorLink::Expect(MsgType want, Clock::time_point deadline, proto::Frame* out) {
  const LinkStatus status = Receive(out, deadline);
  if (status != LinkStatus::kOk) return status;
  if (out->type == want) return LinkStatus::kOk;
  return Fail(LinkStatus::kProtocol, Unexpected(*out, want));
}

LinkStatus ExecutorLink::WaitReady(double timeout, proto::Ready* ready) {
  proto::Frame f;
  const LinkStatus status = Expect(MsgType::kReady, After(timeout), &f);
  if (status != LinkStatus::kOk) return status;
  if (!proto::Decode(f.payload, ready)) return Fail(LinkStatus::kProtocol, "sent a short READY");
  if (ready->version != proto::kVersion) {
    return Fail(LinkStatus::kProtocol, "speaks protocol " + std::to_string(ready->version) +
                                           ", the host " + std::to_string(proto::kVersion) +
                                           ": rebuild the initramfs");
  }
  return LinkStatus::kOk;
}

// A fresh token each time: a late PONG of an earlier PING is not this one's.
std::vector<uint8_t> PingToken() {
  thread_local std::mt19937_64 random{std::random_device{}()};
  const uint64_t token = random();
  std::vector<uint8_t> payload(8);
  for (int i = 0; i < 8; i++) payload[i] = static_cast<uint8_t>(token >> (8 * i));
  return payload;
}

LinkStatus ExecutorLink::Ping(double timeout, double* seconds) {
  const Clock::time_point start = Clock::now();
  const std::vector<uint8_t> payload = PingToken();
  if (!Send(MsgType::kPing, payload)) return LinkStatus::kClosed;
  proto::Frame f;
  const LinkStatus status = Expect(MsgType::kPong, After(timeout), &f);
  if (status != LinkStatus::kOk) return status;
  if (f.payload != payload) return Fail(LinkStatus::kProtocol, "echoed the wrong PING payload");
  *seconds = SecondsSince(start);
  return LinkStatus::kOk;
}

void ExecutorLink::Discard() {
  reader_ = proto::FrameReader();
  uint8_t buf[64 * 1024];
  for (pollfd p{fd_, POLLIN, 0}; poll(&p, 1, 0) > 0 && read(fd_, buf, sizeof(buf)) > 0;) {
  }
}

LinkStatus ExecutorLink::Resync(double timeout) {
  Discard();
  const std::vector<uint8_t> payload = PingToken();
  if (!Send(MsgType::kPing, payload)) return LinkStatus::kClosed;
  const Clock::time_point deadline = After(timeout);
  for (;;) {
    proto::Frame f;
    const LinkStatus status = Receive(&f, deadline);
    // The rest of a frame cut by the restore: the reader skips to the next.
    if (status == LinkStatus::kProtocol) continue;
    if (status != LinkStatus::kOk) return status;
    if (f.type == MsgType::kPong && f.payload == payload) return LinkStatus::kOk;
  }
}

LinkStatus ExecutorLink::Execute(const proto::ExecRequest& request, double timeout,
                                 DeviceHandler* devices, Executed* out) {
  if (!Send(MsgType::kExec, proto::Encode(request))) return LinkStatus::kClosed;
  const Clock::time_point deadline = After(timeout);
  proto::Frame f;
  for (;;) {
    // Wake up for the device's timed work too (delay_acks ends on time).
    Clock::time_point until = deadline;
    if (devices != nullptr) until = std::min(until, After(devices->Poll()));
    const LinkStatus status = Receive(&f, until);
    if (status == LinkStatus::kTimeout) {
      if (SecondsLeft(deadline) <= 0) return status;
      continue;
    }
    if (status != LinkStatus::kOk) return status;
    if (f.type != MsgType::kDevice) break;
    proto::DeviceRequest asked;
    if (!proto::Decode(f.payload, &asked)) {
      return Fail(LinkStatus::kProtocol,
                  "sent a DEVICE request of " + std::to_string(f.payload.size()) + " bytes");
    }
    const proto::DeviceReply reply =
        devices != nullptr ? devices->Perform(asked)
                           : proto::DeviceReply{asked.seq, proto::kDeviceUnavailable, 0};
    if (!Send(MsgType::kDeviceReply, proto::Encode(reply))) return LinkStatus::kClosed;
  }
  if (f.type != MsgType::kResult)
    return Fail(LinkStatus::kProtocol, Unexpected(f, MsgType::kResult));
  if (!proto::Decode(f.payload, &out->result)) {
    return Fail(LinkStatus::kProtocol, "sent a RESULT that does not decode");
  }
  if (out->result.id != request.id) {
    return Fail(LinkStatus::kProtocol, "sent the result of program " +
                                           std::to_string(out->result.id) + ", expected " +
                                           std::to_string(request.id));
  }
  out->payload = std::move(f.payload);
  return LinkStatus::kOk;
}

LinkStatus ExecutorLink::PowerOff(double timeout) {
  if (!Send(MsgType::kPowerOff, {})) return LinkStatus::kClosed;
  proto::Frame f;
  return Expect(MsgType::kBye, After(timeout), &f);
}

}  // namespace svmfuzz
