// svmfuzz-executor: runs in the guest, talks to the host over a virtio-serial
// port. This first version announces readiness and answers the host's
// liveness and power requests; programs arrive in a later protocol version.
//
// Protocol: lines of text. The executor sends "READY <version>" once, then
// answers "PING" with "PONG" and "POWEROFF" with "BYE" before powering off.
#include <fcntl.h>
#include <sys/reboot.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <string>

#include "guest_port.h"

namespace {

constexpr const char* kProtocolVersion = "1";

bool WriteAll(int fd, const std::string& s) {
  size_t done = 0;
  while (done < s.size()) {
    ssize_t n = write(fd, s.data() + done, s.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Reads one line; false at end of stream or on error.
bool ReadLine(int fd, std::string* line) {
  line->clear();
  char c;
  for (;;) {
    ssize_t n = read(fd, &c, 1);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (c == '\n') return true;
    if (line->size() < 4096) line->push_back(c);
  }
}

}  // namespace

int main() {
  const std::string path = svmfuzz::FindVirtioPort("/sys", svmfuzz::kExecutorPortName);
  if (path.empty()) {
    std::fprintf(stderr, "svmfuzz-executor: no virtio port named %s\n", svmfuzz::kExecutorPortName);
    return 1;
  }
  int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "svmfuzz-executor: open %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  if (!WriteAll(fd, std::string("READY ") + kProtocolVersion + "\n")) {
    std::fprintf(stderr, "svmfuzz-executor: cannot write to %s\n", path.c_str());
    return 1;
  }
  std::printf("svmfuzz-executor: ready on %s\n", path.c_str());
  std::fflush(stdout);

  std::string line;
  for (;;) {
    // A port whose host side is not connected reads EOF: wait for the host.
    if (!ReadLine(fd, &line)) {
      usleep(100 * 1000);
      continue;
    }
    if (line == "PING") {
      WriteAll(fd, "PONG\n");
    } else if (line == "POWEROFF") {
      WriteAll(fd, "BYE\n");
      sync();
      reboot(RB_POWER_OFF);
    } else {
      WriteAll(fd, "ERROR unknown request\n");
    }
  }
}
