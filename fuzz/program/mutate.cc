#include "program/mutate.h"

#include <algorithm>
#include <array>
#include <optional>
#include <utility>

#include "program/binary.h"
#include "program/validate.h"

namespace svmfuzz {
namespace {

// Where an op is, or where one may be inserted: index `index` of `block`
// (index == block->size() is the block's end), with the scope before it.
struct Site {
  std::vector<Op>* block;
  size_t index;
  int depth;
  Scope scope;
};

// Walks `ops` as Validate() does. `slots`: insertion points, each block's end
// included; otherwise the ops themselves.
void CollectSites(std::vector<Op>* ops, Scope scope, int depth, bool slots,
                  std::vector<Site>* out) {
  for (size_t i = 0;; i++) {
    if (i < ops->size() || slots) out->push_back({ops, i, depth, scope});
    if (i == ops->size()) break;
    Op& op = (*ops)[i];
    if (Describe(op.code).has_body) CollectSites(&op.body, scope.ForChild(), depth + 1, slots, out);
    scope.Apply(op);
  }
}

std::vector<Site> Sites(Program* p, bool slots) {
  std::vector<Site> sites;
  CollectSites(&p->ops, Scope(), 0, slots, &sites);
  return sites;
}

// Ids some op of the program names: new ids are taken from the others first,
// so that a new mmap or thread_create does not capture a later op's id.
struct Used {
  std::array<bool, kMaxBuffers> buffers{};
  std::array<bool, kMaxThreads> threads{};
  std::array<bool, kMaxFiles> files{};

  void Add(const std::vector<Op>& ops) {
    for (const Op& op : ops) {
      const OpDesc& d = Describe(op.code);
      if (op.thread < kMaxThreads) threads[op.thread] = true;
      if (d.uses_file && op.file < kMaxFiles) files[op.file] = true;
      for (int i = 0; i < d.num_args; i++) {
        const uint64_t v = op.args[i];
        switch (d.args[i].kind) {
          case ArgKind::kNewBuffer:
          case ArgKind::kBuffer:
            if (v < kMaxBuffers) buffers[v] = true;
            break;
          case ArgKind::kNewThread:
          case ArgKind::kThread:
            if (v < kMaxThreads) threads[v] = true;
            break;
          case ArgKind::kNewFile:
            if (v < kMaxFiles) files[v] = true;
            break;
          default:
            break;
        }
      }
      Add(op.body);
    }
  }
};

// Values Encode() can write and Decode() then reduces: known opcodes, thread
// and file within their fields of the thread byte, no stray arguments or
// bodies.
void Sanitize(std::vector<Op>* ops) {
  ops->erase(std::remove_if(ops->begin(), ops->end(),
                            [](const Op& op) { return static_cast<size_t>(op.code) >= kNumOps; }),
             ops->end());
  for (Op& op : *ops) {
    const OpDesc& d = Describe(op.code);
    if (op.thread >= kMaxThreads) op.thread = 0;
    if (!d.uses_file || op.file >= kMaxFiles) op.file = 0;
    for (int i = d.num_args; i < kMaxArgs; i++) op.args[i] = 0;
    if (d.has_body) {
      Sanitize(&op.body);
    } else {
      op.body.clear();
    }
  }
}

size_t EncodedSize(const std::vector<Op>& ops) {
  size_t n = 0;
  for (const Op& op : ops) {
    const OpDesc& d = Describe(op.code);
    n += 2;
    for (int i = 0; i < d.num_args; i++) n += ArgWidth(d.args[i]);
    if (d.has_body) n += EncodedSize(op.body) + 1;
  }
  return n;
}

// Removes the op that comes last in program order.
void PopLast(std::vector<Op>* ops) {
  if (!ops->back().body.empty()) {
    PopLast(&ops->back().body);
  } else {
    ops->pop_back();
  }
}

bool IsReference(ArgKind kind) {
  switch (kind) {
    case ArgKind::kNewBuffer:
    case ArgKind::kBuffer:
    case ArgKind::kNewThread:
    case ArgKind::kThread:
    case ArgKind::kNewFile:
    case ArgKind::kChild:
      return true;
    default:
      return false;
  }
}

// The ids an argument of a reference kind may take in `scope`.
std::vector<uint64_t> Ids(ArgKind kind, const Scope& scope) {
  switch (kind) {
    case ArgKind::kNewBuffer: return scope.FreeBuffers();
    case ArgKind::kBuffer: return scope.MappedBuffers();
    case ArgKind::kNewThread: return scope.FreeThreads();
    case ArgKind::kThread: return scope.RunningThreads();
    case ArgKind::kNewFile: return scope.FreeFiles();
    case ArgKind::kChild: {
      std::vector<uint64_t> children(scope.Children());
      for (uint64_t c = 0; c < children.size(); c++) children[c] = c;
      return children;
    }
    default: return {};
  }
}

template <typename T>
std::vector<T> Without(std::vector<T> v, T x) {
  v.erase(std::remove(v.begin(), v.end(), x), v.end());
  return v;
}

constexpr Mutation kKinds[] = {
    Mutation::kInsert,      Mutation::kDelete,    Mutation::kDuplicate, Mutation::kSwap,
    Mutation::kMove,        Mutation::kArg,       Mutation::kRetagThread, Mutation::kRetagFile,
    Mutation::kWrap,        Mutation::kUnwrap,    Mutation::kSplice,    Mutation::kInsertSlice,
};
static_assert(sizeof(kKinds) / sizeof(kKinds[0]) == kNumMutations, "one entry per Mutation");
// Argument changes and insertions are the small steps most new coverage
// comes from; the big structural ones are rarer so that a good program is
// not torn apart every time.
constexpr unsigned kWeights[] = {20, 10, 6, 6, 6, 25, 6, 5, 4, 3, 5, 5};
static_assert(sizeof(kWeights) / sizeof(kWeights[0]) == kNumMutations, "one weight per Mutation");

// What one Apply() call works with: the random stream and the program.
class Step {
 public:
  Step(Mutator* rng, Program* program) : rng_(rng), p_(program) { used_.Add(program->ops); }

  bool Run(Mutation kind, const Program* other) {
    switch (kind) {
      case Mutation::kInsert: return Insert();
      case Mutation::kDelete: return Delete();
      case Mutation::kDuplicate: return Duplicate();
      case Mutation::kSwap: return Swap();
      case Mutation::kMove: return Move();
      case Mutation::kArg: return Arg();
      case Mutation::kRetagThread: return RetagThread();
      case Mutation::kRetagFile: return RetagFile();
      case Mutation::kWrap: return Wrap();
      case Mutation::kUnwrap: return Unwrap();
      case Mutation::kSplice: return other && Splice(*other);
      case Mutation::kInsertSlice: return other && InsertSlice(*other);
    }
    return false;
  }

 private:
  uint64_t Below(uint64_t n) { return rng_->Below(n); }
  bool OneIn(uint64_t n) { return Below(n) == 0; }
  template <typename T>
  const T& Choose(const std::vector<T>& v) { return v[Below(v.size())]; }

  size_t Room() const { return kMaxOps - std::min(kMaxOps, CountOps(p_->ops)); }

  // Ids in `free`, those no op names first.
  template <size_t N>
  uint64_t PickNew(const std::vector<uint64_t>& free, const std::array<bool, N>& used) {
    std::vector<uint64_t> fresh;
    for (uint64_t id : free)
      if (!used[id]) fresh.push_back(id);
    return !fresh.empty() && !OneIn(4) ? Choose(fresh) : Choose(free);
  }

  // A value in [min, max], often one at or next to a boundary, a power of two
  // or a small step from `cur` (when `has_cur`).
  uint64_t Interesting(uint64_t min, uint64_t max, uint64_t cur, bool has_cur) {
    const uint64_t span = max - min;  // inclusive range minus one
    uint64_t v;
    switch (Below(8)) {
      case 0: v = min; break;
      case 1: v = max; break;
      case 2: v = min + std::min<uint64_t>(1, span); break;
      case 3: v = max - std::min<uint64_t>(1, span); break;
      case 4: {
        std::vector<uint64_t> powers;
        for (int k = 0; k < 63; k++) {
          const uint64_t p = uint64_t{1} << k;
          if (p >= min && p <= max) powers.push_back(p);
        }
        v = powers.empty() ? min : Choose(powers);
        if (OneIn(3) && v < max) v++;
        break;
      }
      case 5:
      case 6:
        if (has_cur) {
          const uint64_t delta = 1 + Below(8);
          v = OneIn(2) ? (cur > min + delta ? cur - delta : min) : std::min(max, cur + delta);
        } else {
          v = min + Below(std::min<uint64_t>(span, 15) + 1);
        }
        break;
      default:
        v = min + Below(span + 1);  // no argument spans all 64 bits
        break;
    }
    return std::clamp(v, min, max);
  }

  // A value for argument `i` of `op` in `scope`, given the arguments before
  // it; nullopt if there is none (no buffer mapped, no free id).
  std::optional<uint64_t> RandomArg(const Op& op, int i, const Scope& scope, bool has_cur) {
    const OpDesc& d = Describe(op.code);
    const ArgDesc& a = d.args[i];
    const uint64_t cur = op.args[i];
    uint64_t size = 0, off = 0;
    for (int j = 0; j < i; j++) {
      if (d.args[j].kind == ArgKind::kBuffer) size = scope.BufferPages(op.args[j]);
      if (d.args[j].kind == ArgKind::kPageOffset) off = op.args[j];
    }
    if (IsReference(a.kind)) {
      const std::vector<uint64_t> ids = Ids(a.kind, scope);
      if (ids.empty()) return std::nullopt;
      if (a.kind == ArgKind::kNewBuffer) return PickNew(ids, used_.buffers);
      if (a.kind == ArgKind::kNewThread) return PickNew(ids, used_.threads);
      if (a.kind == ArgKind::kNewFile) return PickNew(ids, used_.files);
      return Choose(ids);
    }
    switch (a.kind) {
      case ArgKind::kPageOffset:
        if (size == 0) return std::nullopt;
        return Interesting(0, size - 1, cur, has_cur);
      case ArgKind::kPageCount:
        if (off >= size) return std::nullopt;
        return Interesting(1, size - off, cur, has_cur);
      case ArgKind::kEnum:
        return a.min + Below(a.max - a.min + 1);
      case ArgKind::kSize:
      case ArgKind::kInt:
        return Interesting(a.min, a.max, cur, has_cur);
      default:
        break;
    }
    return std::nullopt;
  }

  // Re-derives the arguments of `op` that are not valid in `scope`, in order,
  // so that a changed buffer gets an offset and a count inside it.
  bool FixArgs(Op* op, const Scope& scope) {
    for (int tries = 0; tries <= kMaxArgs; tries++) {
      const auto problem = CheckOp(*op, scope);
      if (!problem) return true;
      if (problem->first < 0) return false;
      const std::optional<uint64_t> v = RandomArg(*op, problem->first, scope, false);
      if (!v) return false;
      op->args[problem->first] = *v;
    }
    return false;
  }

  bool Feasible(const OpDesc& d, const Scope& scope, int depth) const {
    if (d.has_body && depth >= kMaxForkDepth) return false;
    for (int i = 0; i < d.num_args; i++)
      if (IsReference(d.args[i].kind) && Ids(d.args[i].kind, scope).empty()) return false;
    return true;
  }

  // A random op valid in `scope` at fork depth `depth`, taking at most
  // `room` ops with its body.
  std::optional<Op> RandomOp(const Scope& scope, int depth, size_t room) {
    if (room == 0) return std::nullopt;
    std::vector<OpCode> codes;
    for (size_t c = 0; c < kNumOps; c++) {
      const OpDesc& d = Describe(static_cast<OpCode>(c));
      if (Feasible(d, scope, depth)) codes.push_back(d.code);
    }
    // Most ops need a buffer: with none mapped, map one half of the time.
    const bool need_buffer = scope.MappedBuffers().empty() && !scope.FreeBuffers().empty();
    Op op;
    op.code = need_buffer && OneIn(2) ? OpCode::kMmap : Choose(codes);
    const OpDesc& d = Describe(op.code);
    const std::vector<uint64_t> running = scope.RunningThreads();
    if (!d.main_thread_only && !running.empty() && OneIn(2)) op.thread = Choose(running);
    if (d.uses_file) op.file = Choose(scope.UsableFiles());
    for (int i = 0; i < d.num_args; i++) {
      const std::optional<uint64_t> v = RandomArg(op, i, scope, false);
      if (!v) return std::nullopt;
      op.args[i] = *v;
    }
    if (d.has_body) {
      Scope child = scope.ForChild();
      for (uint64_t n = Below(3); n > 0 && CountOps({op}) < room; n--) {
        std::optional<Op> inner = RandomOp(child, depth + 1, room - CountOps({op}));
        if (!inner) break;
        child.Apply(*inner);
        op.body.push_back(std::move(*inner));
      }
    }
    if (CheckOp(op, scope)) return std::nullopt;
    return op;
  }

  // Re-derives what the change made invalid further on.
  bool Done() {
    *p_ = Repair(*p_);
    return true;
  }

  bool Insert() {
    const size_t room = Room();
    if (room == 0) return false;
    std::vector<Site> slots = Sites(p_, true);
    const Site& s = Choose(slots);
    std::optional<Op> op = RandomOp(s.scope, s.depth, room);
    if (!op) return false;
    s.block->insert(s.block->begin() + s.index, std::move(*op));
    return Done();
  }

  bool Delete() {
    std::vector<Site> ops = Sites(p_, false);
    if (ops.empty()) return false;
    const Site& s = Choose(ops);
    s.block->erase(s.block->begin() + s.index);
    return Done();
  }

  bool Duplicate() {
    std::vector<Site> ops = Sites(p_, false);
    if (ops.empty()) return false;
    const Site& s = Choose(ops);
    Op copy = (*s.block)[s.index];
    if (CountOps({copy}) > Room()) return false;
    s.block->insert(s.block->begin() + s.index + 1, std::move(copy));
    return Done();
  }

  bool Swap() {
    std::vector<Site> ops = Sites(p_, false);
    std::vector<Site> pairs;
    for (const Site& s : ops)
      if (s.block->size() >= 2) pairs.push_back(s);
    if (pairs.empty()) return false;
    const Site& s = Choose(pairs);
    size_t j = Below(s.block->size() - 1);
    if (j >= s.index) j++;
    std::swap((*s.block)[s.index], (*s.block)[j]);
    return Done();
  }

  bool Move() {
    std::vector<Site> ops = Sites(p_, false);
    if (ops.size() < 2) return false;
    const Site& from = Choose(ops);
    Op op = std::move((*from.block)[from.index]);
    from.block->erase(from.block->begin() + from.index);
    std::vector<Site> slots = Sites(p_, true);
    const Site& to = Choose(slots);
    to.block->insert(to.block->begin() + to.index, std::move(op));
    return Done();
  }

  bool Arg() {
    std::vector<Site> ops = Sites(p_, false);
    std::vector<Site> with_args;
    for (const Site& s : ops)
      if (Describe((*s.block)[s.index].code).num_args > 0) with_args.push_back(s);
    if (with_args.empty()) return false;
    const Site& s = Choose(with_args);
    Op op = (*s.block)[s.index];
    const int i = static_cast<int>(Below(Describe(op.code).num_args));
    // A few tries for a value that differs: a one-value range has none.
    for (int tries = 0; tries < 4; tries++) {
      const std::optional<uint64_t> v = RandomArg(op, i, s.scope, true);
      if (!v) return false;
      if (*v == op.args[i] && tries < 3) continue;
      op.args[i] = *v;
      break;
    }
    if (!FixArgs(&op, s.scope)) return false;
    (*s.block)[s.index] = std::move(op);
    return Done();
  }

  // Inserts `op`, valid in `s.scope`, before the op at `s`, which it must not
  // invalidate; `s` then names that op again.
  bool InsertBefore(Site* s, Op op) {
    if (Room() == 0 || CheckOp(op, s->scope)) return false;
    s->scope.Apply(op);
    s->block->insert(s->block->begin() + s->index, std::move(op));
    s->index++;
    return true;
  }

  bool RetagThread() {
    std::vector<Site> ops = Sites(p_, false);
    std::vector<Site> movable, candidates;
    for (const Site& s : ops) {
      const Op& op = (*s.block)[s.index];
      if (Describe(op.code).main_thread_only) continue;
      movable.push_back(s);
      std::vector<uint64_t> threads = s.scope.RunningThreads();
      threads.push_back(0);
      if (!Without(threads, op.thread).empty()) candidates.push_back(s);
    }
    if (movable.empty()) return false;
    if (candidates.empty()) {
      // No second thread anywhere: start one right before an op and move it there.
      Site s = Choose(movable);
      const std::vector<uint64_t> free = s.scope.FreeThreads();
      if (free.empty()) return false;
      Op create;
      create.code = OpCode::kThreadCreate;
      create.args[0] = PickNew(free, used_.threads);
      const uint64_t tid = create.args[0];
      if (!InsertBefore(&s, std::move(create))) return false;
      (*s.block)[s.index].thread = tid;
      return Done();
    }
    const Site& s = Choose(candidates);
    Op& op = (*s.block)[s.index];
    std::vector<uint64_t> threads = s.scope.RunningThreads();
    threads.push_back(0);
    op.thread = Choose(Without(threads, op.thread));
    return Done();
  }

  bool RetagFile() {
    std::vector<Site> ops = Sites(p_, false);
    std::vector<Site> driver, candidates;
    for (const Site& s : ops) {
      const Op& op = (*s.block)[s.index];
      if (!Describe(op.code).uses_file) continue;
      driver.push_back(s);
      if (!Without(s.scope.UsableFiles(), op.file).empty()) candidates.push_back(s);
    }
    if (driver.empty()) return false;
    if (candidates.empty()) {
      // Only one file usable: open another right before a driver op.
      Site s = Choose(driver);
      const std::vector<uint64_t> free = Without(s.scope.FreeFiles(), (*s.block)[s.index].file);
      if (free.empty()) return false;
      Op open;
      open.code = OpCode::kOpenDev;
      open.args[0] = PickNew(free, used_.files);
      for (int i = 1; i < Describe(open.code).num_args; i++)
        open.args[i] = *RandomArg(open, i, s.scope, false);
      const uint64_t file = open.args[0];
      if (!InsertBefore(&s, std::move(open))) return false;
      (*s.block)[s.index].file = file;
      return Done();
    }
    const Site& s = Choose(candidates);
    Op& op = (*s.block)[s.index];
    op.file = Choose(Without(s.scope.UsableFiles(), op.file));
    return Done();
  }

  bool Wrap() {
    if (Room() == 0) return false;
    std::vector<Site> ops = Sites(p_, false);
    std::vector<Site> shallow;
    for (const Site& s : ops)
      if (s.depth < kMaxForkDepth) shallow.push_back(s);
    if (shallow.empty()) return false;
    const Site& s = Choose(shallow);
    const size_t len = 1 + Below(std::min<size_t>(8, s.block->size() - s.index));
    Op fork;
    fork.code = OpCode::kFork;
    fork.args[0] = Below(2);
    const auto first = s.block->begin() + s.index;
    fork.body.assign(std::make_move_iterator(first), std::make_move_iterator(first + len));
    s.block->erase(first + 1, first + len);
    *first = std::move(fork);
    return Done();
  }

  bool Unwrap() {
    std::vector<Site> ops = Sites(p_, false);
    std::vector<Site> forks;
    for (const Site& s : ops)
      if (Describe((*s.block)[s.index].code).has_body) forks.push_back(s);
    if (forks.empty()) return false;
    const Site& s = Choose(forks);
    std::vector<Op> body = std::move((*s.block)[s.index].body);
    s.block->erase(s.block->begin() + s.index);
    s.block->insert(s.block->begin() + s.index, std::make_move_iterator(body.begin()),
                    std::make_move_iterator(body.end()));
    return Done();
  }

  // Both parents give at least one op when both have any.
  bool Splice(const Program& other) {
    const std::vector<Op>& a = p_->ops;
    const std::vector<Op>& b = other.ops;
    if (b.empty()) return false;
    size_t i = a.empty() ? 0 : 1 + Below(a.size());
    // Leave room for at least one op of the other.
    size_t count = 0;
    for (size_t k = 0; k < i; k++) {
      count += 1 + CountOps(a[k].body);
      if (count >= kMaxOps) i = k;
    }
    const size_t j = Below(b.size());
    std::vector<Op> ops(a.begin(), a.begin() + i);
    ops.insert(ops.end(), b.begin() + j, b.end());
    p_->ops = std::move(ops);
    return Done();
  }

  bool InsertSlice(const Program& other) {
    const std::vector<Op>& b = other.ops;
    if (b.empty()) return false;
    const size_t j = Below(b.size());
    size_t len = 1 + Below(std::min<size_t>(16, b.size() - j));
    std::vector<Op> slice(b.begin() + j, b.begin() + j + len);
    const size_t room = Room();
    while (!slice.empty() && CountOps(slice) > room) slice.pop_back();
    if (slice.empty()) return false;
    std::vector<Site> slots = Sites(p_, true);
    const Site& s = Choose(slots);
    s.block->insert(s.block->begin() + s.index, slice.begin(), slice.end());
    return Done();
  }

  Mutator* rng_;
  Program* p_;
  Used used_;
};

}  // namespace

const char* MutationName(Mutation m) {
  switch (m) {
    case Mutation::kInsert: return "insert";
    case Mutation::kDelete: return "delete";
    case Mutation::kDuplicate: return "duplicate";
    case Mutation::kSwap: return "swap";
    case Mutation::kMove: return "move";
    case Mutation::kArg: return "arg";
    case Mutation::kRetagThread: return "retag_thread";
    case Mutation::kRetagFile: return "retag_file";
    case Mutation::kWrap: return "wrap";
    case Mutation::kUnwrap: return "unwrap";
    case Mutation::kSplice: return "splice";
    case Mutation::kInsertSlice: return "insert_slice";
  }
  return "?";
}

// The decoder already is the repair: it keeps what is valid where it stands
// and reduces the rest, and Encode() writes any sanitized program faithfully.
Program Repair(const Program& program) {
  Program p = program;
  Sanitize(&p.ops);
  return Decode(Encode(p));
}

namespace {

bool CapDelays(std::vector<Op>* ops) {
  bool changed = false;
  for (Op& op : *ops) {
    if (op.code == OpCode::kSleep || op.code == OpCode::kDelayAcks) {
      uint64_t& us = op.args[ArgIndex(op.code, "us")];
      if (us > kFuzzMaxDelayUs) {
        us = kFuzzMaxDelayUs;
        changed = true;
      }
    }
    changed |= CapDelays(&op.body);
  }
  return changed;
}

}  // namespace

bool CapDelays(Program* program) { return CapDelays(&program->ops); }

void FitSize(Program* program, size_t max_size) {
  while (!program->ops.empty() && EncodedSize(program->ops) > max_size) PopLast(&program->ops);
}

Mutator::Mutator(uint64_t seed) : state_(seed) {}

// splitmix64: small, fast, and the same on every platform (the standard
// distributions are not).
uint64_t Mutator::Next() {
  uint64_t z = (state_ += 0x9e3779b97f4a7c15);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9;
  z = (z ^ (z >> 27)) * 0x94d049bb133111eb;
  return z ^ (z >> 31);
}

uint64_t Mutator::Below(uint64_t n) {
  return static_cast<uint64_t>((static_cast<unsigned __int128>(Next()) * n) >> 64);
}

bool Mutator::Apply(Mutation kind, Program* program, const Program* other) {
  Program work = *program;
  if (!Step(this, &work).Run(kind, other)) return false;
  // Repair() makes every result valid; this guards against a bug in it ever
  // reaching an engine.
  if (Validate(work)) return false;
  *program = std::move(work);
  return true;
}

Mutation Mutator::Mutate(Program* program, const Program* other, size_t max_size) {
  unsigned total = 0;
  for (size_t k = 0; k < kNumMutations; k++) {
    const bool crossover = kKinds[k] == Mutation::kSplice || kKinds[k] == Mutation::kInsertSlice;
    if (!crossover || other) total += kWeights[k];
  }
  for (int tries = 0; tries < 16; tries++) {
    uint64_t r = Below(total);
    Mutation kind = Mutation::kInsert;
    for (size_t k = 0; k < kNumMutations; k++) {
      const bool crossover = kKinds[k] == Mutation::kSplice || kKinds[k] == Mutation::kInsertSlice;
      if (crossover && !other) continue;
      if (r < kWeights[k]) {
        kind = kKinds[k];
        break;
      }
      r -= kWeights[k];
    }
    if (Apply(kind, program, other)) {
      FitSize(program, max_size);
      return kind;
    }
  }
  // One of these always applies: a full program has ops to delete.
  const Mutation last = program->ops.empty() || CountOps(program->ops) < kMaxOps
                            ? Mutation::kInsert
                            : Mutation::kDelete;
  Apply(last, program, other);
  FitSize(program, max_size);
  return last;
}

std::vector<uint8_t> Mutator::MutateBytes(const uint8_t* data, size_t size, const uint8_t* other,
                                          size_t other_size, size_t max_size,
                                          Mutation* last) {
  Program p = Decode(data, size);
  if (Validate(p)) p = Program{};
  std::optional<Program> o;
  if (other) {
    o = Decode(other, other_size);
    if (Validate(*o)) o.reset();
  }
  // Mostly one step, sometimes a few stacked, as havoc stacks its flips.
  const uint64_t steps = Below(2) == 0 ? 1 : 1 + Below(4);
  for (uint64_t n = 0; n < steps; n++) {
    const Mutation m = Mutate(&p, o ? &*o : nullptr, max_size);
    if (last) *last = m;
  }
  return Encode(p);
}

}  // namespace svmfuzz
