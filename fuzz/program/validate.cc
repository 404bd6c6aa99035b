#include "program/validate.h"

namespace svmfuzz {
namespace {

using Problem = std::optional<std::pair<int, std::string>>;

Problem At(int arg, std::string message) { return std::make_pair(arg, std::move(message)); }

std::string Str(uint64_t v) { return std::to_string(v); }

class Walker {
 public:
  std::optional<ValidationError> Walk(const std::vector<Op>& ops, Scope scope, int depth) {
    for (size_t i = 0; i < ops.size(); i++) {
      const Op& op = ops[i];
      path_.push_back(i);
      if (++count_ > kMaxOps) return Fail(-1, "more than " + Str(kMaxOps) + " ops");
      if (Problem p = CheckOp(op, scope)) return Fail(p->first, p->second);
      const OpDesc& d = Describe(op.code);
      if (d.has_body) {
        if (depth >= kMaxForkDepth) return Fail(-1, "forks nest deeper than " + Str(kMaxForkDepth));
        if (auto e = Walk(op.body, scope.ForChild(), depth + 1)) return e;
      } else if (!op.body.empty()) {
        return Fail(-1, std::string(d.name) + " takes no block");
      }
      scope.Apply(op);
      path_.pop_back();
    }
    return std::nullopt;
  }

 private:
  std::optional<ValidationError> Fail(int arg, std::string message) {
    return ValidationError{path_, arg, std::move(message)};
  }

  std::vector<size_t> path_;
  size_t count_ = 0;
};

}  // namespace

Problem CheckOp(const Op& op, const Scope& scope) {
  if (static_cast<size_t>(op.code) >= kNumOps)
    return At(-1, "unknown opcode " + Str(static_cast<size_t>(op.code)));
  const OpDesc& d = Describe(op.code);
  if (op.thread != 0) {
    if (d.main_thread_only) return At(-1, std::string(d.name) + " runs on the main thread only");
    if (!scope.ThreadRunning(op.thread))
      return At(-1, "thread " + Str(op.thread) + " is not running");
  }
  if (op.file != 0) {
    if (!d.uses_file) return At(-1, std::string(d.name) + " uses no driver file");
    if (!scope.FileUsable(op.file)) return At(-1, "file " + Str(op.file) + " is not open");
  }
  uint64_t buf = 0, size = 0, off = 0;
  for (int i = 0; i < d.num_args; i++) {
    const ArgDesc& a = d.args[i];
    const uint64_t v = op.args[i];
    switch (a.kind) {
      case ArgKind::kNewBuffer:
        if (v >= kMaxBuffers)
          return At(i, "buffer id " + Str(v) + " is not below " + Str(kMaxBuffers));
        if (scope.BufferMapped(v)) return At(i, "buffer " + Str(v) + " is already mapped");
        break;
      case ArgKind::kBuffer:
        if (!scope.BufferMapped(v)) return At(i, "buffer " + Str(v) + " is not mapped");
        buf = v;
        size = scope.BufferPages(v);
        break;
      case ArgKind::kPageOffset:
        if (v >= size)
          return At(i, "offset " + Str(v) + " is outside buffer " + Str(buf) + " of " + Str(size) +
                           " pages");
        off = v;
        break;
      case ArgKind::kPageCount:
        if (v < 1 || v > size - off)
          return At(i, Str(v) + " pages from offset " + Str(off) + " do not fit buffer " +
                           Str(buf) + " of " + Str(size) + " pages");
        break;
      case ArgKind::kNewThread:
        if (v < a.min || v > a.max)
          return At(i,
                    "thread id " + Str(v) + " is not in [" + Str(a.min) + ", " + Str(a.max) + "]");
        if (scope.ThreadRunning(v)) return At(i, "thread " + Str(v) + " is already running");
        break;
      case ArgKind::kThread:
        if (!scope.ThreadRunning(v)) return At(i, "thread " + Str(v) + " is not running");
        break;
      case ArgKind::kNewFile:
        if (v >= kMaxFiles) return At(i, "file id " + Str(v) + " is not below " + Str(kMaxFiles));
        if (!scope.FileFree(v))
          return At(i, "file " + Str(v) +
                           (scope.FileOpen(v) ? " is already open"
                                              : " is open: an earlier driver op used it"));
        break;
      case ArgKind::kChild:
        if (v >= scope.Children())
          return At(i, "child " + Str(v) + " names no earlier fork of this process (it has " +
                           Str(scope.Children()) + ")");
        break;
      case ArgKind::kSize:
      case ArgKind::kInt:
      case ArgKind::kEnum:
        if (v < a.min || v > a.max)
          return At(i, std::string(a.name) + "=" + Str(v) + " is not in [" + Str(a.min) + ", " +
                           Str(a.max) + "]");
        break;
    }
  }
  for (int i = d.num_args; i < kMaxArgs; i++)
    if (op.args[i] != 0) return At(i, "unused argument slot " + Str(i) + " is not 0");
  return std::nullopt;
}

std::optional<ValidationError> Validate(const Program& program) {
  return Walker().Walk(program.ops, Scope(), 0);
}

}  // namespace svmfuzz
