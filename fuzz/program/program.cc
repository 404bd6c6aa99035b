#include "program/program.h"

#include <algorithm>
#include <initializer_list>

namespace svmfuzz {
namespace {

constexpr const char* kMapKinds[] = {"anon", "shared", "file", "file_shared", "huge", "hugetlb"};
// Index is the PROT_* bit mask.
constexpr const char* kProts[] = {"none", "r", "w", "rw", "x", "rx", "wx", "rwx"};
constexpr const char* kAdvice[] = {"dontneed",       "free",       "pageout",  "cold",
                                   "hugepage",       "nohugepage", "willneed", "populate_read",
                                   "populate_write", "collapse"};
constexpr const char* kNoYes[] = {"no", "yes"};
constexpr const char* kAccess[] = {"read", "write", "atomic"};
// Index is the SVMDEV_PERS_* value.
constexpr const char* kPersonalities[] = {"none", "refuse_nonblock", "block_shared", "slow",
                                          "serial_to_ram", "serial_to_ram_page",
                                          "serial_to_ram_2m"};

constexpr ArgDesc NewBuf() { return {"buf", ArgKind::kNewBuffer, 0, kMaxBuffers - 1, nullptr}; }
constexpr ArgDesc Buf() { return {"buf", ArgKind::kBuffer, 0, kMaxBuffers - 1, nullptr}; }
constexpr ArgDesc Off(const char* name = "off") {
  return {name, ArgKind::kPageOffset, 0, kMaxPages - 1, nullptr};
}
constexpr ArgDesc Count() { return {"pages", ArgKind::kPageCount, 1, kMaxPages, nullptr}; }
constexpr ArgDesc Size() { return {"pages", ArgKind::kSize, 1, kMaxPages, nullptr}; }
constexpr ArgDesc NewTid() { return {"tid", ArgKind::kNewThread, 1, kMaxThreads - 1, nullptr}; }
constexpr ArgDesc Tid() { return {"tid", ArgKind::kThread, 1, kMaxThreads - 1, nullptr}; }
constexpr ArgDesc Int(const char* name, uint64_t min, uint64_t max) {
  return {name, ArgKind::kInt, min, max, nullptr};
}
template <size_t N>
constexpr ArgDesc Enum(const char* name, const char* const (&values)[N]) {
  return {name, ArgKind::kEnum, 0, N - 1, values};
}
constexpr ArgDesc Seed() { return Int("seed", 0, 0xffffffff); }
constexpr ArgDesc NewFile() { return {"file", ArgKind::kNewFile, 0, kMaxFiles - 1, nullptr}; }
constexpr ArgDesc Child() { return {"child", ArgKind::kChild, 0, kMaxChildren - 1, nullptr}; }

enum Flags { kNone = 0, kBody = 1, kMainOnly = 2, kFile = 4 };

constexpr OpDesc Row(OpCode code, const char* name, std::initializer_list<ArgDesc> args, int flags,
                     const char* doc) {
  OpDesc d{code, name, 0, {}, (flags & kBody) != 0, (flags & kMainOnly) != 0, (flags & kFile) != 0,
           doc};
  for (const ArgDesc& a : args) d.args[d.num_args++] = a;
  return d;
}

// One row per OpCode, in OpCode order (checked below).
constexpr OpDesc kOps[] = {
    Row(OpCode::kMmap, "mmap", {NewBuf(), Size(), Enum("kind", kMapKinds), Enum("prot", kProts)},
        kNone, "map a new buffer; huge is anonymous THP-aligned memory, hugetlb uses MAP_HUGETLB"),
    Row(OpCode::kMunmap, "munmap", {Buf(), Off(), Count()}, kNone,
        "unmap pages; unmapping the whole buffer ends it and frees its id"),
    Row(OpCode::kMprotect, "mprotect", {Buf(), Off(), Count(), Enum("prot", kProts)}, kNone,
        "change protection"),
    Row(OpCode::kMadvise, "madvise", {Buf(), Off(), Count(), Enum("advice", kAdvice)}, kNone,
        "madvise a range"),
    Row(OpCode::kMremap, "mremap", {Buf(), Size(), Enum("move", kNoYes)}, kNone,
        "resize a buffer, letting the kernel move it if move=yes"),
    Row(OpCode::kFork, "fork", {Enum("wait", kNoYes)}, kBody | kMainOnly,
        "fork; the child runs the block and exits; wait=yes makes the parent wait for it"),
    Row(OpCode::kThreadCreate, "thread_create", {NewTid()}, kMainOnly,
        "start a thread that runs the ops tagged @tid"),
    Row(OpCode::kThreadJoin, "thread_join", {Tid()}, kMainOnly,
        "wait until the thread has run its ops, end it"),
    Row(OpCode::kTouch, "touch", {Buf(), Off(), Count()}, kNone,
        "read one byte of each page (fault it in)"),
    Row(OpCode::kRead, "read", {Buf(), Off(), Count()}, kNone, "read every byte of the range"),
    Row(OpCode::kWrite, "write", {Buf(), Off(), Count(), Seed()}, kNone,
        "fill the range with pattern(seed)"),
    Row(OpCode::kVerify, "verify", {Buf(), Off(), Count(), Seed()}, kNone,
        "check the range holds pattern(seed)"),
    Row(OpCode::kMirror, "mirror", {Buf(), Off(), Count(), Enum("write", kNoYes)}, kFile,
        "driver: fault the range in (hmm_range_fault) and map it in the device MMU"),
    Row(OpCode::kMapPresent, "map_present", {Buf(), Off(), Count()}, kFile,
        "driver: map in the device MMU what the CPU maps already, without faulting"),
    Row(OpCode::kMigrateToDevice, "migrate_to_dev", {Buf(), Off(), Count()}, kFile,
        "driver: migrate the range to device-private memory"),
    Row(OpCode::kMigrateToSystem, "migrate_to_sys", {Buf(), Off(), Count()}, kFile,
        "driver: migrate the range back to system memory"),
    Row(OpCode::kDeviceRead, "dev_read", {Buf(), Off(), Count()}, kFile,
        "driver: the device copies the range out"),
    Row(OpCode::kDeviceWrite, "dev_write", {Buf(), Off(), Count(), Seed()}, kFile,
        "driver: the device writes pattern(seed) to the range"),
    Row(OpCode::kDeviceAtomic, "dev_atomic", {Buf(), Off(), Count()}, kFile,
        "driver: a device atomic increment of each page's first word, under device-exclusive"),
    Row(OpCode::kSnapshot, "snapshot", {Buf(), Off(), Count()}, kFile,
        "driver: report the range's page states without faulting"),
    Row(OpCode::kExclusive, "exclusive", {Buf(), Off(), Count()}, kFile,
        "driver: take the range device-exclusive and hold it"),
    Row(OpCode::kRelease, "release", {}, kFile,
        "driver: evict all device-private memory back to system memory"),
    Row(OpCode::kDeviceAccess, "dev_access",
        {Buf(), Off("page"), Int("word", 0, 511), Enum("access", kAccess)}, kFile,
        "device: access a 64-bit word on its own, through its MMU and replayable faults"),
    Row(OpCode::kFaultStorm, "fault_storm", {Buf(), Off(), Count(), Int("count", 1, 4096)}, kFile,
        "device: raise `count` faults spread over the range"),
    Row(OpCode::kDelayAcks, "delay_acks", {Int("us", 0, 1000000)}, kFile,
        "device: acknowledge invalidations this much later"),
    Row(OpCode::kDropAcks, "drop_acks", {Int("count", 1, 64)}, kFile,
        "device: drop the next invalidation acks"),
    Row(OpCode::kFailDma, "fail_dma", {Int("count", 1, 64)}, kFile,
        "device: fail the next DMA transfers"),
    Row(OpCode::kFailNth, "fail_nth", {Int("nth", 1, 64)}, kNone,
        "fault injection: fail the nth allocation of the next op"),
    Row(OpCode::kFailslab, "failslab", {Int("percent", 1, 100), Int("times", 1, 1000)}, kNone,
        "fault injection: failslab probability and count"),
    Row(OpCode::kFailPageAlloc, "fail_page_alloc", {Int("percent", 1, 100), Int("times", 1, 1000)},
        kNone, "fault injection: fail_page_alloc probability and count"),
    Row(OpCode::kDriverFailAlloc, "drv_fail_alloc", {Int("count", 1, 64)}, kFile,
        "fault injection: fail the driver's next page allocations (CPU faults back included)"),
    Row(OpCode::kDriverFailCopy, "drv_fail_copy", {Int("count", 1, 64)}, kFile,
        "fault injection: fail the driver's next page copies (CPU faults back included)"),
    Row(OpCode::kOomKill, "oom_kill", {}, kNone,
        "kill this process through the OOM killer, so the OOM reaper unmaps it"),
    Row(OpCode::kSleep, "sleep", {Int("us", 0, 1000000)}, kNone, "sleep"),
    Row(OpCode::kYield, "yield", {}, kNone, "sched_yield"),
    Row(OpCode::kOpenDev, "open_dev",
        {NewFile(), Int("dev", 0, 3), Enum("personality", kPersonalities)}, kNone,
        "open /dev/svmdev<dev> as driver file `file` and bind it with the personality"),
    Row(OpCode::kKillChild, "kill_child", {Child()}, kNone,
        "pidfd_send_signal SIGKILL to the child of the process's fork number `child`"),
    Row(OpCode::kMrelease, "mrelease", {Child()}, kNone,
        "process_mrelease the memory of that child, which a kill_child should have killed"),
};

constexpr bool RowsInOpCodeOrder() {
  if (sizeof(kOps) / sizeof(kOps[0]) != kNumOps) return false;
  for (size_t i = 0; i < kNumOps; i++)
    if (static_cast<size_t>(kOps[i].code) != i) return false;
  return true;
}
static_assert(RowsInOpCodeOrder(), "kOps has one row per OpCode, in OpCode order");

}  // namespace

const OpDesc& Describe(OpCode code) { return kOps[static_cast<size_t>(code)]; }

const OpDesc* FindOp(std::string_view name) {
  for (const OpDesc& d : kOps)
    if (name == d.name) return &d;
  return nullptr;
}

int ArgIndex(OpCode code, std::string_view name) {
  const OpDesc& d = Describe(code);
  for (int i = 0; i < d.num_args; i++)
    if (name == d.args[i].name) return i;
  return -1;
}

// at(): an unknown name is a programming error; fail loudly, not out of bounds.
uint64_t Op::arg(std::string_view name) const {
  return args.at(static_cast<size_t>(ArgIndex(code, name)));
}

std::vector<uint64_t> Scope::MappedBuffers() const {
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < kMaxBuffers; i++)
    if (pages_[i]) ids.push_back(i);
  return ids;
}

std::vector<uint64_t> Scope::FreeBuffers() const {
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < kMaxBuffers; i++)
    if (!pages_[i]) ids.push_back(i);
  return ids;
}

std::vector<uint64_t> Scope::RunningThreads() const {
  std::vector<uint64_t> ids;
  for (uint64_t i = 1; i < kMaxThreads; i++)
    if (threads_[i]) ids.push_back(i);
  return ids;
}

std::vector<uint64_t> Scope::FreeThreads() const {
  std::vector<uint64_t> ids;
  for (uint64_t i = 1; i < kMaxThreads; i++)
    if (!threads_[i]) ids.push_back(i);
  return ids;
}

std::vector<uint64_t> Scope::UsableFiles() const {
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < kMaxFiles; i++)
    if (FileUsable(i)) ids.push_back(i);
  return ids;
}

std::vector<uint64_t> Scope::FreeFiles() const {
  std::vector<uint64_t> ids;
  for (uint64_t i = 0; i < kMaxFiles; i++)
    if (FileFree(i)) ids.push_back(i);
  return ids;
}

void Scope::Apply(const Op& op) {
  switch (op.code) {
    case OpCode::kMmap:
    case OpCode::kMremap:
      pages_[op.args[0]] = op.args[1];
      break;
    case OpCode::kMunmap:
      if (op.args[1] == 0 && op.args[2] == pages_[op.args[0]]) pages_[op.args[0]] = 0;
      break;
    case OpCode::kThreadCreate:
      threads_[op.args[0]] = true;
      break;
    case OpCode::kThreadJoin:
      threads_[op.args[0]] = false;
      break;
    case OpCode::kOpenDev:
      files_[op.args[0]] = true;
      break;
    case OpCode::kFork:
      children_ = std::min(children_ + 1, kMaxChildren);
      break;
    default:
      if (Describe(op.code).uses_file && op.file == 0) used0_ = true;
      break;
  }
}

Scope Scope::ForChild() const {
  Scope child;
  child.pages_ = pages_;
  child.files_ = files_;
  return child;
}

size_t CountOps(const std::vector<Op>& ops) {
  size_t n = ops.size();
  for (const Op& op : ops) n += CountOps(op.body);
  return n;
}

}  // namespace svmfuzz
