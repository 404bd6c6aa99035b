// The program's side of a run: the forked process that runs a program's ops,
// the threads its ops name, and the processes its forks create. They report
// into a SharedRun the executor mapped before forking, so results written up
// to a crash, hang or OOM kill are still there for the executor to read.
#ifndef SVMFUZZ_EXECUTOR_PROGRAM_PROCESS_H_
#define SVMFUZZ_EXECUTOR_PROGRAM_PROCESS_H_

#include <pthread.h>

#include <atomic>
#include <cstdint>
#include <vector>

#include "executor/kcov.h"
#include "protocol/protocol.h"
#include "program/program.h"

namespace svmfuzz {

struct SharedRun {
  static constexpr size_t kMaxWatched = 64;  // threads of all processes of a program
  static constexpr size_t kMaxMismatches = 64;
  static constexpr size_t kMaxCounters = 64;

  // The op a thread runs and since when, for the per-op watchdog.
  struct Watch {
    std::atomic<int32_t> op;  // -1: between ops
    std::atomic<uint64_t> start_ns;
    // The thread's process: one that is gone (a child the program killed)
    // holds no op, whatever `op` says.
    std::atomic<int32_t> pid;
  };

  proto::OpResult ops[kMaxOps];
  std::atomic<uint32_t> num_mismatches;
  proto::Mismatch mismatches[kMaxMismatches];
  // Set by the program's process once it has its program.
  std::atomic<uint32_t> started;
  std::atomic<uint32_t> next_watch;
  Watch watch[kMaxWatched];
  std::atomic<uint32_t> next_kcov;   // kcov slots handed out
  std::atomic<uint64_t> kcov_busy;   // slots a task of an earlier program still held
  std::atomic<uint32_t> faults_armed;
  uint32_t num_counters;  // the driver's counters, when the program used it
  uint64_t counters[kMaxCounters];
  // A device file of the program, for the watchdog to read the driver's
  // counters through while the program is stuck in the driver; pid 0: none.
  std::atomic<int32_t> device_pid;
  std::atomic<int32_t> device_fd;
  // Held around each request to the host (HostCaller), across processes.
  pthread_mutex_t host_mu;

  void Reset(size_t num_ops);
};

struct RunConfig {
  Kcov* kcov = nullptr;  // null: no coverage
  uintptr_t buffer_base = 0;
  std::vector<uint64_t> knobs;  // ExecRequest.knobs, for every device file
  int host_fd = -1;             // the program's end of the supervisor's relay to the host
};

uint64_t MonotonicNs();

// Runs `program` in the calling (freshly forked) process; returns when it and
// its threads and children are done.
void RunProgram(const Program& program, SharedRun* shared, const RunConfig& config);

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_PROGRAM_PROCESS_H_
