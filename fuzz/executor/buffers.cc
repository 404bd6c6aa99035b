#include "executor/buffers.h"

#include <sys/mman.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "executor/guarded_access.h"
#include "protocol/protocol.h"

namespace svmfuzz {
namespace {

constexpr uint64_t kWordsPerPage = kPageSize / 8;

uint64_t RoundUp(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

// Linux 5.14 and 6.1 values, for C libraries older than them.
constexpr int kMadvPopulateRead = 22;
constexpr int kMadvPopulateWrite = 23;
constexpr int kMadvCollapse = 25;

int AdviceCode(Advice a) {
  switch (a) {
    case Advice::kDontneed: return MADV_DONTNEED;
    case Advice::kFree: return MADV_FREE;
    case Advice::kPageout: return MADV_PAGEOUT;
    case Advice::kCold: return MADV_COLD;
    case Advice::kHugepage: return MADV_HUGEPAGE;
    case Advice::kNohugepage: return MADV_NOHUGEPAGE;
    case Advice::kWillneed: return MADV_WILLNEED;
    case Advice::kPopulateRead: return kMadvPopulateRead;
    case Advice::kPopulateWrite: return kMadvPopulateWrite;
    case Advice::kCollapse: return kMadvCollapse;
  }
  return MADV_NORMAL;
}

uint64_t BytesFor(MapKind kind, uint64_t pages) {
  const uint64_t bytes = pages * kPageSize;
  return kind == MapKind::kHugetlb ? RoundUp(bytes, kHugePageSize) : bytes;
}

}  // namespace

uint64_t PatternWord(uint32_t seed, uint64_t word) {
  // splitmix64 of (seed, word): every word of every seed differs, cheaply.
  uint64_t x = (static_cast<uint64_t>(seed) << 32 ^ word) + 0x9e3779b97f4a7c15ull;
  x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
  x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
  return x ^ (x >> 31);
}

Buffers::Buffers(uintptr_t base) : base_(base) {}

void Buffers::Faulted(int sig, OpOutcome* out) {
  out->err = EFAULT;
  out->ret = sig;
  out->flags |= proto::kOpAccessFault;
}

bool Buffers::ResolveLocked(uint64_t id, uint64_t off, uint64_t n, Range* r, OpOutcome* out) {
  const Buffer& b = buf_[id];
  if (b.addr == nullptr || off >= b.pages) {
    // The program thinks it is mapped; an earlier failed op left it otherwise.
    out->err = EFAULT;
    out->flags |= proto::kOpSkipped;
    return false;
  }
  r->id = id;
  r->first = off;
  r->count = std::min(n, b.pages - off);
  r->clipped = r->count < n;
  r->addr = b.addr + off * kPageSize;
  r->incarnation = b.incarnation;
  r->mapped.resize(r->count);
  for (uint64_t i = 0; i < r->count; i++) {
    r->mapped[i] = b.page[off + i].state != State::kUnmapped;
    r->clipped |= !r->mapped[i];
  }
  return true;
}

bool Buffers::Resolve(uint64_t id, uint64_t off, uint64_t n, Range* r, OpOutcome* out) {
  std::lock_guard<std::mutex> lock(mu_);
  return ResolveLocked(id, off, n, r, out);
}

void Buffers::BeginChange(const Range& r) {
  std::lock_guard<std::mutex> lock(mu_);
  Buffer& b = buf_[r.id];
  // A change resolved before the buffer was mapped again writes through the
  // same addresses into the new mapping.
  const bool stale = b.incarnation != r.incarnation;
  for (uint64_t i = 0; i < r.count; i++) {
    Page& p = b.page[r.first + i];
    if (p.inflight++ > 0 || stale) p.conflict = true;
    p.gen++;
  }
}

void Buffers::EndChange(const Range& r, uint64_t upto, bool torn, State state, uint32_t seed,
                        bool add_one) {
  std::lock_guard<std::mutex> lock(mu_);
  Buffer& b = buf_[r.id];
  const bool stale = b.incarnation != r.incarnation;
  for (uint64_t i = 0; i < r.count; i++) {
    Page& p = b.page[r.first + i];
    p.inflight--;
    p.gen++;
    if (p.state == State::kUnmapped) {
      // Stays unmapped: nothing this op did maps it again.
    } else if (stale) {
      // Begun on an earlier mapping of the buffer: it may have written the
      // new one at the same address.
      p.state = State::kUnknown;
    } else if (state == State::kUnmapped && i < upto) {
      p.state = State::kUnmapped;
    } else if (p.conflict || (torn && i == upto)) {
      p.state = State::kUnknown;
    } else if (i < upto && add_one) {
      p.add0++;
    } else if (i < upto) {
      p.state = state;
      p.seed = seed;
      p.add0 = 0;
    }
    if (p.inflight == 0) p.conflict = false;
  }
}

void Buffers::UnmapLocked(Buffer* b) {
  munmap(b->addr, b->map_bytes);
  ForgetLocked(b);
}

void Buffers::ForgetLocked(Buffer* b) {
  if (b->memfd >= 0) close(b->memfd);
  b->addr = nullptr;
  b->map_bytes = b->pages = 0;
  b->memfd = -1;
  b->foreign = 0;
  b->incarnation++;
  for (Page& p : b->page) {
    p.state = State::kUnmapped;
    p.gen++;
  }
}

OpOutcome Buffers::Mmap(uint64_t id, uint64_t pages, MapKind kind, int prot) {
  OpOutcome out;
  std::lock_guard<std::mutex> lock(mu_);
  Buffer& b = buf_[id];
  // A munmap the program counted as whole may have failed (hugetlb alignment):
  // the id is reused, so the old mapping goes.
  if (b.addr != nullptr) UnmapLocked(&b);
  const uint64_t bytes = BytesFor(kind, pages);
  int flags = MAP_FIXED_NOREPLACE;
  int fd = -1;
  switch (kind) {
    case MapKind::kAnon:
    case MapKind::kHuge:
      flags |= MAP_PRIVATE | MAP_ANONYMOUS;
      break;
    case MapKind::kShared:
      flags |= MAP_SHARED | MAP_ANONYMOUS;
      break;
    case MapKind::kHugetlb:
      flags |= MAP_PRIVATE | MAP_ANONYMOUS | MAP_HUGETLB;
      break;
    case MapKind::kFile:
    case MapKind::kFileShared:
      // A tmpfs file as large as any buffer can grow, so mremap never runs past its end.
      fd = memfd_create("svmfuzz-buffer", MFD_CLOEXEC);
      if (fd < 0 || ftruncate(fd, static_cast<off_t>(kMaxPages * kPageSize)) != 0) {
        out.err = errno;
        if (fd >= 0) close(fd);
        return out;
      }
      flags |= kind == MapKind::kFile ? MAP_PRIVATE : MAP_SHARED;
      break;
  }
  void* const want = reinterpret_cast<void*>(base_ + id * kSlotSize);
  void* p = mmap(want, bytes, prot, flags, fd, 0);
  if (p == MAP_FAILED || p != want) {
    out.err = p == MAP_FAILED ? errno : EEXIST;
    if (p != MAP_FAILED) munmap(p, bytes);
    if (fd >= 0) close(fd);
    return out;
  }
  if (kind == MapKind::kHuge) madvise(p, bytes, MADV_HUGEPAGE);
  b.page.resize(kMaxPages);
  b.addr = static_cast<uint8_t*>(p);
  b.map_bytes = bytes;
  b.pages = pages;
  b.kind = kind;
  b.memfd = fd;
  b.foreign = 0;
  b.incarnation++;
  for (uint64_t i = 0; i < kMaxPages; i++) {
    b.page[i].state = i < pages ? State::kZero : State::kUnmapped;
    b.page[i].add0 = 0;
    // A change of the old mapping still under way counts on in the new one:
    // it writes the same addresses.
    b.page[i].conflict = b.page[i].inflight > 0;
    b.page[i].gen++;
  }
  return out;
}

OpOutcome Buffers::Munmap(uint64_t id, uint64_t off, uint64_t n) {
  OpOutcome out;
  Range r;
  uint64_t len;
  bool whole;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ResolveLocked(id, off, n, &r, &out)) return out;
    whole = r.first == 0 && r.count == buf_[id].pages;
    len = whole ? buf_[id].map_bytes : r.count * kPageSize;
  }
  BeginChange(r);
  const int rc = munmap(r.addr, len);
  out.err = rc == 0 ? 0 : errno;
  EndChange(r, rc == 0 ? r.count : 0, false, State::kUnmapped, 0);
  if (rc == 0 && whole) {
    std::lock_guard<std::mutex> lock(mu_);
    Buffer& b = buf_[id];
    if (b.incarnation == r.incarnation) ForgetLocked(&b);
  }
  return out;
}

OpOutcome Buffers::Mprotect(uint64_t id, uint64_t off, uint64_t n, int prot) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  // Protection is not shadowed: a check that meets a page it cannot read
  // faults and skips it.
  if (mprotect(r.addr, r.count * kPageSize, prot) != 0) out.err = errno;
  return out;
}

OpOutcome Buffers::Madvise(uint64_t id, uint64_t off, uint64_t n, Advice advice) {
  OpOutcome out;
  Range r, wide;
  MapKind kind;
  const bool drops = advice == Advice::kDontneed || advice == Advice::kFree;
  // What the kernel drops of a hugetlb range that is not whole huge pages
  // depends on its version (the end rounded up to the huge page, or down, so
  // that nothing is dropped): the shadow claims nothing of the huge pages
  // such a range touches.
  bool partial_huge = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!ResolveLocked(id, off, n, &r, &out)) return out;
    kind = buf_[id].kind;
    wide = r;
    constexpr uint64_t kPer = kHugePageSize / kPageSize;
    partial_huge = drops && kind == MapKind::kHugetlb && (r.first % kPer || r.count % kPer);
    if (partial_huge) {
      const uint64_t first = r.first / kPer * kPer;
      const uint64_t end = std::min((r.first + r.count + kPer - 1) / kPer * kPer, buf_[id].pages);
      ResolveLocked(id, first, end - first, &wide, &out);
    }
  }
  BeginChange(wide);
  const int rc = madvise(r.addr, r.count * kPageSize, AdviceCode(advice));
  out.err = rc == 0 ? 0 : errno;
  if (!drops || (rc == 0 && Shared(kind))) {
    // Content unchanged: shared pages stay in the page cache.
    EndChange(wide, 0, false, State::kUnknown, 0);
  } else {
    // Dropped private pages read as zero (the file, or nothing, behind them);
    // MADV_FREE pages may or may not be reclaimed; a failed drop may have
    // dropped part of the range.
    const bool zero = rc == 0 && advice == Advice::kDontneed && !partial_huge;
    EndChange(wide, wide.count, false, zero ? State::kZero : State::kUnknown, 0);
  }
  return out;
}

OpOutcome Buffers::Mremap(uint64_t id, uint64_t pages, bool may_move) {
  OpOutcome out;
  Range r;
  uint64_t old_bytes, new_bytes;
  {
    std::lock_guard<std::mutex> lock(mu_);
    Buffer& b = buf_[id];
    if (!ResolveLocked(id, 0, b.pages, &r, &out)) return out;
    old_bytes = b.map_bytes;
    new_bytes = BytesFor(b.kind, pages);
  }
  BeginChange(r);
  void* p = mremap(r.addr, old_bytes, new_bytes, may_move ? MREMAP_MAYMOVE : 0);
  out.err = p == MAP_FAILED ? errno : 0;
  EndChange(r, 0, false, State::kUnknown, 0);  // the pages kept keep their content
  if (p == MAP_FAILED) return out;
  std::lock_guard<std::mutex> lock(mu_);
  Buffer& b = buf_[id];
  if (b.incarnation != r.incarnation) return out;
  const uint64_t old_pages = b.pages;
  b.addr = static_cast<uint8_t*>(p);
  b.map_bytes = new_bytes;
  b.pages = pages;
  for (uint64_t i = std::min(old_pages, pages); i < std::max(old_pages, pages); i++) {
    // Grown pages read as zero (a shared anonymous object's new tail faults
    // instead, which checks skip); shrunk pages are gone.
    b.page[i].state = i < pages ? State::kZero : State::kUnmapped;
    b.page[i].add0 = 0;
    b.page[i].gen++;
  }
  return out;
}

OpOutcome Buffers::Touch(uint64_t id, uint64_t off, uint64_t n, std::vector<PageMismatch>* bad) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  if (const int sig = Guarded([&] {
        for (uint64_t i = 0; i < r.count; i++)
          if (r.mapped[i]) (void)*reinterpret_cast<volatile uint8_t*>(r.addr + i * kPageSize);
      })) {
    Faulted(sig, &out);
  }
  return Finish(r, bad, out);
}

OpOutcome Buffers::Read(uint64_t id, uint64_t off, uint64_t n, std::vector<PageMismatch>* bad) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  uint64_t sum = 0;
  if (const int sig = Guarded([&] {
        for (uint64_t i = 0; i < r.count; i++) {
          if (!r.mapped[i]) continue;
          auto* w = reinterpret_cast<volatile uint64_t*>(r.addr + i * kPageSize);
          for (uint64_t k = 0; k < kWordsPerPage; k++) sum += w[k];
        }
      })) {
    Faulted(sig, &out);
  }
  return Finish(r, bad, out);
}

OpOutcome Buffers::Write(uint64_t id, uint64_t off, uint64_t n, uint32_t seed,
                       std::vector<PageMismatch>* bad) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  BeginChange(r);
  volatile uint64_t next = 0;  // the page being written when a fault stops us
  const int sig = Guarded([&] {
    for (uint64_t i = 0; i < r.count; i++) {
      next = i;
      if (!r.mapped[i]) continue;
      auto* w = reinterpret_cast<volatile uint64_t*>(r.addr + i * kPageSize);
      const uint64_t word0 = (r.first + i) * kWordsPerPage;
      for (uint64_t k = 0; k < kWordsPerPage; k++) w[k] = PatternWord(seed, word0 + k);
    }
    next = r.count;
  });
  if (sig) Faulted(sig, &out);
  EndChange(r, next, sig != 0, State::kPattern, seed);
  return Finish(r, bad, out);
}

OpOutcome Buffers::Verify(uint64_t id, uint64_t off, uint64_t n, uint32_t seed,
                        std::vector<PageMismatch>* bad) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  int64_t differ = 0;
  // Pages found equal to pattern(seed): the check after it skips them.
  std::vector<uint8_t> equal(r.count, 0);
  if (const int sig = Guarded([&] {
        for (uint64_t i = 0; i < r.count; i++) {
          if (!r.mapped[i]) continue;
          auto* w = reinterpret_cast<volatile uint64_t*>(r.addr + i * kPageSize);
          const uint64_t word0 = (r.first + i) * kWordsPerPage;
          const int64_t before = differ;
          for (uint64_t k = 0; k < kWordsPerPage; k++) {
            const uint64_t x = w[k] ^ PatternWord(seed, word0 + k);
            // Most words match: the bytes are counted only where one differs.
            if (x != 0)
              for (int j = 0; j < 8; j++) differ += ((x >> (8 * j)) & 0xff) != 0;
          }
          equal[i] = differ == before;
        }
      })) {
    Faulted(sig, &out);
  }
  out.ret = out.err ? out.ret : differ;
  if (out.err == 0 && differ != 0) out.err = EILSEQ;
  return Finish(r, bad, out, &equal, seed);
}

bool Buffers::Differs(const volatile uint64_t* src, const Page& seen, uint64_t page,
                      uint64_t* word, uint64_t* expected, uint64_t* actual) {
  for (uint64_t k = 0; k < kWordsPerPage; k++) {
    uint64_t e =
        seen.state == State::kZero ? 0 : PatternWord(seen.seed, page * kWordsPerPage + k);
    if (k == 0) e += seen.add0;
    const uint64_t a = src[k];
    if (a != e) {
      *word = k;
      *expected = e;
      *actual = a;
      return true;
    }
  }
  return false;
}

void Buffers::ReportIfStable(const Range& r, uint64_t page, const Page& seen, uint64_t word,
                             uint64_t expected, uint64_t actual,
                             std::vector<PageMismatch>* bad) {
  std::lock_guard<std::mutex> lock(mu_);
  const Buffer& b = buf_[r.id];
  const Page& now = b.page[page];
  // Changed while we looked: what we saw proves nothing.
  if (b.incarnation != r.incarnation || b.foreign > 0 || now.gen != seen.gen ||
      now.inflight > 0)
    return;
  int j = 0;
  while (((expected ^ actual) >> (8 * j) & 0xff) == 0) j++;
  bad->push_back({static_cast<uint16_t>(r.id), static_cast<uint32_t>(page),
                  static_cast<uint16_t>(word * 8 + j), static_cast<uint8_t>(expected >> (8 * j)),
                  static_cast<uint8_t>(actual >> (8 * j))});
}

OpOutcome Buffers::Finish(const Range& r, std::vector<PageMismatch>* bad, OpOutcome out,
                          const std::vector<uint8_t>* verified, uint32_t seed) {
  Check(r, bad, verified, seed);
  if (r.clipped && out.err == 0) {
    out.err = EFAULT;
    out.flags |= proto::kOpSkipped;
  }
  return out;
}

void Buffers::Check(const Range& r, std::vector<PageMismatch>* bad,
                    const std::vector<uint8_t>* verified, uint32_t seed) {
  for (uint64_t i = 0; i < r.count; i++) {
    if (!r.mapped[i]) continue;
    const uint64_t page = r.first + i;
    Page seen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      const Buffer& b = buf_[r.id];
      if (b.incarnation != r.incarnation || b.foreign > 0) return;
      seen = b.page[page];
    }
    if (seen.inflight > 0 || (seen.state != State::kZero && seen.state != State::kPattern))
      continue;
    // Read a moment ago and equal to what the shadow says.
    if (verified != nullptr && (*verified)[i] && seen.state == State::kPattern &&
        seen.seed == seed && seen.add0 == 0)
      continue;
    auto* src = reinterpret_cast<volatile uint64_t*>(r.addr + i * kPageSize);
    uint64_t word = 0, expected = 0, actual = 0;
    bool differs = false;
    if (Guarded([&] { differs = Differs(src, seen, page, &word, &expected, &actual); }) != 0)
      continue;
    if (differs) ReportIfStable(r, page, seen, word, expected, actual, bad);
  }
}

OpOutcome Buffers::OnRange(uint64_t id, uint64_t off, uint64_t n, const RangeFn& fn) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  out = fn(r.addr, r.count);
  if (r.clipped) out.flags |= proto::kOpSkipped;
  return out;
}

OpOutcome Buffers::OnPages(uint64_t id, uint64_t off, uint64_t n, DeviceEffect effect,
                         uint32_t seed, const PageFn& fn, std::vector<PageMismatch>* bad) {
  OpOutcome out;
  Range r;
  if (!Resolve(id, off, n, &r, &out)) return out;
  const bool changes = effect != DeviceEffect::kRead;
  if (changes) BeginChange(r);
  alignas(8) uint8_t data[kPageSize];
  uint64_t i = 0;
  int err = 0;
  for (; i < r.count; i++) {
    if (!r.mapped[i]) continue;
    const uint64_t page = r.first + i;
    if (effect == DeviceEffect::kWrite) {
      auto* w = reinterpret_cast<uint64_t*>(data);
      for (uint64_t k = 0; k < kWordsPerPage; k++) w[k] = PatternWord(seed, page * kWordsPerPage + k);
    }
    Page seen;
    {
      std::lock_guard<std::mutex> lock(mu_);
      seen = buf_[id].page[page];
    }
    if ((err = fn(r.addr + i * kPageSize, page, data)) != 0) break;
    uint64_t word = 0, expected = 0, actual = 0;
    if (effect == DeviceEffect::kRead && seen.inflight == 0 &&
        (seen.state == State::kZero || seen.state == State::kPattern) &&
        Differs(reinterpret_cast<uint64_t*>(data), seen, page, &word, &expected, &actual)) {
      ReportIfStable(r, page, seen, word, expected, actual, bad);
    }
  }
  if (changes) {
    const State after = effect == DeviceEffect::kWrite ? State::kPattern : State::kUnknown;
    EndChange(r, i, err != 0, after, seed, effect == DeviceEffect::kAdd);
  }
  out.err = err;
  out.ret = static_cast<int64_t>(i);
  if (r.clipped) {
    out.flags |= proto::kOpSkipped;
    if (out.err == 0) out.err = EFAULT;
  }
  return out;
}

void Buffers::CheckAll(std::vector<PageMismatch>* bad) {
  for (uint64_t id = 0; id < kMaxBuffers; id++) {
    Range r;
    OpOutcome ignored;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (buf_[id].addr == nullptr || !ResolveLocked(id, 0, buf_[id].pages, &r, &ignored))
        continue;
    }
    Check(r, bad);
  }
}

Buffers::ForkToken Buffers::BeforeFork(const std::vector<uint64_t>& child_writes) {
  mu_.lock();
  ForkToken token;
  for (uint64_t id : child_writes) {
    Buffer& b = buf_[id];
    if (b.addr == nullptr || !Shared(b.kind)) continue;
    b.foreign++;
    token.shared.emplace_back(id, b.incarnation);
  }
  return token;
}

void Buffers::AfterForkParent() { mu_.unlock(); }

void Buffers::AfterForkChild() {
  for (Buffer& b : buf_) {
    // The parent goes on writing shared buffers without telling the child.
    if (b.addr != nullptr && Shared(b.kind)) b.foreign = 1;
    for (Page& p : b.page) {
      // Changes the parent's other threads had under way never end here.
      if (p.inflight > 0 && p.state != State::kUnmapped) p.state = State::kUnknown;
      p.inflight = 0;
      p.conflict = false;
    }
  }
  mu_.unlock();
}

void Buffers::ChildGone(const ForkToken& token) {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& [id, incarnation] : token.shared) {
    Buffer& b = buf_[id];
    if (b.incarnation != incarnation || b.foreign == 0) continue;
    b.foreign--;
    for (Page& p : b.page) {
      if (p.state != State::kUnmapped) p.state = State::kUnknown;
      p.gen++;
    }
  }
}

}  // namespace svmfuzz
