#include "program/binary.h"

#include <optional>

namespace svmfuzz {
namespace {

static_assert(kNumOps < kEndOfBlock, "the end byte must not be an opcode");
// The thread byte of an op that uses a driver file: the thread in the low
// nibble, the file above it. Older encodings had only threads below 8 there,
// so they name file 0, as their driver ops always did.
constexpr int kFileShift = 4;
static_assert(kMaxThreads <= (1 << kFileShift) && kMaxFiles << kFileShift <= 0x100,
              "thread and file share a byte");

void Put(uint64_t v, size_t width, std::vector<uint8_t>* out) {
  for (size_t i = 0; i < width; i++) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

uint64_t Get(const uint8_t* p, size_t width) {
  uint64_t v = 0;
  for (size_t i = 0; i < width; i++) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

void EncodeOps(const std::vector<Op>& ops, std::vector<uint8_t>* out) {
  for (const Op& op : ops) {
    const OpDesc& d = Describe(op.code);
    out->push_back(static_cast<uint8_t>(op.code));
    out->push_back(static_cast<uint8_t>(op.thread | op.file << kFileShift));
    for (int i = 0; i < d.num_args; i++) Put(op.args[i], ArgWidth(d.args[i]), out);
    if (d.has_body) {
      EncodeOps(op.body, out);
      out->push_back(kEndOfBlock);
    }
  }
}

// `raw` if it is in [min, max], else folded into it.
uint64_t Fold(uint64_t raw, uint64_t min, uint64_t max) {
  if (raw >= min && raw <= max) return raw;
  const uint64_t span = max - min + 1;
  return span == 0 ? raw : min + raw % span;
}

// `raw` if `ok`, else one of `choices` picked by `raw`; nullopt if there is none.
std::optional<uint64_t> Pick(uint64_t raw, bool ok, const std::vector<uint64_t>& choices) {
  if (ok) return raw;
  if (choices.empty()) return std::nullopt;
  return choices[raw % choices.size()];
}

// Turns raw record values into an op valid in `scope`, or nullopt to drop it.
std::optional<Op> Reduce(const OpDesc& d, uint64_t thread, const uint64_t* raw,
                         const Scope& scope) {
  Op op;
  op.code = d.code;
  if (d.uses_file) {
    const uint64_t file = thread >> kFileShift & (kMaxFiles - 1);
    op.file = scope.FileUsable(file) ? file : 0;
    thread &= (1 << kFileShift) - 1;
  }
  if (!d.main_thread_only && thread != 0 && !scope.ThreadRunning(thread)) {
    const std::vector<uint64_t> running = scope.RunningThreads();
    const uint64_t pick = thread % (running.size() + 1);
    thread = pick == 0 ? 0 : running[pick - 1];
  }
  op.thread = d.main_thread_only ? 0 : thread;
  uint64_t size = 0, off = 0;
  for (int i = 0; i < d.num_args; i++) {
    const ArgDesc& a = d.args[i];
    const uint64_t r = raw[i];
    std::optional<uint64_t> v;
    switch (a.kind) {
      case ArgKind::kNewBuffer:
        v = Pick(r, r < kMaxBuffers && !scope.BufferMapped(r), scope.FreeBuffers());
        break;
      case ArgKind::kBuffer:
        v = Pick(r, scope.BufferMapped(r), scope.MappedBuffers());
        if (v) size = scope.BufferPages(*v);
        break;
      case ArgKind::kPageOffset:
        v = off = r < size ? r : r % size;
        break;
      case ArgKind::kPageCount:
        v = Fold(r, 1, size - off);
        break;
      case ArgKind::kNewThread:
        v = Pick(r, r >= a.min && r <= a.max && !scope.ThreadRunning(r), scope.FreeThreads());
        break;
      case ArgKind::kThread:
        v = Pick(r, scope.ThreadRunning(r), scope.RunningThreads());
        break;
      case ArgKind::kNewFile:
        v = Pick(r, scope.FileFree(r), scope.FreeFiles());
        break;
      case ArgKind::kChild: {
        std::vector<uint64_t> children(scope.Children());
        for (uint64_t c = 0; c < children.size(); c++) children[c] = c;
        v = Pick(r, r < scope.Children(), children);
        break;
      }
      case ArgKind::kSize:
      case ArgKind::kInt:
      case ArgKind::kEnum:
        v = Fold(r, a.min, a.max);
        break;
    }
    if (!v) return std::nullopt;
    op.args[i] = *v;
  }
  return op;
}

class Decoder {
 public:
  Decoder(const uint8_t* data, size_t size) : data_(data), size_(size) {}

  Program Run() {
    Program program;
    frames_.push_back({&program.ops, Scope(), 0, 0});
    while (pos_ < size_ && count_ < kMaxOps) {
      const uint8_t byte = data_[pos_];
      if (byte == kEndOfBlock) {
        pos_++;
        EndBlock();
      } else if (byte >= kNumOps) {
        pos_++;
      } else if (!Record(Describe(static_cast<OpCode>(byte)))) {
        break;
      }
    }
    return program;
  }

 private:
  // A block being decoded: a process's ops and what it has mapped and running.
  struct Frame {
    std::vector<Op>* ops;
    Scope scope;
    int depth;
    int flattened;  // forks dropped for depth whose ops went into this block
  };

  void EndBlock() {
    Frame& f = frames_.back();
    if (f.flattened > 0) {
      f.flattened--;
    } else if (frames_.size() > 1) {
      frames_.pop_back();
    }
  }

  // Returns false when the record is cut short by the end of the input.
  bool Record(const OpDesc& d) {
    size_t need = 2;
    for (int i = 0; i < d.num_args; i++) need += ArgWidth(d.args[i]);
    if (size_ - pos_ < need) return false;
    const uint8_t* p = data_ + pos_ + 1;
    pos_ += need;
    const uint64_t thread = *p++;
    uint64_t raw[kMaxArgs] = {};
    for (int i = 0; i < d.num_args; i++) {
      raw[i] = Get(p, ArgWidth(d.args[i]));
      p += ArgWidth(d.args[i]);
    }
    Frame& f = frames_.back();
    if (d.has_body && f.depth >= kMaxForkDepth) {
      f.flattened++;
      return true;
    }
    std::optional<Op> op = Reduce(d, thread, raw, f.scope);
    if (!op) {
      // A dropped fork's ops still belong somewhere: keep them in this block.
      if (d.has_body) f.flattened++;
      return true;
    }
    count_++;
    f.ops->push_back(std::move(*op));
    f.scope.Apply(f.ops->back());
    if (d.has_body) {
      // Safe to hold: the parent's vector does not grow while the child is open.
      std::vector<Op>* body = &f.ops->back().body;
      frames_.push_back({body, f.scope.ForChild(), f.depth + 1, 0});
    }
    return true;
  }

  const uint8_t* data_;
  size_t size_;
  size_t pos_ = 0;
  size_t count_ = 0;
  std::vector<Frame> frames_;
};

}  // namespace

size_t ArgWidth(const ArgDesc& arg) {
  if (arg.max <= 0xff) return 1;
  if (arg.max <= 0xffff) return 2;
  if (arg.max <= 0xffffffff) return 4;
  return 8;
}

std::vector<uint8_t> Encode(const Program& program) {
  std::vector<uint8_t> out;
  EncodeOps(program.ops, &out);
  return out;
}

Program Decode(const uint8_t* data, size_t size) { return Decoder(data, size).Run(); }

}  // namespace svmfuzz
