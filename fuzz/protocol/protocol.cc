#include "protocol/protocol.h"

#include <algorithm>
#include <cstring>

namespace svmfuzz::proto {
namespace {

class Writer {
 public:
  void U8(uint8_t v) { out_.push_back(v); }
  void U16(uint16_t v) { Put(v, 2); }
  void U32(uint32_t v) { Put(v, 4); }
  void U64(uint64_t v) { Put(v, 8); }
  void Bytes(const void* p, size_t n) {
    const uint8_t* b = static_cast<const uint8_t*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  void U64s(const std::vector<uint64_t>& v) {
    U32(static_cast<uint32_t>(v.size()));
    for (uint64_t x : v) U64(x);
  }
  std::vector<uint8_t> Take() { return std::move(out_); }

 private:
  void Put(uint64_t v, int n) {
    for (int i = 0; i < n; i++) out_.push_back(static_cast<uint8_t>(v >> (8 * i)));
  }
  std::vector<uint8_t> out_;
};

// Every read is bounds-checked; after a short read ok() stays false.
class Reader {
 public:
  explicit Reader(const std::vector<uint8_t>& in) : in_(in) {}
  uint8_t U8() { return static_cast<uint8_t>(Get(1)); }
  uint16_t U16() { return static_cast<uint16_t>(Get(2)); }
  uint32_t U32() { return static_cast<uint32_t>(Get(4)); }
  uint64_t U64() { return Get(8); }
  // Reads a count of `elem_size`-byte items, refusing counts the rest cannot hold.
  size_t Count(size_t elem_size) {
    const uint32_t n = U32();
    if (!ok_ || n > left() / elem_size) ok_ = false;
    return ok_ ? n : 0;
  }
  void U64s(std::vector<uint64_t>* v) {
    const size_t n = Count(8);
    v->resize(n);
    for (size_t i = 0; i < n; i++) (*v)[i] = U64();
  }
  std::vector<uint8_t> Rest() {
    std::vector<uint8_t> r(in_.begin() + static_cast<long>(pos_), in_.end());
    pos_ = in_.size();
    return r;
  }
  std::string Text(size_t n) {
    if (n > left()) ok_ = false;
    if (!ok_) return "";
    std::string s(reinterpret_cast<const char*>(in_.data()) + pos_, n);
    pos_ += n;
    return s;
  }
  size_t left() const { return in_.size() - pos_; }
  bool ok() const { return ok_; }
  bool done() const { return ok_ && pos_ == in_.size(); }

 private:
  uint64_t Get(int n) {
    if (!ok_ || left() < static_cast<size_t>(n)) {
      ok_ = false;
      return 0;
    }
    uint64_t v = 0;
    for (int i = 0; i < n; i++) v |= static_cast<uint64_t>(in_[pos_ + i]) << (8 * i);
    pos_ += n;
    return v;
  }
  const std::vector<uint8_t>& in_;
  size_t pos_ = 0;
  bool ok_ = true;
};

constexpr size_t kOpResultSize = 20;
constexpr size_t kMismatchSize = 14;

}  // namespace

std::vector<uint8_t> EncodeFrame(MsgType type, const std::vector<uint8_t>& payload) {
  Writer w;
  w.U32(kMagic);
  w.U32(static_cast<uint32_t>(type));
  w.U32(static_cast<uint32_t>(payload.size()));
  w.Bytes(payload.data(), payload.size());
  return w.Take();
}

std::vector<uint8_t> Encode(const Ready& m) {
  Writer w;
  w.U32(m.version);
  w.U32(m.features);
  w.Bytes(m.kernel.data(), m.kernel.size());
  return w.Take();
}

bool Decode(const std::vector<uint8_t>& payload, Ready* m) {
  Reader r(payload);
  m->version = r.U32();
  m->features = r.U32();
  m->kernel = r.Text(r.left());
  return r.done();
}

std::vector<uint8_t> Encode(const ExecRequest& m) {
  Writer w;
  w.U64(m.id);
  w.U32(m.flags);
  w.U32(m.op_timeout_ms);
  w.U32(m.program_timeout_ms);
  w.U32(m.cover_cap);
  w.U64s(m.knobs);
  w.Bytes(m.program.data(), m.program.size());
  return w.Take();
}

bool Decode(const std::vector<uint8_t>& payload, ExecRequest* m) {
  Reader r(payload);
  m->id = r.U64();
  m->flags = r.U32();
  m->op_timeout_ms = r.U32();
  m->program_timeout_ms = r.U32();
  m->cover_cap = r.U32();
  r.U64s(&m->knobs);
  if (!r.ok() || m->knobs.size() > kMaxKnobs) return false;
  m->program = r.Rest();
  return true;
}

std::vector<uint8_t> Encode(const ExecResult& m) {
  Writer w;
  w.U64(m.id);
  w.U32(static_cast<uint32_t>(m.status));
  w.U32(static_cast<uint32_t>(m.detail));
  w.U32(m.duration_us);
  w.U32(static_cast<uint32_t>(m.ops.size()));
  for (const OpResult& o : m.ops) {
    w.U8(o.code);
    w.U8(o.thread);
    w.U16(o.flags);
    w.U32(static_cast<uint32_t>(o.err));
    w.U64(static_cast<uint64_t>(o.ret));
    w.U32(o.duration_us);
  }
  w.U32(static_cast<uint32_t>(m.mismatches.size()));
  for (const Mismatch& x : m.mismatches) {
    w.U32(x.op);
    w.U16(x.buffer);
    w.U16(x.offset);
    w.U32(x.page);
    w.U8(x.expected);
    w.U8(x.actual);
  }
  w.U64s(m.counters);
  w.U64s(m.watchdog_deltas);
  w.U64s(m.cover);
  w.U64s(m.remote_cover);
  w.U32(static_cast<uint32_t>(m.message.size()));
  w.Bytes(m.message.data(), m.message.size());
  return w.Take();
}

bool Decode(const std::vector<uint8_t>& payload, ExecResult* m) {
  Reader r(payload);
  m->id = r.U64();
  m->status = static_cast<Status>(r.U32());
  m->detail = static_cast<int32_t>(r.U32());
  m->duration_us = r.U32();
  m->ops.resize(r.Count(kOpResultSize));
  for (OpResult& o : m->ops) {
    o.code = r.U8();
    o.thread = r.U8();
    o.flags = r.U16();
    o.err = static_cast<int32_t>(r.U32());
    o.ret = static_cast<int64_t>(r.U64());
    o.duration_us = r.U32();
  }
  m->mismatches.resize(r.Count(kMismatchSize));
  for (Mismatch& x : m->mismatches) {
    x.op = r.U32();
    x.buffer = r.U16();
    x.offset = r.U16();
    x.page = r.U32();
    x.expected = r.U8();
    x.actual = r.U8();
  }
  r.U64s(&m->counters);
  r.U64s(&m->watchdog_deltas);
  r.U64s(&m->cover);
  r.U64s(&m->remote_cover);
  m->message = r.Text(r.U32());
  return r.done();
}

std::vector<uint8_t> Encode(const DeviceRequest& m) {
  Writer w;
  w.U32(m.seq);
  w.U8(m.op);
  w.U8(m.device);
  w.U16(m.ctx);
  w.U64(m.va);
  w.U64(m.arg0);
  w.U64(m.arg1);
  return w.Take();
}

bool Decode(const std::vector<uint8_t>& payload, DeviceRequest* m) {
  Reader r(payload);
  m->seq = r.U32();
  m->op = r.U8();
  m->device = r.U8();
  m->ctx = r.U16();
  m->va = r.U64();
  m->arg0 = r.U64();
  m->arg1 = r.U64();
  return r.done();
}

std::vector<uint8_t> Encode(const DeviceReply& m) {
  Writer w;
  w.U32(m.seq);
  w.U32(m.status);
  w.U64(m.value);
  return w.Take();
}

bool Decode(const std::vector<uint8_t>& payload, DeviceReply* m) {
  Reader r(payload);
  m->seq = r.U32();
  m->status = r.U32();
  m->value = r.U64();
  return r.done();
}

void FrameReader::Feed(const uint8_t* data, size_t size) {
  // Drop consumed bytes before growing, so the buffer stays one frame long.
  if (pos_ > 0 && pos_ == buf_.size()) {
    buf_.clear();
    pos_ = 0;
  } else if (pos_ > (1u << 16)) {
    buf_.erase(buf_.begin(), buf_.begin() + static_cast<long>(pos_));
    pos_ = 0;
  }
  buf_.insert(buf_.end(), data, data + size);
}

FrameReader::Status FrameReader::Next(Frame* out) {
  if (buf_.size() - pos_ < kHeaderSize) return Status::kNeedMore;
  const std::vector<uint8_t> header(buf_.begin() + static_cast<long>(pos_),
                                    buf_.begin() + static_cast<long>(pos_ + kHeaderSize));
  Reader r(header);
  const uint32_t magic = r.U32();
  const uint32_t type = r.U32();
  const uint32_t length = r.U32();
  if (magic != kMagic || length > kMaxPayload) {
    // Resynchronise on the next magic; a torn stream loses one frame, not all.
    uint8_t m[4];
    std::memcpy(m, &kMagic, 4);  // little-endian host
    auto it = std::search(buf_.begin() + static_cast<long>(pos_ + 1), buf_.end(), m, m + 4);
    // Without a magic, the last bytes may still be the start of one.
    pos_ = it != buf_.end() ? static_cast<size_t>(it - buf_.begin())
                            : std::max(pos_ + 1, buf_.size() - 3);
    return Status::kBad;
  }
  if (buf_.size() - pos_ - kHeaderSize < length) return Status::kNeedMore;
  out->type = static_cast<MsgType>(type);
  const auto begin = buf_.begin() + static_cast<long>(pos_ + kHeaderSize);
  out->payload.assign(begin, begin + length);
  pos_ += kHeaderSize + length;
  return Status::kFrame;
}

}  // namespace svmfuzz::proto
