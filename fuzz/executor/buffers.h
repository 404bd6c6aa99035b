// A program process's buffers and their shadow copy.
//
// The shadow does not duplicate the bytes: every byte a program can put in a
// buffer is zero or pattern(seed), so each page's expected content is a state
// (unknown, zero, pattern of a seed) that regenerates the bytes exactly. That
// keeps the shadow of 16 x 4 MiB buffers at 200 KiB and lets a check compare
// every byte.
//
// Checks run where the program itself reads memory (touch, read, verify, and
// the pages a write just wrote) and over every buffer when a process ends.
// Never anywhere else: reading a page the program left swapped out or on the
// device would bring it back and undo what the program set up.
//
// Threads of one process share a Buffers. A page changed by two ops at once
// becomes unknown, and a check discards what it saw if the page changed while
// it looked. Another process sharing the memory (a fork child with a shared
// mapping) makes the buffer unchecked while it lives, then unknown.
#ifndef SVMFUZZ_EXECUTOR_BUFFERS_H_
#define SVMFUZZ_EXECUTOR_BUFFERS_H_

#include <array>
#include <cstdint>
#include <functional>
#include <mutex>
#include <vector>

#include "program/program.h"

namespace svmfuzz {

inline constexpr uint64_t kPageSize = 4096;
inline constexpr uint64_t kHugePageSize = 2 << 20;

// In the order of the enums of program.cc.
enum class MapKind : uint8_t { kAnon, kShared, kFile, kFileShared, kHuge, kHugetlb };
enum class Advice : uint8_t {
  kDontneed,
  kFree,
  kPageout,
  kCold,
  kHugepage,
  kNohugepage,
  kWillneed,
  kPopulateRead,
  kPopulateWrite,
  kCollapse,
};

// The 8 bytes at word `word` (byte offset / 8 in the buffer) of pattern(seed).
uint64_t PatternWord(uint32_t seed, uint64_t word);

struct PageMismatch {
  uint16_t buffer;
  uint32_t page;
  uint16_t offset;
  uint8_t expected;
  uint8_t actual;
};

// What an op did: errno, its op-specific value, proto::OpFlags.
struct OpOutcome {
  int err = 0;
  int64_t ret = 0;
  uint16_t flags = 0;
};

class Buffers {
 public:
  // Buffer i is mapped at base + i * kSlotSize, so that no other mapping
  // (another buffer, a thread stack) can land in the holes a program punches,
  // and a stray access through a stale address can only hit the same buffer.
  static constexpr uint64_t kSlotSize = 16 << 20;
  explicit Buffers(uintptr_t base);

  OpOutcome Mmap(uint64_t id, uint64_t pages, MapKind kind, int prot);
  OpOutcome Munmap(uint64_t id, uint64_t off, uint64_t n);
  OpOutcome Mprotect(uint64_t id, uint64_t off, uint64_t n, int prot);
  OpOutcome Madvise(uint64_t id, uint64_t off, uint64_t n, Advice advice);
  OpOutcome Mremap(uint64_t id, uint64_t pages, bool may_move);
  OpOutcome Touch(uint64_t id, uint64_t off, uint64_t n, std::vector<PageMismatch>* bad);
  OpOutcome Read(uint64_t id, uint64_t off, uint64_t n, std::vector<PageMismatch>* bad);
  OpOutcome Write(uint64_t id, uint64_t off, uint64_t n, uint32_t seed,
                std::vector<PageMismatch>* bad);
  // ret: bytes that differ from pattern(seed); err EILSEQ if any.
  OpOutcome Verify(uint64_t id, uint64_t off, uint64_t n, uint32_t seed,
                 std::vector<PageMismatch>* bad);
  void CheckAll(std::vector<PageMismatch>* bad);

  // Driver ops. `RangeFn` gets the mapped part of the range; the content
  // must not change (mirror, migrate, exclusive, snapshot: data survives
  // them, and later CPU reads check that it did).
  using RangeFn = std::function<OpOutcome(uint8_t* addr, uint64_t pages)>;
  OpOutcome OnRange(uint64_t id, uint64_t off, uint64_t n, const RangeFn& fn);
  // Per page: the device acts on the page at `addr` (index `page` in the
  // buffer) with the 4 KiB `data`; returns errno. ret: pages done.
  using PageFn = std::function<int(uint8_t* addr, uint64_t page, uint8_t* data)>;
  enum class DeviceEffect {
    kWrite,    // the device writes `data`, filled with pattern(seed)
    kRead,     // the device reads the page into `data`, checked against the shadow
    kAdd,      // the device adds 1 to the page's first 64-bit word
    kClobber,  // the device changes it in a way the shadow does not follow
  };
  OpOutcome OnPages(uint64_t id, uint64_t off, uint64_t n, DeviceEffect effect, uint32_t seed,
                  const PageFn& fn, std::vector<PageMismatch>* bad);

  // fork: the buffers `child_writes` names are written by the child; those
  // that are shared stay unchecked here until ChildGone() with the returned
  // token. The lock is held across fork() so the child gets a consistent copy.
  struct ForkToken {
    std::vector<std::pair<uint64_t, uint32_t>> shared;  // id, incarnation
  };
  ForkToken BeforeFork(const std::vector<uint64_t>& child_writes);
  void AfterForkParent();
  void AfterForkChild();
  void ChildGone(const ForkToken& token);

 private:
  enum class State : uint8_t { kUnmapped, kUnknown, kZero, kPattern };
  struct Page {
    State state = State::kUnmapped;
    bool conflict = false;  // two changes overlapped: unknown when they end
    uint16_t inflight = 0;  // changes under way
    uint32_t seed = 0;
    uint32_t gen = 0;       // bumped at the start and end of every change
    uint64_t add0 = 0;      // device atomics added to the first word
  };
  struct Buffer {
    uint8_t* addr = nullptr;
    uint64_t map_bytes = 0;  // hugetlb rounds up to huge pages
    uint64_t pages = 0;
    MapKind kind = MapKind::kAnon;
    int memfd = -1;
    uint32_t incarnation = 0;  // bumped by every mmap, so late updates of the old one drop
    int foreign = 0;           // other processes that may write it; unchecked while > 0
    // kMaxPages once first mapped, then never resized (no reallocation under
    // readers); empty before, so an unused id costs nothing to set up.
    std::vector<Page> page;
  };
  // A buffer range an op works on, clipped to the mapped pages.
  struct Range {
    uint64_t id = 0;
    uint8_t* addr = nullptr;  // of page `first`
    uint64_t first = 0, count = 0;
    uint32_t incarnation = 0;
    std::vector<uint8_t> mapped;  // per page of the range
    bool clipped = false;         // part of the asked range is not mapped
  };

  static bool Shared(MapKind kind) {
    return kind == MapKind::kShared || kind == MapKind::kFileShared;
  }
  // Under mu_. False (and *out says why) if there is nothing to work on.
  bool ResolveLocked(uint64_t id, uint64_t off, uint64_t n, Range* r, OpOutcome* out);
  bool Resolve(uint64_t id, uint64_t off, uint64_t n, Range* r, OpOutcome* out);
  void BeginChange(const Range& r);
  // Pages before `upto` get `state`/`seed` (or, with `add_one`, keep theirs
  // plus one device atomic); page `upto` itself is unknown if `torn`; later
  // pages keep their state.
  void EndChange(const Range& r, uint64_t upto, bool torn, State state, uint32_t seed,
                 bool add_one = false);
  void UnmapLocked(Buffer* b);
  // Closes its file and marks it unmapped; the mapping is already gone.
  void ForgetLocked(Buffer* b);
  // `verified`: pages of the range an op just found equal to pattern(seed),
  // which a shadow of pattern(seed) needs not read again.
  void Check(const Range& r, std::vector<PageMismatch>* bad,
             const std::vector<uint8_t>* verified = nullptr, uint32_t seed = 0);
  // The end of every CPU access: check the range, and fail an access that
  // reached past the buffer's end with EFAULT.
  OpOutcome Finish(const Range& r, std::vector<PageMismatch>* bad, OpOutcome out,
                   const std::vector<uint8_t>* verified = nullptr, uint32_t seed = 0);
  // Compares a page's bytes at `src` with what `seen` says; false if equal.
  static bool Differs(const volatile uint64_t* src, const Page& seen, uint64_t page,
                      uint64_t* word, uint64_t* expected, uint64_t* actual);
  // Reports a difference unless the page changed since `seen` was taken.
  void ReportIfStable(const Range& r, uint64_t page, const Page& seen, uint64_t word,
                      uint64_t expected, uint64_t actual, std::vector<PageMismatch>* bad);
  static void Faulted(int sig, OpOutcome* out);

  uintptr_t base_;
  std::mutex mu_;
  std::array<Buffer, kMaxBuffers> buf_;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_BUFFERS_H_
