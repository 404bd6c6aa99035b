// svmfuzz-executor: runs in the guest and executes programs for the host,
// which talks to it over the virtio-serial port "svmfuzz.exec" (the protocol of
// docs/executor-protocol.md). It powers the guest off when the host asks.
//
//   svmfuzz-executor            the guest's executor
//   svmfuzz-executor --fd N     serve on inherited descriptor N (a socket)
//                               instead: the host-side tests run the real
//                               executor this way; no guest-wide settings,
//                               and power-off just exits.
#include <fcntl.h>
#include <sys/reboot.h>
#include <sys/utsname.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>

#include "executor/fault_injection.h"
#include "executor/guest_port.h"
#include "executor/server.h"
#include "executor/supervisor.h"

namespace {

void WriteFile(const char* path, const char* value) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)!write(fd, value, std::strlen(value));
  close(fd);
}

// Guest-wide settings; the executor owns the guest.
void PrepareGuest() {
  // Never the OOM killer's choice: programs are.
  WriteFile("/proc/self/oom_score_adj", "-1000");
  // An OOM kill prints one report, not every task in the guest.
  WriteFile("/proc/sys/vm/oom_dump_tasks", "0");
  svmfuzz::faults::PrepareGuest();
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--fd") {
    svmfuzz::Supervisor supervisor;
    return svmfuzz::Serve(std::atoi(argv[2]), &supervisor, "host", false) ? 0 : 1;
  }
  if (argc != 1) {
    std::fprintf(stderr, "usage: svmfuzz-executor [--fd N]\n");
    return 2;
  }
  const std::string path = svmfuzz::FindVirtioPort("/sys", svmfuzz::proto::kExecutorPortName);
  if (path.empty()) {
    std::fprintf(stderr, "svmfuzz-executor: no virtio port named %s\n", svmfuzz::proto::kExecutorPortName);
    return 1;
  }
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) {
    std::fprintf(stderr, "svmfuzz-executor: open %s: %s\n", path.c_str(), std::strerror(errno));
    return 1;
  }
  PrepareGuest();
  svmfuzz::Supervisor supervisor;
  utsname uts{};
  uname(&uts);
  std::printf("svmfuzz-executor: ready on %s, features 0x%x\n", path.c_str(),
              supervisor.features());
  std::fflush(stdout);
  if (!svmfuzz::Serve(fd, &supervisor, uts.release, true)) {
    std::fprintf(stderr, "svmfuzz-executor: port %s failed: %s\n", path.c_str(),
                 std::strerror(errno));
    return 1;
  }
  sync();
  reboot(RB_POWER_OFF);
  return 0;
}
