#include "executor/kcov.h"

#include <fcntl.h>
#include <linux/kcov.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

namespace svmfuzz {
namespace {

constexpr const char* kKcovPath = "/sys/kernel/debug/kcov";
constexpr unsigned long kTracePc = 0;  // KCOV_TRACE_PC

}  // namespace

Kcov::~Kcov() {
  for (Trace& t : traces_) CloseTrace(&t);
  CloseTrace(&remote_);
}

bool Kcov::OpenTrace(Trace* t) {
  t->fd = open(kKcovPath, O_RDWR | O_CLOEXEC);
  if (t->fd < 0) return false;
  if (ioctl(t->fd, KCOV_INIT_TRACE, words_) == 0) {
    void* p = mmap(nullptr, words_ * 8, PROT_READ | PROT_WRITE, MAP_SHARED, t->fd, 0);
    if (p != MAP_FAILED) {
      // The kernel writes a trace through its own mapping; only the executor
      // reads it. Not copying megabytes of page table into every forked
      // program is most of what a fork costs under TCG.
      madvise(p, words_ * 8, MADV_DONTFORK);
      t->area = static_cast<uint64_t*>(p);
      return true;
    }
  }
  CloseTrace(t);
  return false;
}

void Kcov::CloseTrace(Trace* t) {
  if (t->area != nullptr) munmap(t->area, words_ * 8);
  if (t->fd >= 0) close(t->fd);
  *t = Trace{};
}

bool Kcov::Open(size_t slots, size_t words) {
  words_ = words;
  for (size_t i = 0; i < slots; i++) {
    Trace t;
    if (!OpenTrace(&t)) break;
    traces_.push_back(t);
  }
  if (traces_.empty()) return false;
  // Only a kernel with remote coverage accepts KCOV_REMOTE_ENABLE.
  if (OpenTrace(&remote_)) {
    if (EnableRemote(1) == 0)
      DisableRemote();
    else
      CloseTrace(&remote_);
  }
  return true;
}

int Kcov::EnableThread(size_t slot) {
  return ioctl(traces_[slot].fd, KCOV_ENABLE, kTracePc) == 0 ? 0 : errno;
}

void Kcov::DisableThread(size_t slot) { ioctl(traces_[slot].fd, KCOV_DISABLE, 0); }

int Kcov::EnableRemote(uint64_t handle) {
  struct kcov_remote_arg arg = {};
  arg.trace_mode = kTracePc;
  arg.area_size = static_cast<uint32_t>(words_);
  arg.num_handles = 0;
  arg.common_handle = KCOV_SUBSYSTEM_COMMON | (handle & KCOV_INSTANCE_MASK);
  return ioctl(remote_.fd, KCOV_REMOTE_ENABLE, &arg) == 0 ? 0 : errno;
}

void Kcov::DisableRemote() { ioctl(remote_.fd, KCOV_DISABLE, 0); }

void Kcov::Reset() {
  for (Trace& t : traces_) __atomic_store_n(&t.area[0], 0, __ATOMIC_RELAXED);
  if (has_remote()) __atomic_store_n(&remote_.area[0], 0, __ATOMIC_RELAXED);
}

void Kcov::CollectTrace(const Trace& t, size_t cap, std::vector<uint64_t>* out) {
  const uint64_t n = std::min<uint64_t>(__atomic_load_n(&t.area[0], __ATOMIC_RELAXED), words_ - 1);
  uint64_t last = 0;
  for (uint64_t i = 1; i <= n && out->size() < cap; i++) {
    const uint64_t pc = t.area[i];
    // A loop traces the same block over and over: no need to look it up.
    if (pc == last) continue;
    last = pc;
    if (seen_.Insert(pc)) out->push_back(pc);
  }
}

void Kcov::Collect(size_t used, size_t cap, std::vector<uint64_t>* cover,
                   std::vector<uint64_t>* remote) {
  // A set rather than a sort: a program traces tens of thousands of PCs
  // under KCOV_INSTRUMENT_ALL, and the guest CPU is emulated.
  seen_.Clear();
  for (size_t i = 0; i < std::min(used, traces_.size()); i++) CollectTrace(traces_[i], cap, cover);
  if (remote == nullptr) return;
  seen_.Clear();
  CollectTrace(remote_, cap, remote);
}

void Kcov::Replace(size_t slot) {
  // munmap/close only drop our references; the stuck task keeps its own.
  CloseTrace(&traces_[slot]);
  if (!OpenTrace(&traces_[slot])) {
    // Out of kcov memory: fewer threads get coverage from now on.
    for (size_t i = slot + 1; i < traces_.size(); i++) CloseTrace(&traces_[i]);
    traces_.resize(slot);
  }
}

}  // namespace svmfuzz
