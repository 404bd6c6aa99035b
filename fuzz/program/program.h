// The program model: a program is a sequence of ops with typed arguments.
//
// Every op is described once, in the table behind Describe(): its name, its
// arguments and their kinds and ranges. The text form, the binary form, the
// validator and the mutators all read that table, so adding an op is adding a
// row, and no two of them can disagree on what an op takes.
#ifndef SVMFUZZ_PROGRAM_PROGRAM_H_
#define SVMFUZZ_PROGRAM_PROGRAM_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string_view>
#include <vector>

namespace svmfuzz {

// Limits keep a single program cheap to run under TCG and bound the state the
// executor must track.
inline constexpr size_t kMaxOps = 256;       // all ops, fork bodies included
inline constexpr int kMaxForkDepth = 2;      // fork inside fork, no deeper
inline constexpr uint64_t kMaxBuffers = 16;  // buffer ids 0..15
inline constexpr uint64_t kMaxThreads = 8;   // 0 is the main thread, 1..7 created
inline constexpr uint64_t kMaxPages = 1024;  // per buffer, in 4 KiB pages
inline constexpr int kMaxArgs = 5;

// The numeric value is the opcode of the binary form: new ops go at the end so
// that existing binary corpora keep their meaning.
enum class OpCode : uint8_t {
  // Memory syscalls.
  kMmap,
  kMunmap,
  kMprotect,
  kMadvise,
  kMremap,
  kFork,
  kThreadCreate,
  kThreadJoin,
  // CPU accesses.
  kTouch,
  kRead,
  kWrite,
  kVerify,
  // Guest driver ioctls.
  kMirror,
  kPrefetch,
  kMigrateToDevice,
  kMigrateToSystem,
  kDeviceRead,
  kDeviceWrite,
  kDeviceAtomic,
  kSnapshot,
  kExclusive,
  kRelease,
  // Device actions through the host control channel.
  kDeviceAccess,
  kFaultStorm,
  kDelayAcks,
  kDropAcks,
  kFailDma,
  // Fault injection.
  kFailNth,
  kFailslab,
  kFailPageAlloc,
  kDriverFailAlloc,
  kDriverFailCopy,
  kOomKill,
  // Interleaving.
  kSleep,
  kYield,
};
inline constexpr size_t kNumOps = static_cast<size_t>(OpCode::kYield) + 1;

enum class ArgKind : uint8_t {
  kNewBuffer,   // names the buffer the op creates; must not be mapped yet
  kBuffer,      // a mapped buffer; offsets and counts after it refer to it
  kPageOffset,  // page index inside the op's buffer
  kPageCount,   // pages from the preceding offset, at least 1, within the buffer
  kSize,        // a buffer size in pages, [min, max]
  kNewThread,   // a thread id not running yet
  kThread,      // a running thread id
  kInt,         // an integer in [min, max]
  kEnum,        // an index into `values`, printed by name
};

struct ArgDesc {
  const char* name;
  ArgKind kind;
  uint64_t min;
  uint64_t max;
  const char* const* values;  // kEnum only: max + 1 names
};

struct OpDesc {
  OpCode code;
  const char* name;
  int num_args;
  std::array<ArgDesc, kMaxArgs> args;
  bool has_body;          // fork: the child's ops follow in a block
  bool main_thread_only;  // ops that change the process's thread set or the process itself
  const char* doc;
};

const OpDesc& Describe(OpCode code);
// nullptr if no op has that name.
const OpDesc* FindOp(std::string_view name);
// Index of argument `name` of `code`, or -1.
int ArgIndex(OpCode code, std::string_view name);

struct Op {
  OpCode code = OpCode::kYield;
  // 0 runs the op on the process's main thread; n runs it on thread n, which a
  // thread_create before it started and no thread_join has ended yet.
  uint64_t thread = 0;
  // In the order of Describe(code).args; the unused tail stays 0.
  std::array<uint64_t, kMaxArgs> args{};
  // fork only: the child's ops.
  std::vector<Op> body;

  uint64_t arg(std::string_view name) const;

  bool operator==(const Op& o) const {
    return code == o.code && thread == o.thread && args == o.args && body == o.body;
  }
  bool operator!=(const Op& o) const { return !(*this == o); }
};

struct Program {
  std::vector<Op> ops;

  bool operator==(const Program& o) const { return ops == o.ops; }
  bool operator!=(const Program& o) const { return !(*this == o); }
};

// What one process has at a point of its program: mapped buffers with their
// sizes, and running threads. The validator and the decoder walk a program
// with it, so both agree on which references are valid where.
class Scope {
 public:
  bool BufferMapped(uint64_t id) const { return id < kMaxBuffers && pages_[id] != 0; }
  uint64_t BufferPages(uint64_t id) const { return BufferMapped(id) ? pages_[id] : 0; }
  bool ThreadRunning(uint64_t id) const { return id > 0 && id < kMaxThreads && threads_[id]; }

  std::vector<uint64_t> MappedBuffers() const;
  std::vector<uint64_t> FreeBuffers() const;
  std::vector<uint64_t> RunningThreads() const;
  std::vector<uint64_t> FreeThreads() const;

  // Records the effect of `op`, which must be valid in this scope.
  void Apply(const Op& op);
  // The scope a forked child starts with: the parent's mappings, no threads.
  Scope ForChild() const;

 private:
  std::array<uint64_t, kMaxBuffers> pages_{};  // 0: not mapped
  std::array<bool, kMaxThreads> threads_{};
};

// Ops in `ops`, fork bodies included.
size_t CountOps(const std::vector<Op>& ops);

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_PROGRAM_H_
