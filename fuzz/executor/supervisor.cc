#include "executor/supervisor.h"

#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <new>
#include <sstream>
#include <string>
#include <utility>

#include "executor/driver_ops.h"
#include "executor/fault_injection.h"
#include "executor/guarded_access.h"
#include "program/binary.h"
#include "svmdev/svmdev_uapi.h"

namespace svmfuzz {
namespace {

// Far below where the kernel places mappings of its own choosing.
constexpr uintptr_t kBufferBase = 0x100000000000ull;

uint64_t VmstatOomKills() {
  std::ifstream in("/proc/vmstat");
  std::string key;
  uint64_t value;
  while (in >> key >> value)
    if (key == "oom_kill") return value;
  return 0;
}

std::string ReadAll(const std::string& path) {
  std::ifstream f(path);
  return std::string((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
}

enum class Life { kRunning, kDying, kGone };

// Whether process `pid` runs, has been killed and not yet finished exiting
// (SIGKILL pending, or PF_EXITING), or has ended (a zombie, or reaped).
Life ProcessLife(pid_t pid) {
  if (pid <= 0) return Life::kRunning;
  const std::string dir = "/proc/" + std::to_string(pid);
  const std::string stat = ReadAll(dir + "/stat");
  const size_t paren = stat.rfind(')');
  if (paren == std::string::npos || paren + 2 >= stat.size()) return Life::kGone;
  const char state = stat[paren + 2];
  if (state == 'Z' || state == 'X') return Life::kGone;
  // Fields after the state: ppid pgrp session tty_nr tpgid flags.
  std::istringstream fields(stat.substr(paren + 3));
  std::string skip;
  unsigned long flags = 0;
  fields >> skip >> skip >> skip >> skip >> skip >> flags;
  constexpr unsigned long kPfExiting = 0x4;
  if (flags & kPfExiting) return Life::kDying;
  std::istringstream status(ReadAll(dir + "/status"));
  for (std::string line; std::getline(status, line);) {
    if (line.rfind("SigPnd:", 0) != 0 && line.rfind("ShdPnd:", 0) != 0) continue;
    const unsigned long long pending = std::strtoull(line.c_str() + 7, nullptr, 16);
    if (pending >> (SIGKILL - 1) & 1) return Life::kDying;
  }
  return Life::kRunning;
}

// A task that would not die: its state letter ('D' if any of its threads
// sleeps uninterruptibly, else the first thread's) and, for the host's
// oracle, where each thread sleeps in the kernel, one frame a line as the
// kernel prints them (" func+0x1c/0x40 [module]").
char StuckTasks(pid_t pid, std::string* report) {
  const std::string dir = "/proc/" + std::to_string(pid) + "/task";
  char state = '?';
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return state;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    const std::string task = dir + "/" + e->d_name;
    const std::string stat = ReadAll(task + "/stat");
    const size_t open = stat.find('(');
    const size_t paren = stat.rfind(')');
    if (open == std::string::npos || paren == std::string::npos || paren + 2 >= stat.size())
      continue;
    const char s = stat[paren + 2];
    if (state == '?' || s == 'D') state = s;
    *report += "task " + std::string(e->d_name) + " (" + stat.substr(open + 1, paren - open - 1) +
               ") state " + s + ":\n";
    // "[<0>] func+0x1c/0x40 [module]": the address is hidden from us anyway.
    // A task caught running shows no stack: look again until it sleeps.
    std::string frames = ReadAll(task + "/stack");
    for (int i = 0; frames.empty() && i < 50; i++) {
      usleep(2000);
      frames = ReadAll(task + "/stack");
    }
    std::istringstream stack(frames);
    for (std::string line; std::getline(stack, line);) {
      const size_t frame = line.find("] ");
      *report += " " + (frame == std::string::npos ? line : line.substr(frame + 2)) + "\n";
    }
  }
  closedir(d);
  return state;
}

// Waits until `fd` (a pidfd) is readable: the process exited. False on timeout.
bool WaitExit(int fd, uint64_t timeout_ns) {
  pollfd p{fd, POLLIN, 0};
  const int ms = static_cast<int>(std::min<uint64_t>((timeout_ns + 999999) / 1000000, INT32_MAX));
  for (;;) {
    const int n = poll(&p, 1, ms);
    if (n < 0 && errno == EINTR) continue;
    return n > 0;
  }
}

// How much each driver counter rose from `before` to `after`; empty if either
// read failed.
std::vector<uint64_t> Deltas(const std::vector<uint64_t>& before,
                             const std::vector<uint64_t>& after) {
  if (before.empty() || after.size() != before.size()) return {};
  std::vector<uint64_t> out(after.size());
  for (size_t i = 0; i < out.size(); i++) out[i] = after[i] - before[i];
  out[SVMDEV_CTR_VRAM_FREE] = 0;  // a level, not a count
  return out;
}

// A join or a fork waits for other ops, which are watched on their own.
bool Waits(OpCode code) { return code == OpCode::kThreadJoin || code == OpCode::kFork; }

// The op that has been running longest, waits aside, or -1.
int32_t OldestRunningOp(const SharedRun* shared) {
  const uint32_t watched = std::min<uint32_t>(shared->next_watch, SharedRun::kMaxWatched);
  int32_t oldest = -1;
  uint64_t since = UINT64_MAX;
  for (uint32_t i = 0; i < watched; i++) {
    const int32_t op = shared->watch[i].op;
    if (op >= 0 && !Waits(static_cast<OpCode>(shared->ops[op].code)) &&
        shared->watch[i].start_ns < since) {
      oldest = op;
      since = shared->watch[i].start_ns;
    }
  }
  return oldest;
}

// Names every op's result, so ops the program never reached still say what they were.
void NameOps(const std::vector<Op>& ops, proto::OpResult* results, size_t* next) {
  for (const Op& op : ops) {
    proto::OpResult& r = results[(*next)++];
    r.code = static_cast<uint8_t>(op.code);
    r.thread = static_cast<uint8_t>(op.thread);
    NameOps(op.body, results, next);
  }
}

}  // namespace

Supervisor::Supervisor() {
  void* p = mmap(nullptr, sizeof(SharedRun), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS,
                 -1, 0);
  if (p == MAP_FAILED) {
    std::perror("svmfuzz-executor: shared memory");
    std::abort();
  }
  shared_ = new (p) SharedRun;
  have_kcov_ = kcov_.Open(kKcovSlots, kKcovWords);
  if (have_kcov_) features_ |= proto::kFeatureKcov;
  if (kcov_.has_remote()) features_ |= proto::kFeatureKcovRemote;
  features_ |= faults::Probe();
  if (HaveDriver()) features_ |= proto::kFeatureDriver;
  // Orphans of a program (children of a process that died) come to us, so
  // nothing is left unreaped in the guest.
  prctl(PR_SET_CHILD_SUBREAPER, 1);
  oom_kills_ = VmstatOomKills();
}

Supervisor::~Supervisor() {
  DropSpare();
  munmap(shared_, sizeof(SharedRun));
}

proto::ExecResult Supervisor::Execute(const proto::ExecRequest& request, Port* port) {
  proto::ExecResult result;
  result.id = request.id;
  const Program program = Decode(request.program);
  const size_t num_ops = CountOps(program.ops);
  const bool cover = have_kcov_ && (request.flags & proto::kExecCover) != 0;
  // The program as the spare reads it: flags, knobs, then the program
  // encoded again, which bounds it however large the request was.
  std::vector<uint8_t> go(8);
  const uint32_t head[2] = {cover ? 1u : 0u, static_cast<uint32_t>(request.knobs.size())};
  std::memcpy(go.data(), head, sizeof(head));
  const auto* knobs = reinterpret_cast<const uint8_t*>(request.knobs.data());
  go.insert(go.end(), knobs, knobs + request.knobs.size() * sizeof(uint64_t));
  const std::vector<uint8_t> bytes = Encode(program);
  go.insert(go.end(), bytes.begin(), bytes.end());
  fresh_ = (request.flags & proto::kExecFreshProcess) != 0;
  if (fresh_) DropSpare();
  uint64_t start = 0;
  bool remote = false;
  // A spare that died while it waited (the OOM killer takes it first), before
  // it took its program, is no result of the program's: once more, afresh.
  for (int attempt = 0; attempt < 2; attempt++) {
    result = proto::ExecResult{};
    result.id = request.id;
    shared_->Reset(num_ops);
    size_t named = 0;
    NameOps(program.ops, shared_->ops, &named);
    if (cover) kcov_.Reset();
    start = MonotonicNs();
    if (attempt > 0 || spare_.pid <= 0) {
      DropSpare();
      MakeSpare(port, &result.message);
    }
    if (spare_.pid <= 0) {
      result.status = proto::Status::kExecutorError;
      return result;
    }
    const Spare spare = std::exchange(spare_, Spare{});
    // Only the driver's workers produce remote coverage, under the handle
    // the spare was forked with.
    remote = cover && spare.remote && UsesDriver(program.ops);
    Relay relay{port, spare.relay_fd};
    // A send to a spare already gone fails, or the spare dies unstarted.
    send(spare.relay_fd, go.data(), go.size(), MSG_NOSIGNAL);
    Watch(spare.pid, spare.pidfd, request, start, num_ops, &relay, &result);
    if (spare.remote) kcov_.DisableRemote();
    close(spare.relay_fd);
    if (shared_->started != 0) break;
  }
  if (shared_->started == 0) {
    // Twice: the executor's trouble, not the program's.
    result.status = proto::Status::kExecutorError;
    result.message = "the program's process died before it took the program";
  }
  result.duration_us = static_cast<uint32_t>((MonotonicNs() - start) / 1000);
  // A SIGKILL the watchdog did not send, while the kernel counted an OOM
  // kill. The count is read only then: a read costs milliseconds under TCG.
  if (result.status == proto::Status::kCrashed && result.detail == SIGKILL) {
    const uint64_t oom_kills = VmstatOomKills();
    if (oom_kills > oom_kills_) {
      result.status = proto::Status::kOomKilled;
      result.detail = 0;
    }
    oom_kills_ = oom_kills;
  }
  result.ops.assign(shared_->ops, shared_->ops + num_ops);
  const uint32_t mismatches =
      std::min<uint32_t>(shared_->num_mismatches, SharedRun::kMaxMismatches);
  result.mismatches.assign(shared_->mismatches, shared_->mismatches + mismatches);
  result.counters.assign(shared_->counters,
                         shared_->counters + std::min<size_t>(shared_->num_counters,
                                                              SharedRun::kMaxCounters));
  const size_t used = std::min<size_t>(shared_->next_kcov, kcov_.slots());
  if (cover)
    kcov_.Collect(used, request.cover_cap, &result.cover, remote ? &result.remote_cover : nullptr);
  // Traces a live task still holds cannot be enabled again: take fresh ones.
  const uint64_t busy = shared_->kcov_busy;
  const bool stuck = result.status == proto::Status::kStuck;
  for (size_t i = used; i-- > 0;)
    if (stuck || (busy >> i & 1)) kcov_.Replace(i);
  if (shared_->faults_armed) faults::Disarm();
  ReapOrphans();
  return result;
}

void Supervisor::Prepare(Port* port) {
  std::string ignored;
  if (spare_.pid <= 0 && !fresh_) MakeSpare(port, &ignored);
}

void Supervisor::MakeSpare(Port* port, std::string* error) {
  // A socket per program: a stuck task of an earlier program may still hold
  // the old one. Datagrams, so a request or reply is never torn.
  int relay_fds[2];
  if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, relay_fds) != 0) {
    *error = std::string("socketpair: ") + std::strerror(errno);
    return;
  }
  // Tasks forked meanwhile inherit a fresh remote coverage handle, so an
  // earlier program's stuck worker stays out of this one's trace.
  const bool remote = kcov_.has_remote() && kcov_.EnableRemote(++remote_handle_) == 0;
  const pid_t pid = fork();
  if (pid == 0) {
    // A group of its own, so the watchdog's kill reaches its forks too.
    setpgid(0, 0);
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    close(port->fd());
    close(relay_fds[0]);
    // Above everything else, so memory pressure kills the program first.
    const int fd = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (fd >= 0) {
      (void)!write(fd, "500", 3);
      close(fd);
    }
    InstallFaultHandlers();
    RunSpare(relay_fds[1]);
  }
  close(relay_fds[1]);
  const int pidfd = pid > 0 ? static_cast<int>(syscall(SYS_pidfd_open, pid, 0)) : -1;
  if (pidfd < 0) {
    // Without a pidfd there is no bounded wait (the guest kernel always has
    // one); the orphan reaper collects the killed process later.
    *error = std::string(pid < 0 ? "fork: " : "pidfd_open: ") + std::strerror(errno);
    if (pid > 0) kill(pid, SIGKILL);
    if (remote) kcov_.DisableRemote();
    close(relay_fds[0]);
    return;
  }
  setpgid(pid, pid);
  spare_ = Spare{pid, pidfd, relay_fds[0], remote};
}

void Supervisor::DropSpare() {
  if (spare_.pid <= 0) return;
  kill(spare_.pid, SIGKILL);
  WaitExit(spare_.pidfd, kKillGraceMs * 1000000);
  close(spare_.pidfd);
  close(spare_.relay_fd);
  if (spare_.remote) kcov_.DisableRemote();
  waitpid(spare_.pid, nullptr, WNOHANG);
  spare_ = Spare{};
}

void Supervisor::RunSpare(int relay_fd) {
  // Its program, or the executor's end closing (the executor exits).
  std::vector<uint8_t> go(64 << 10);
  ssize_t n;
  while ((n = recv(relay_fd, go.data(), go.size(), 0)) < 0 && errno == EINTR) {
  }
  uint32_t head[2];
  if (n < static_cast<ssize_t>(sizeof(head))) _exit(0);
  std::memcpy(head, go.data(), sizeof(head));
  const size_t knob_bytes = static_cast<size_t>(head[1]) * sizeof(uint64_t);
  if (knob_bytes > static_cast<size_t>(n) - sizeof(head)) _exit(1);
  std::vector<uint64_t> knobs(head[1]);
  std::memcpy(knobs.data(), go.data() + sizeof(head), knob_bytes);
  const uint8_t* program = go.data() + sizeof(head) + knob_bytes;
  const RunConfig config{head[0] != 0 ? &kcov_ : nullptr, kBufferBase, std::move(knobs), relay_fd};
  shared_->started = 1;
  RunProgram(Decode(program, static_cast<size_t>(go.data() + n - program)), shared_, config);
  _exit(0);
}

void Supervisor::Watch(pid_t pid, int pidfd, const proto::ExecRequest& request, uint64_t start,
                       size_t num_ops, Relay* relay, proto::ExecResult* result) {
  const uint64_t op_ns = static_cast<uint64_t>(request.op_timeout_ms) * 1000000;
  const uint64_t program_ms =
      request.program_timeout_ms != 0 ? request.program_timeout_ms : kDefaultProgramTimeoutMs;
  const uint64_t deadline = start + program_ms * 1000000;
  bool killed = false;
  int32_t hung_op = -1;
  // A killed process that outlasted kKilledExitMs: reported as stuck.
  pid_t stuck_pid = 0;
  // Since when each watched thread's process has been seen dying; 0: not.
  uint64_t dying_since[SharedRun::kMaxWatched] = {};
  Progress progress;
  for (;;) {
    const uint64_t now = MonotonicNs();
    uint64_t next = UINT64_MAX;
    bool overdue = now >= deadline;
    bool exiting = false;
    // An op that starts after this look ends after now + op_ns, later than
    // any deadline seen here: sleeping until `next` misses none.
    const uint32_t watched = std::min<uint32_t>(shared_->next_watch, SharedRun::kMaxWatched);
    for (uint32_t i = 0; op_ns != 0 && i < watched; i++) {
      const int32_t op = shared_->watch[i].op;
      if (op < 0) continue;
      // The program's deadline bounds a wait as a whole.
      if (Waits(static_cast<OpCode>(shared_->ops[op].code))) continue;
      uint64_t due = shared_->watch[i].start_ns + op_ns;
      // A process the program killed, or the OOM killer took, leaves its op
      // behind while it exits: the exit has its own bound. Looked at only
      // past a deadline: a read costs under TCG.
      if (due <= now || dying_since[i] != 0) {
        const Life life = ProcessLife(shared_->watch[i].pid);
        if (life == Life::kGone) {
          shared_->watch[i].op = -1;
          continue;
        }
        if (life == Life::kDying) {
          if (dying_since[i] == 0) dying_since[i] = now;
          due = std::max(due, dying_since[i] + kKilledExitMs * 1000000);
          if (due <= now) {
            stuck_pid = shared_->watch[i].pid;
            if (hung_op < 0) hung_op = op;
            overdue = true;
          } else {
            exiting = true;
          }
          next = std::min(next, due);
          continue;
        }
      }
      if (due <= now) {
        shared_->ops[op].flags |= proto::kOpTimedOut;
        if (hung_op < 0) hung_op = op;
        overdue = true;
      }
      next = std::min(next, due);
    }
    // The program's deadline waits for a killed process still exiting within
    // its bound: it is the kernel's exit path that is slow, not the program.
    if (overdue && stuck_pid == 0 && hung_op < 0 && exiting)
      overdue = false;
    else
      next = std::min(next, deadline);
    if (op_ns != 0) next = std::min(next, now + op_ns);
    // Look every window: a program opens its device file after it starts.
    if (!overdue && op_ns != 0 && shared_->device_pid == 0) {
      next = std::min(next, now + kSampleMs * 1000000);
    } else if (!overdue && op_ns != 0) {
      if (now >= progress.next_ns) {
        if (Livelocked(num_ops, &progress)) {
          hung_op = OldestRunningOp(shared_);
          if (hung_op >= 0) shared_->ops[hung_op].flags |= proto::kOpTimedOut;
          result->watchdog_deltas = progress.deltas;
          result->message = "no op completed for " +
                            std::to_string(kLivelockWindows * kSampleMs) +
                            " ms while the driver's retry loops kept going round";
          kill(-pid, SIGKILL);
          killed = true;
          break;
        }
        progress.next_ns = MonotonicNs() + kSampleMs * 1000000;
      }
      next = std::min(next, std::max(progress.next_ns, now));
    }
    if (overdue) {
      result->watchdog_deltas = ReadDriver(kSampleMs);
      kill(-pid, SIGKILL);
      killed = true;
      break;
    }
    if (WaitServing(pidfd, next - now, relay)) break;
  }
  if (stuck_pid != 0) {
    // A killed process that would not finish exiting: where its threads sleep.
    result->status = proto::Status::kStuck;
    result->detail = StuckTasks(stuck_pid, &result->message);
    WaitExit(pidfd, kKillGraceMs * 1000000);
    close(pidfd);
    return;
  }
  if (killed && !WaitExit(pidfd, kKillGraceMs * 1000000)) {
    // SIGKILL only acts when the task returns to user space; a task asleep in
    // D state or spinning in the kernel never does. Leave it and go on.
    result->status = proto::Status::kStuck;
    result->detail = StuckTasks(pid, &result->message);
    close(pidfd);
    return;
  }
  close(pidfd);
  // Forks it left behind (wait=no children of a killed process) go too.
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (killed) {
    result->status = proto::Status::kHung;
    result->detail = hung_op;
  } else if (WIFSIGNALED(status)) {
    result->status = proto::Status::kCrashed;
    result->detail = WTERMSIG(status);
  } else if (WEXITSTATUS(status) != 0) {
    result->status = proto::Status::kExecutorError;
    result->detail = WEXITSTATUS(status);
    result->message = "program process exited with " + std::to_string(WEXITSTATUS(status));
  }
}

bool Supervisor::WaitServing(int pidfd, uint64_t timeout_ns, Relay* relay) {
  const uint64_t end = MonotonicNs() + timeout_ns;
  for (;;) {
    const uint64_t now = MonotonicNs();
    if (now >= end) return false;
    // The port only while the host owes a reply: between requests anything
    // it sends is for the request loop.
    const bool host = relay->waiting != 0 && !relay->host_gone;
    pollfd p[3] = {{pidfd, POLLIN, 0},
                   {relay->program_fd, POLLIN, 0},
                   {host ? relay->port->fd() : -1, POLLIN, 0}};
    const int ms =
        static_cast<int>(std::min<uint64_t>((end - now + 999999) / 1000000, INT32_MAX));
    const int n = poll(p, 3, ms);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    if (p[0].revents != 0) return true;
    if (p[1].revents & POLLIN) {
      FromProgram(relay);
    } else if (p[1].revents != 0) {
      relay->program_fd = -1;  // every process of the program closed it
    }
    if (p[2].revents != 0) FromHost(relay);
  }
}

void Supervisor::FromProgram(Relay* relay) {
  std::vector<uint8_t> payload(64);
  const ssize_t n = recv(relay->program_fd, payload.data(), payload.size(), MSG_DONTWAIT);
  if (n <= 0) return;
  payload.resize(static_cast<size_t>(n));
  proto::DeviceRequest request;
  proto::DeviceReply reply;
  reply.status = proto::kDeviceUnavailable;
  if (!proto::Decode(payload, &request) || relay->host_gone) {
    Answer(relay, reply);
    return;
  }
  if (++device_seq_ == 0) device_seq_ = 1;  // 0 means none waiting
  request.seq = device_seq_;
  if (!relay->port->Send(proto::MsgType::kDevice, proto::Encode(request))) {
    relay->host_gone = true;
    Answer(relay, reply);
    return;
  }
  relay->waiting = request.seq;
}

void Supervisor::FromHost(Relay* relay) {
  if (!relay->port->ReadOnce()) {
    relay->host_gone = true;
    proto::DeviceReply reply;
    reply.status = proto::kDeviceUnavailable;
    Answer(relay, reply);
    return;
  }
  proto::Frame frame;
  Port::Got got;
  while (relay->port->TakeRead(&frame, &got)) {
    proto::DeviceReply reply;
    if (got == Port::Got::kFrame && frame.type == proto::MsgType::kDeviceReply &&
        proto::Decode(frame.payload, &reply)) {
      // A reply to an earlier request (its program was killed) is dropped.
      if (reply.seq == relay->waiting) Answer(relay, reply);
    } else {
      relay->port->Defer(frame, got);
    }
  }
}

void Supervisor::Answer(Relay* relay, const proto::DeviceReply& reply) {
  relay->waiting = 0;
  if (relay->program_fd < 0) return;
  const std::vector<uint8_t> bytes = proto::Encode(reply);
  send(relay->program_fd, bytes.data(), bytes.size(), MSG_DONTWAIT | MSG_NOSIGNAL);
}

std::vector<uint64_t> Supervisor::ReadDriver(uint64_t sample_ms) {
  const pid_t owner = shared_->device_pid;
  const int fd = shared_->device_fd;
  if (owner == 0 || fd < 0) return {};
  // Through the program's own file, taken from its process: a file of our
  // own would bind the executor's address space and take a device context.
  const int pidfd = static_cast<int>(syscall(SYS_pidfd_open, owner, 0));
  if (pidfd < 0) return {};
  const int file = static_cast<int>(syscall(SYS_pidfd_getfd, pidfd, fd, 0));
  close(pidfd);
  if (file < 0) return {};
  std::vector<uint64_t> counters = DriverCounters(file);
  if (!counters.empty() && sample_ms != 0) {
    usleep(sample_ms * 1000);
    counters = Deltas(counters, DriverCounters(file));
  }
  close(file);
  return counters;
}

bool Supervisor::Livelocked(size_t num_ops, Progress* progress) {
  uint32_t done = 0;
  for (size_t i = 0; i < num_ops; i++) done += (shared_->ops[i].flags & proto::kOpDone) != 0;
  std::vector<uint64_t> counters = ReadDriver(0);
  const bool first = progress->counters.empty();
  progress->deltas = first ? std::vector<uint64_t>() : Deltas(progress->counters, counters);
  uint64_t retries = 0;
  for (const size_t c : {SVMDEV_CTR_HMM_BUSY, SVMDEV_CTR_READ_RETRY, SVMDEV_CTR_EXCL_RETRY})
    if (c < progress->deltas.size()) retries += progress->deltas[c];
  const bool stalled = !first && done == progress->done && retries >= kLivelockRetries;
  progress->stalled = stalled ? progress->stalled + 1 : 0;
  progress->done = done;
  progress->counters = std::move(counters);
  return progress->stalled >= kLivelockWindows;
}

void Supervisor::ReapOrphans() {
  // Also the stuck programs of earlier runs, once they finally die.
  int status;
  while (waitpid(-1, &status, WNOHANG) > 0) {
  }
}

}  // namespace svmfuzz
