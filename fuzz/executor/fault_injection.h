// Kernel fault injection for programs: fail the nth allocation of one op
// (/proc/thread-self/fail-nth), and failslab / fail_page_alloc with a
// probability. Only the program's processes are marked to fail
// (make-it-fail with task-filter), never the executor.
#ifndef SVMFUZZ_EXECUTOR_FAULT_INJECTION_H_
#define SVMFUZZ_EXECUTOR_FAULT_INJECTION_H_

#include <cstdint>

namespace svmfuzz::faults {

// proto::Feature bits for what this kernel offers.
uint32_t Probe();
// Once per guest: filters as the fuzzer wants them, injection off.
void PrepareGuest();
// In a program process: allocations of this process may be failed.
void MarkProcess();
// 0 or errno (ENOENT: the kernel has no such knob).
int SetFailslab(uint64_t percent, uint64_t times);
int SetFailPageAlloc(uint64_t percent, uint64_t times);
// Back to no injection after a program that armed it.
void Disarm();

// fail-nth of the calling thread, opened on first use.
class FailNth {
 public:
  FailNth() = default;
  FailNth(const FailNth&) = delete;
  FailNth& operator=(const FailNth&) = delete;
  ~FailNth();
  bool Available();
  void Arm(uint64_t nth);
  // Whether the armed failure happened; disarms it if not.
  bool Disarm();

 private:
  int fd_ = -2;  // -2: not opened yet
};

}  // namespace svmfuzz::faults

#endif  // SVMFUZZ_EXECUTOR_FAULT_INJECTION_H_
