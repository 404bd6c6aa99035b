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
inline constexpr uint64_t kMaxFiles = 4;     // driver files of a process, ids 0..3
inline constexpr uint64_t kMaxChildren = 8;  // forks of a process that ops can name
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
  kMapPresent,
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
  // Added later, hence out of their groups.
  kOpenDev,
  kKillChild,
  kMrelease,
};
inline constexpr size_t kNumOps = static_cast<size_t>(OpCode::kMrelease) + 1;

enum class ArgKind : uint8_t {
  kNewBuffer,   // names the buffer the op creates; must not be mapped yet
  kBuffer,      // a mapped buffer; offsets and counts after it refer to it
  kPageOffset,  // page index inside the op's buffer
  kPageCount,   // pages from the preceding offset, at least 1, within the buffer
  kSize,        // a buffer size in pages, [min, max]
  kNewThread,   // a thread id not running yet
  kThread,      // a running thread id
  kNewFile,     // a driver file id not open yet
  kChild,       // the n-th fork of this process (0-based), which must have come before
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
  bool uses_file;         // driver ops: Op::file names the driver file they go through
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
  // Driver ops only: the process's driver file the op goes through. File 0
  // is /dev/svmdev0 bound with no personality on first use, unless an
  // open_dev opened it otherwise; others must be opened by open_dev.
  uint64_t file = 0;
  // In the order of Describe(code).args; the unused tail stays 0.
  std::array<uint64_t, kMaxArgs> args{};
  // fork only: the child's ops.
  std::vector<Op> body;

  uint64_t arg(std::string_view name) const;

  bool operator==(const Op& o) const {
    return code == o.code && thread == o.thread && file == o.file && args == o.args &&
           body == o.body;
  }
  bool operator!=(const Op& o) const { return !(*this == o); }
};

struct Program {
  std::vector<Op> ops;

  bool operator==(const Program& o) const { return ops == o.ops; }
  bool operator!=(const Program& o) const { return !(*this == o); }
};

// What one process has at a point of its program: mapped buffers with their
// sizes, running threads, open driver files and the forks it made. The
// validator and the decoder walk a program with it, so both agree on which
// references are valid where.
class Scope {
 public:
  bool BufferMapped(uint64_t id) const { return id < kMaxBuffers && pages_[id] != 0; }
  uint64_t BufferPages(uint64_t id) const { return BufferMapped(id) ? pages_[id] : 0; }
  bool ThreadRunning(uint64_t id) const { return id > 0 && id < kMaxThreads && threads_[id]; }
  // A file driver ops may name: 0 always, others once open_dev opened them.
  bool FileUsable(uint64_t id) const { return id == 0 || FileOpen(id); }
  // Whether open_dev may open it: not opened yet, and file 0 not used yet
  // (its first use opens it with the defaults).
  bool FileFree(uint64_t id) const {
    return id < kMaxFiles && !FileOpen(id) && !(id == 0 && used0_);
  }
  bool FileOpen(uint64_t id) const { return id < kMaxFiles && files_[id]; }
  // Forks so far in this process's block, at most kMaxChildren.
  uint64_t Children() const { return children_; }

  std::vector<uint64_t> MappedBuffers() const;
  std::vector<uint64_t> FreeBuffers() const;
  std::vector<uint64_t> RunningThreads() const;
  std::vector<uint64_t> FreeThreads() const;
  std::vector<uint64_t> UsableFiles() const;
  std::vector<uint64_t> FreeFiles() const;

  // Records the effect of `op`, which must be valid in this scope.
  void Apply(const Op& op);
  // The scope a forked child starts with: the parent's mappings and opened
  // files (the child binds its own on first use), no threads, no forks.
  Scope ForChild() const;

 private:
  std::array<uint64_t, kMaxBuffers> pages_{};  // 0: not mapped
  std::array<bool, kMaxThreads> threads_{};
  std::array<bool, kMaxFiles> files_{};  // opened by open_dev
  bool used0_ = false;                   // a driver op used file 0 before any open_dev of it
  uint64_t children_ = 0;
};

// Ops in `ops`, fork bodies included.
size_t CountOps(const std::vector<Op>& ops);

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_PROGRAM_H_
