// A set of distinct kernel PCs, filled from a KCOV trace after each program.
//
// The guest CPU is emulated: every load that misses the emulator's TLB is
// expensive, so the table starts small (most programs reach a few thousand
// distinct PCs) and doubles when half full, rather than being sized for the
// largest cap. Emptying it touches only the slots in use. Its memory is not
// inherited by forked programs: a fork would write-protect it, and the
// executor would take a fault on every page of it again.
#ifndef SVMFUZZ_EXECUTOR_PC_SET_H_
#define SVMFUZZ_EXECUTOR_PC_SET_H_

#include <cstddef>
#include <cstdint>

namespace svmfuzz {

class PcSet {
 public:
  static constexpr size_t kInitialSlots = 8192;

  PcSet() = default;
  PcSet(const PcSet&) = delete;
  PcSet& operator=(const PcSet&) = delete;
  ~PcSet();

  // Adds `pc` (never 0: the kernel has no code there); true if it is new.
  // False as well when the table cannot grow.
  bool Insert(uint64_t pc);
  void Clear();
  size_t size() const { return count_; }
  size_t slots() const { return mask_ + 1; }

 private:
  bool Resize(size_t slots);

  uint64_t* table_ = nullptr;  // 0: a free slot
  uint32_t* used_ = nullptr;   // the slots in use, in insertion order
  size_t mask_ = static_cast<size_t>(-1);
  size_t count_ = 0;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_PC_SET_H_
