#include "executor/server.h"

#include <unistd.h>

#include "executor/port.h"
#include "protocol/protocol.h"

namespace svmfuzz {
namespace {

bool SendError(Port* port, const std::string& message) {
  return port->Send(proto::MsgType::kError,
                    std::vector<uint8_t>(message.begin(), message.end()));
}

}  // namespace

bool Serve(int fd, Supervisor* supervisor, const std::string& kernel, bool wait_for_host) {
  Port port(fd);
  proto::Ready ready;
  ready.features = supervisor->features();
  ready.kernel = kernel;
  if (!port.Send(proto::MsgType::kReady, proto::Encode(ready))) return false;
  supervisor->Prepare(&port);  // the first program's process
  for (;;) {
    proto::Frame frame;
    Port::Got got;
    if (!port.Take(&frame, &got)) {
      if (port.ReadOnce()) continue;
      if (!wait_for_host) return false;
      usleep(100 * 1000);
      continue;
    }
    bool ok = true;
    if (got == Port::Got::kBad) {
      ok = SendError(&port, "bad frame header");
    } else if (frame.type == proto::MsgType::kPing) {
      ok = port.Send(proto::MsgType::kPong, frame.payload);
    } else if (frame.type == proto::MsgType::kPowerOff) {
      port.Send(proto::MsgType::kBye, {});
      return true;
    } else if (frame.type == proto::MsgType::kExec) {
      proto::ExecRequest request;
      if (!proto::Decode(frame.payload, &request)) {
        ok = SendError(&port, "bad EXEC request");
      } else {
        ok = port.Send(proto::MsgType::kResult,
                       proto::Encode(supervisor->Execute(request, &port)));
        // The next program's process is forked while the host reads this one's result.
        if (ok) supervisor->Prepare(&port);
      }
    } else if (frame.type == proto::MsgType::kDeviceReply) {
      // The answer to a program the watchdog ended before the host replied.
    } else {
      ok = SendError(&port, "unknown request type " +
                                std::to_string(static_cast<uint32_t>(frame.type)));
    }
    if (!ok) return false;
  }
}

}  // namespace svmfuzz
