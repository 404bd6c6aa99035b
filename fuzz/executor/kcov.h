// KCOV coverage of a program: one trace per thread of the program's
// processes, and one remote trace for the work the driver's workers do on
// the program's behalf (kcov_remote_start_common with the handle the binding
// task carries).
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

namespace svmfuzz {

class Kcov {
 public:
  Kcov() = default;
  Kcov(const Kcov&) = delete;
  Kcov& operator=(const Kcov&) = delete;
  ~Kcov();

  // `slots` thread traces and a remote one of `words` PCs each. False if
  // the kernel has no KCOV; the remote trace may still be missing.
  bool Open(size_t slots, size_t words);
  size_t slots() const { return traces_.size(); }
  bool has_remote() const { return remote_.fd >= 0; }

  // In the program (which does not map the traces: Reset() them before
  // forking it): trace the calling thread into `slot`; 0 or errno.
  int EnableThread(size_t slot);
  void DisableThread(size_t slot);
  // In the program's first task, before it starts threads: its threads and
  // forks inherit `handle` (KCOV_SUBSYSTEM_COMMON) and pass it to the driver.
  int EnableRemote(uint64_t handle);

  // In the executor, before each program.
  void Reset();
  // Distinct PCs of the first `used` thread traces and of the remote trace,
  // at most `cap` of each.
  void Collect(size_t used, size_t cap, std::vector<uint64_t>* cover,
               std::vector<uint64_t>* remote);
  // Gives up `slot` (or the remote trace) to a task that still holds it.
  void Replace(size_t slot);
  void ReplaceRemote();

 private:
  struct Trace {
    int fd = -1;
    uint64_t* area = nullptr;
  };
  bool OpenTrace(Trace* t);
  void CloseTrace(Trace* t);
  void CollectTrace(const Trace& t, size_t cap, std::vector<uint64_t>* out);
  // Empties the PC set, sized for `cap` PCs.
  void ClearSet(size_t cap);

  size_t words_ = 0;
  std::vector<Trace> traces_;
  Trace remote_;
  // An open-addressing set of PCs. A slot is in the set when its stamp is
  // the current generation, so emptying it is one increment, not a memset.
  size_t set_size_ = 0;  // a power of two
  uint64_t* set_pcs_ = nullptr;
  uint32_t* set_stamps_ = nullptr;
  uint32_t generation_ = 0;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_KCOV_H_
