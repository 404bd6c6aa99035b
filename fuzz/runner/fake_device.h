// For tests: the device's end of a control channel, answering each request
// with whatever a script says (replies, events, garbage, nothing).
#ifndef SVMFUZZ_RUNNER_FAKE_DEVICE_H_
#define SVMFUZZ_RUNNER_FAKE_DEVICE_H_

#include <sys/socket.h>
#include <unistd.h>

#include <cstring>
#include <functional>
#include <thread>
#include <vector>

#include "runner/io.h"
#include "svmdev/svmdev_hw.h"

namespace svmfuzz::fake {

using Bytes = std::vector<uint8_t>;
// The bytes to send for one request; closing the channel instead: set *hang_up.
using Script = std::function<Bytes(const svmdev_ctl_hdr& hdr, const Bytes& payload, bool* hang_up)>;

inline Bytes Message(uint8_t type, uint32_t tag, const void* payload, size_t size) {
  const svmdev_ctl_hdr hdr{SVMDEV_CTL_MAGIC, type, static_cast<uint16_t>(size), tag};
  Bytes out(sizeof(hdr) + size);
  std::memcpy(out.data(), &hdr, sizeof(hdr));
  if (size) std::memcpy(out.data() + sizeof(hdr), payload, size);
  return out;
}

inline Bytes Reply(const svmdev_ctl_hdr& request, uint64_t value = 0, uint32_t status = 0,
                   uint32_t fault_id = 0) {
  const svmdev_ctl_result r{value, status, fault_id};
  return Message(request.type | SVMDEV_CTL_REPLY, request.tag, &r, sizeof(r));
}

inline Bytes Event(const svmdev_ctl_event& e) {
  return Message(SVMDEV_CTL_EVENT, 0, &e, sizeof(e));
}

inline Bytes Join(Bytes a, const Bytes& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

// Answers requests on `fd` until the host closes it or the script hangs up.
inline void Serve(int fd, const Script& script) {
  Bytes buf;
  uint8_t chunk[4096];
  for (;;) {
    const ssize_t n = read(fd, chunk, sizeof(chunk));
    if (n <= 0) return;
    buf.insert(buf.end(), chunk, chunk + n);
    svmdev_ctl_hdr hdr;
    while (buf.size() >= sizeof(hdr)) {
      std::memcpy(&hdr, buf.data(), sizeof(hdr));
      if (buf.size() < sizeof(hdr) + hdr.len) break;
      const Bytes payload(buf.begin() + sizeof(hdr), buf.begin() + sizeof(hdr) + hdr.len);
      buf.erase(buf.begin(), buf.begin() + sizeof(hdr) + hdr.len);
      bool hang_up = false;
      const Bytes out = script(hdr, payload, &hang_up);
      if (!out.empty() && !WriteAll(fd, out.data(), out.size())) return;
      if (hang_up) return;
    }
  }
}

// Serves one end of a socketpair in a thread; the host gets the other.
class Device {
 public:
  explicit Device(Script script) {
    int sv[2];
    socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv);
    host_fd_ = sv[0];
    fd_ = sv[1];
    thread_ = std::thread([this, script] {
      Serve(fd_, script);
      shutdown(fd_, SHUT_RDWR);
    });
  }
  ~Device() {
    shutdown(fd_, SHUT_RDWR);
    thread_.join();
    close(fd_);
  }
  // For the client, which takes ownership.
  int host_fd() const { return host_fd_; }

 private:
  int fd_;
  int host_fd_;
  std::thread thread_;
};

}  // namespace svmfuzz::fake

#endif  // SVMFUZZ_RUNNER_FAKE_DEVICE_H_
