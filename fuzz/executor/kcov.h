// KCOV coverage of a program: one trace per thread of the program's
// processes, and one remote trace for the work the driver's workers do on
// the program's behalf (kcov_remote_start_common with the handle the binding
// task carries). The executor holds the remote trace itself: its forks
// inherit the handle, so every task of the program is free to trace its own
// syscalls.
//
// The executor opens and maps every trace before forking the program, so the
// traces live in memory the executor keeps: coverage survives a program that
// crashes, hangs or is OOM-killed. A trace a dead-but-unreaped (stuck) task
// still holds is replaced, not reused.
#ifndef SVMFUZZ_EXECUTOR_KCOV_H_
#define SVMFUZZ_EXECUTOR_KCOV_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "executor/pc_set.h"

namespace svmfuzz {

class Kcov {
 public:
  Kcov() = default;
  Kcov(const Kcov&) = delete;
  Kcov& operator=(const Kcov&) = delete;
  ~Kcov();

  // `slots` thread traces and a remote one of `words` PCs each. False if
  // the kernel has no KCOV; the remote trace is missing if the kernel
  // cannot trace remotely.
  bool Open(size_t slots, size_t words);
  size_t slots() const { return traces_.size(); }
  bool has_remote() const { return remote_.fd >= 0; }

  // In the program (which does not map the traces: Reset() them before
  // forking it): trace the calling thread into `slot`; 0 or errno.
  int EnableThread(size_t slot);
  void DisableThread(size_t slot);
  // In the executor, around a program: tasks forked meanwhile inherit
  // `handle` (KCOV_SUBSYSTEM_COMMON) and pass it to the driver when they
  // bind a device; 0 or errno. Disabling drops the handle, so a worker still
  // busy for this program adds nothing to the next one's trace.
  int EnableRemote(uint64_t handle);
  void DisableRemote();

  // In the executor, before each program.
  void Reset();
  // Distinct PCs of the first `used` thread traces and, unless `remote` is
  // null, of the remote trace; at most `cap` of each.
  void Collect(size_t used, size_t cap, std::vector<uint64_t>* cover,
               std::vector<uint64_t>* remote);
  // Gives up `slot` to a task that still holds it.
  void Replace(size_t slot);

 private:
  struct Trace {
    int fd = -1;
    uint64_t* area = nullptr;
  };
  bool OpenTrace(Trace* t);
  void CloseTrace(Trace* t);
  void CollectTrace(const Trace& t, size_t cap, std::vector<uint64_t>* out);

  size_t words_ = 0;
  std::vector<Trace> traces_;
  Trace remote_;
  PcSet seen_;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_KCOV_H_
