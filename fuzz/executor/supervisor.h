// The executor's side of a run: a fresh process for each program, forked
// ahead of it while the host is busy with the last result, watches it (a deadline per op and per program), and turns however it ended
// into an ExecResult: ran to the end, crashed, hung, OOM-killed, or stuck in
// the kernel past SIGKILL. Whatever happens to the program, the executor
// lives on for the next one.
#ifndef SVMFUZZ_EXECUTOR_SUPERVISOR_H_
#define SVMFUZZ_EXECUTOR_SUPERVISOR_H_

#include <sys/types.h>

#include <cstdint>
#include <string>
#include <vector>

#include "executor/kcov.h"
#include "executor/port.h"
#include "executor/program_process.h"
#include "protocol/protocol.h"

namespace svmfuzz {

class Supervisor {
 public:
  // Per-thread traces: 16 is two processes' worth of threads.
  static constexpr size_t kKcovSlots = 16;
  static constexpr size_t kKcovWords = 256 * 1024;
  // How long a killed program may take to die before it counts as stuck.
  static constexpr uint64_t kKillGraceMs = 5000;
  // How long a process killed during a program (by the program, or the OOM
  // killer) may take to exit before it counts as stuck. Its op stops
  // counting against the op bound once it is dying: an exit that unmaps
  // device-mapped memory waits on the driver's fences, which have bounds of
  // their own. A process seen dying just before the program's deadline may
  // hold the result back by this much, which the host's wait for a result
  // (runner.h, result_slack) leaves room for.
  static constexpr uint64_t kKilledExitMs = 15000;
  // For a request that names no program deadline.
  static constexpr uint64_t kDefaultProgramTimeoutMs = 20000;
  // How long the watchdog watches the driver's counters of a program past
  // its deadline: long enough for a retry loop to go round many times even
  // under TCG.
  static constexpr uint64_t kSampleMs = 250;
  // A driver program is judged livelocked before its op bound when, for
  // kLivelockWindows windows of kSampleMs in a row, none of its ops
  // completed while the driver's retry loops went round at least
  // kLivelockRetries times a window. A livelocked loop under TCG retries
  // about a thousand times a window; a program making progress completes
  // an op within a second.
  static constexpr int kLivelockWindows = 4;
  static constexpr uint64_t kLivelockRetries = 100;

  Supervisor();
  Supervisor(const Supervisor&) = delete;
  Supervisor& operator=(const Supervisor&) = delete;
  ~Supervisor();

  uint32_t features() const { return features_; }
  // `port`: the host's, which the program reaches only through the relay
  // for its DEVICE requests.
  proto::ExecResult Execute(const proto::ExecRequest& request, Port* port);
  // Between programs, once the result is on its way: forks the next
  // program's process, unless the last request asked for a fresh one.
  void Prepare(Port* port);

 private:
  // Carries a program's DEVICE requests to the host and the replies back,
  // one at a time.
  struct Relay {
    Port* port;
    int program_fd;         // our end of the program's socket; -1 once it hung up
    uint32_t waiting = 0;   // seq of the request the host has not answered yet
    bool host_gone = false; // the port failed: requests get kDeviceUnavailable
  };

  // The next program's process, forked and set up before its program
  // comes: it waits on its relay socket for the program.
  struct Spare {
    pid_t pid = -1;
    int pidfd = -1;
    int relay_fd = -1;    // ours; the program's end is the spare's
    bool remote = false;  // it carries a remote coverage handle of its own
  };

  // The early livelock verdict's state of one run.
  struct Progress {
    uint64_t next_ns = 0;          // when to look again
    uint32_t done = 0;             // ops completed at the last look
    std::vector<uint64_t> counters;  // the driver's, at the last look
    std::vector<uint64_t> deltas;    // over the last window
    int stalled = 0;               // windows in a row with retries and no op completed
  };

  // Forks spare_ (its pid stays -1 if that fails, with `error` saying why).
  void MakeSpare(Port* port, std::string* error);
  void DropSpare();
  // In the spare: waits for its program and runs it; never returns.
  [[noreturn]] void RunSpare(int relay_fd);
  void Watch(pid_t pid, int pidfd, const proto::ExecRequest& request, uint64_t start_ns,
             size_t num_ops, Relay* relay, proto::ExecResult* result);
  // One look of the early livelock verdict: true once it holds.
  bool Livelocked(size_t num_ops, Progress* progress);
  // Waits until the program's process exits (true) or `timeout_ns` pass,
  // relaying DEVICE requests meanwhile.
  bool WaitServing(int pidfd, uint64_t timeout_ns, Relay* relay);
  void FromProgram(Relay* relay);
  void FromHost(Relay* relay);
  void Answer(Relay* relay, const proto::DeviceReply& reply);
  // The driver's counters through the program's device file (empty if it
  // has none); with `sample_ms`, how much each rose over that long.
  std::vector<uint64_t> ReadDriver(uint64_t sample_ms);
  void ReapOrphans();

  uint32_t features_ = 0;
  SharedRun* shared_ = nullptr;
  Kcov kcov_;
  bool have_kcov_ = false;
  uint64_t remote_handle_ = 0;
  uint64_t oom_kills_ = 0;  // the kernel's count when we last looked
  uint32_t device_seq_ = 0;
  Spare spare_;
  bool fresh_ = false;  // the last request's kExecFreshProcess
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_SUPERVISOR_H_
