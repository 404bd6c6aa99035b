#include "executor/program_process.h"

#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <memory>
#include <system_error>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "executor/buffers.h"
#include "executor/driver_ops.h"
#include "executor/fault_injection.h"

namespace svmfuzz {

uint64_t MonotonicNs() {
  timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<uint64_t>(ts.tv_sec) * 1000000000ull + static_cast<uint64_t>(ts.tv_nsec);
}

void SharedRun::Reset(size_t num_ops) {
  std::memset(ops, 0, num_ops * sizeof(ops[0]));
  num_mismatches = 0;
  started = 0;
  next_watch = 0;
  for (Watch& w : watch) {
    w.op = -1;
    w.pid = 0;
  }
  next_kcov = 0;
  kcov_busy = 0;
  faults_armed = 0;
  num_counters = 0;
  device_pid = 0;
  device_fd = -1;
  // Fresh each run: a program killed mid-request may have left it held.
  HostCaller::InitMutex(&host_mu);
}

namespace {

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_process_mrelease
#define SYS_process_mrelease 448
#endif

struct Planned {
  const Op* op;
  uint32_t index;  // in program order, fork bodies included
};

// Buffers a block's ops (fork bodies included) may write.
void CollectWrites(const std::vector<Op>& ops, std::vector<uint64_t>* ids) {
  for (const Op& op : ops) {
    switch (op.code) {
      case OpCode::kWrite:
      case OpCode::kDeviceWrite:
      case OpCode::kDeviceAtomic:
      case OpCode::kDeviceAccess:
        ids->push_back(op.args[0]);
        break;
      default:
        break;
    }
    CollectWrites(op.body, ids);
  }
}

void WriteFile(const char* path, const char* value) {
  const int fd = open(path, O_WRONLY | O_CLOEXEC);
  if (fd < 0) return;
  (void)!write(fd, value, strlen(value));
  close(fd);
}

// One process of the program: its block of ops, the threads they name.
class Process {
 public:
  using Files = std::array<Device::Config, kMaxFiles>;

  // `files`: those of the process that forked this one, which this one binds
  // again for itself; null for the program's first process.
  Process(const std::vector<Op>& ops, uint32_t first, SharedRun* shared, const RunConfig& config,
          Buffers* buffers, const Files* files)
      : first_(first),
        shared_(shared),
        config_(config),
        buffers_(buffers),
        host_(config.host_fd, &shared->host_mu) {
    for (uint64_t f = 0; f < kMaxFiles; f++) {
      Device::Config c;
      if (files != nullptr) {
        c = (*files)[f];
      } else {
        c.declared = f == 0;  // file 0 binds /dev/svmdev0 on first use, as it always did
      }
      devices_[f] = std::make_unique<Device>(c, config.knobs, [shared](int fd) {
        int32_t none = 0;
        if (shared->device_pid.compare_exchange_strong(none, getpid())) shared->device_fd = fd;
      });
    }
    for (std::atomic<int>& fd : pidfds_) fd = -1;
    // Each thread_create starts a thread that runs the ops tagged with its
    // id up to the matching thread_join; everything else is thread 0's.
    std::array<int, kMaxThreads> life{};
    life.fill(-1);
    lives_.reserve(ops.size());
    uint32_t index = first;
    size_t forks = 0;
    for (const Op& op : ops) {
      const Planned p{&op, index};
      if (op.code == OpCode::kThreadCreate) {
        lives_.push_back(Life{op.args[0], {}, {}});
        life[op.args[0]] = static_cast<int>(lives_.size() - 1);
        life_of_[index] = lives_.size() - 1;
      }
      if (op.thread == 0) {
        main_.push_back(p);
      } else if (life[op.thread] >= 0) {
        lives_[life[op.thread]].ops.push_back(p);
      }
      if (op.code == OpCode::kThreadJoin) life[op.args[0]] = -1;
      if (op.code == OpCode::kFork) child_of_[index] = forks++;
      index += static_cast<uint32_t>(1 + CountOps(op.body));
    }
  }

  void Run() {
    RunThread(0, main_);
    for (Life*& l : running_) {
      if (l != nullptr) l->thread.join();
      l = nullptr;
    }
    for (auto& [pid, token] : unwaited_) {
      int status;
      while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
      }
      buffers_->ChildGone(token);
    }
    for (std::atomic<int>& fd : pidfds_)
      if (fd >= 0) close(fd.exchange(-1));
    std::vector<PageMismatch> bad;
    buffers_->CheckAll(&bad);
    Record(proto::Mismatch::kEndOfProcess, bad);
    if (first_ == 0) {
      // The program's first process: its files' notifier balance is the program's.
      const std::vector<uint64_t> counters = CheckedCounters();
      const size_t n = std::min(counters.size(), SharedRun::kMaxCounters);
      std::copy(counters.begin(), counters.begin() + static_cast<long>(n), shared_->counters);
      shared_->num_counters = static_cast<uint32_t>(n);
    }
  }

 private:
  struct Life {
    uint64_t tid;
    std::vector<Planned> ops;
    std::thread thread;
  };
  struct ThreadState {
    uint64_t tid = 0;
    SharedRun::Watch* watch = nullptr;
    faults::FailNth fail_nth;
    uint64_t pending_fail_nth = 0;
  };

  void RunThread(uint64_t tid, const std::vector<Planned>& ops) {
    ThreadState ts;
    ts.tid = tid;
    const uint32_t w = shared_->next_watch++;
    if (w < SharedRun::kMaxWatched) {
      ts.watch = &shared_->watch[w];
      ts.watch->pid = getpid();
    }
    int slot = -1;
    if (config_.kcov != nullptr) {
      const uint32_t k = shared_->next_kcov++;
      if (k < config_.kcov->slots()) {
        const int err = config_.kcov->EnableThread(k);
        if (err == 0) slot = static_cast<int>(k);
        if (err == EBUSY) shared_->kcov_busy |= 1ull << k;
      }
    }
    for (const Planned& p : ops) RunOp(p, &ts);
    if (slot >= 0) config_.kcov->DisableThread(static_cast<size_t>(slot));
  }

  void RunOp(const Planned& p, ThreadState* ts) {
    proto::OpResult& res = shared_->ops[p.index];
    res.code = static_cast<uint8_t>(p.op->code);
    res.thread = static_cast<uint8_t>(ts->tid);
    res.flags = proto::kOpStarted;
    if (ts->watch != nullptr) {
      ts->watch->start_ns = MonotonicNs();
      ts->watch->op = static_cast<int32_t>(p.index);
    }
    const uint64_t fail_nth = std::exchange(ts->pending_fail_nth, 0);
    if (fail_nth != 0) ts->fail_nth.Arm(fail_nth);
    std::vector<PageMismatch> bad;
    const uint64_t start = MonotonicNs();
    OpOutcome out = Dispatch(*p.op, p.index, ts, &bad);
    const uint64_t ns = MonotonicNs() - start;
    if (fail_nth != 0 && ts->fail_nth.Disarm()) out.flags |= proto::kOpFaultInjected;
    if (ts->watch != nullptr) ts->watch->op = -1;
    if (!bad.empty()) out.flags |= proto::kOpMismatch;
    Record(p.index, bad);
    res.err = out.err;
    res.ret = out.ret;
    res.duration_us = static_cast<uint32_t>(std::min<uint64_t>(ns / 1000, UINT32_MAX));
    res.flags |= out.flags | proto::kOpDone;
  }

  void Record(uint32_t index, const std::vector<PageMismatch>& bad) {
    for (const PageMismatch& m : bad) {
      const uint32_t i = shared_->num_mismatches++;
      if (i >= SharedRun::kMaxMismatches) break;
      shared_->mismatches[i] = {index, m.buffer, m.offset, m.page, m.expected, m.actual};
    }
  }

  OpOutcome Dispatch(const Op& op, uint32_t index, ThreadState* ts,
                   std::vector<PageMismatch>* bad) {
    const auto& a = op.args;
    OpOutcome out;
    switch (op.code) {
      case OpCode::kMmap:
        return buffers_->Mmap(a[0], a[1], static_cast<MapKind>(a[2]), static_cast<int>(a[3]));
      case OpCode::kMunmap:
        return buffers_->Munmap(a[0], a[1], a[2]);
      case OpCode::kMprotect:
        return buffers_->Mprotect(a[0], a[1], a[2], static_cast<int>(a[3]));
      case OpCode::kMadvise:
        return buffers_->Madvise(a[0], a[1], a[2], static_cast<Advice>(a[3]));
      case OpCode::kMremap:
        return buffers_->Mremap(a[0], a[1], a[2] != 0);
      case OpCode::kFork:
        return Fork(op, index);
      case OpCode::kThreadCreate:
        return StartThread(index, a[0]);
      case OpCode::kThreadJoin:
        if (Life* l = std::exchange(running_[a[0]], nullptr)) l->thread.join();
        return out;
      case OpCode::kTouch:
        return buffers_->Touch(a[0], a[1], a[2], bad);
      case OpCode::kRead:
        return buffers_->Read(a[0], a[1], a[2], bad);
      case OpCode::kWrite:
        return buffers_->Write(a[0], a[1], a[2], static_cast<uint32_t>(a[3]), bad);
      case OpCode::kVerify:
        return buffers_->Verify(a[0], a[1], a[2], static_cast<uint32_t>(a[3]), bad);
      case OpCode::kFailNth:
        if (!ts->fail_nth.Available()) return Unsupported();
        ts->pending_fail_nth = a[0];
        return out;
      case OpCode::kFailslab:
      case OpCode::kFailPageAlloc: {
        shared_->faults_armed = 1;
        const int err = op.code == OpCode::kFailslab ? faults::SetFailslab(a[0], a[1])
                                                     : faults::SetFailPageAlloc(a[0], a[1]);
        if (err == ENOENT) return Unsupported();
        out.err = err;
        return out;
      }
      case OpCode::kOomKill:
        return OomKill();
      case OpCode::kOpenDev: {
        Device::Config c;
        c.dev = a[1];
        c.personality = a[2];
        const int fd = devices_[a[0]]->Open(c);
        if (fd == -ENOENT) return Unsupported();  // no such device in this guest
        if (fd < 0) {
          out.err = -fd;
        } else {
          out.ret = devices_[a[0]]->ctx();
        }
        return out;
      }
      case OpCode::kKillChild:
      case OpCode::kMrelease: {
        const int pidfd = pidfds_[a[0]];
        // A child another thread's fork has not made yet.
        if (pidfd < 0) {
          out.err = ESRCH;
          return out;
        }
        const long rc = op.code == OpCode::kKillChild
                            ? syscall(SYS_pidfd_send_signal, pidfd, SIGKILL, nullptr, 0)
                            : syscall(SYS_process_mrelease, pidfd, 0);
        if (rc != 0) out.err = errno;
        return out;
      }
      case OpCode::kSleep: {
        const timespec ts_sleep{static_cast<time_t>(a[0] / 1000000),
                                static_cast<long>(a[0] % 1000000 * 1000)};
        nanosleep(&ts_sleep, nullptr);
        return out;
      }
      case OpCode::kYield:
        sched_yield();
        return out;
      default:
        if (IsDriverOp(op.code))
          return RunDriverOp(op, buffers_, devices_[op.file].get(), host_, bad);
        return Unsupported();
    }
  }

  static OpOutcome Unsupported() {
    OpOutcome out;
    out.err = EOPNOTSUPP;
    out.flags = proto::kOpUnsupported;
    return out;
  }

  OpOutcome StartThread(uint32_t index, uint64_t tid) {
    OpOutcome out;
    Life& l = lives_[life_of_.at(index)];
    try {
      l.thread = std::thread([this, &l] { RunThread(l.tid, l.ops); });
      running_[tid] = &l;
    } catch (const std::system_error& e) {
      out.err = e.code().value();
    }
    return out;
  }

  OpOutcome Fork(const Op& op, uint32_t index) {
    OpOutcome out;
    std::vector<uint64_t> writes;
    CollectWrites(op.body, &writes);
    // Taken before the fork: a thread binding a file then holds its lock.
    Files files;
    for (uint64_t f = 0; f < kMaxFiles; f++) files[f] = devices_[f]->config();
    Buffers::ForkToken token = buffers_->BeforeFork(writes);
    const pid_t pid = fork();
    if (pid == 0) {
      buffers_->AfterForkChild();
      Process child(op.body, index + 1, shared_, config_, buffers_, &files);
      child.Run();
      _exit(0);
    }
    buffers_->AfterForkParent();
    if (pid < 0) {
      out.err = errno;
      buffers_->ChildGone(token);
      return out;
    }
    // For kill_child and mrelease: a pidfd names this child even once it is
    // reaped, so no later process can take its place.
    const size_t child = child_of_.at(index);
    if (child < kMaxChildren) pidfds_[child] = static_cast<int>(syscall(SYS_pidfd_open, pid, 0));
    if (op.args[0] == 0) {  // wait=no: reaped when this process's block ends
      unwaited_.emplace_back(pid, std::move(token));
      out.ret = pid;
      return out;
    }
    int status = 0;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
    }
    buffers_->ChildGone(token);
    out.ret = status;
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) out.flags |= proto::kOpChildFailed;
    return out;
  }

  OpOutcome OomKill() {
    // The highest oom_score_adj wins the OOM killer's choice: this process,
    // not the program's others (500) nor the executor (-1000). The manual
    // OOM kill (sysrq f) takes the real path: oom_kill_process and the
    // reaper's non-blocking unmap.
    WriteFile("/proc/self/oom_score_adj", "1000");
    WriteFile("/proc/sysrq-trigger", "f");
    OpOutcome out;
    // The kill comes from a workqueue; if it does not come, say so.
    for (int i = 0; i < 200; i++) usleep(10000);
    out.err = ESRCH;
    return out;
  }

  // The counters of the lowest open file after the balance check of every
  // file; `balanced` (the last) only if all of them are.
  std::vector<uint64_t> CheckedCounters() {
    std::vector<uint64_t> out;
    for (const std::unique_ptr<Device>& d : devices_) {
      const std::vector<uint64_t> c = d->CheckedCounters();
      if (c.empty()) continue;
      if (out.empty()) {
        out = c;
      } else {
        out.back() &= c.back();
      }
    }
    return out;
  }

  uint32_t first_;
  SharedRun* shared_;
  RunConfig config_;
  Buffers* buffers_;
  HostCaller host_;
  std::array<std::unique_ptr<Device>, kMaxFiles> devices_;
  // Per fork of this process, in program order; -1 until it is made.
  std::array<std::atomic<int>, kMaxChildren> pidfds_;
  std::unordered_map<uint32_t, size_t> child_of_;  // a fork's op index: its number
  std::vector<Planned> main_;
  std::vector<Life> lives_;
  std::unordered_map<uint32_t, size_t> life_of_;
  std::array<Life*, kMaxThreads> running_{};
  std::vector<std::pair<pid_t, Buffers::ForkToken>> unwaited_;
};

bool UsesFailProbability(const std::vector<Op>& ops) {
  for (const Op& op : ops) {
    if (op.code == OpCode::kFailslab || op.code == OpCode::kFailPageAlloc) return true;
    if (UsesFailProbability(op.body)) return true;
  }
  return false;
}

}  // namespace

void RunProgram(const Program& program, SharedRun* shared, const RunConfig& config) {
  // Only what the program uses: every syscall costs under TCG.
  if (UsesFailProbability(program.ops)) faults::MarkProcess();
  Buffers buffers(config.buffer_base);
  Process(program.ops, 0, shared, config, &buffers, nullptr).Run();
}

}  // namespace svmfuzz
