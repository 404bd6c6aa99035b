#include "runner/devctl.h"

#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

namespace svmfuzz {
namespace {

// The channel's layouts are little-endian; so is every host this runs on.
static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "little-endian host");

std::string Hex(unsigned v) {
  char s[16];
  std::snprintf(s, sizeof(s), "%#x", v);
  return s;
}

// A reply outside a request answers one that timed out: nobody's now.
bool LateReply(const svmdev_ctl_hdr& hdr) {
  return hdr.type != SVMDEV_CTL_EVENT && (hdr.type & SVMDEV_CTL_REPLY);
}

// The name of an SVMDEV_STATUS_* value ("STALLED"), or its number.
std::string CtlStatusName(uint32_t status) {
  static const char* const kNames[] = {
      "OK",      "BAD_OPCODE", "BAD_CTX",  "CTX_DISABLED", "BAD_ARG",  "BAD_VRAM", "DMA_ERROR",
      "BAD_PTE", "CANCELLED",  "NO_FAULT", "STALL_LIMIT",  "BAD_RING", "ABORTED",  "STALLED"};
  static_assert(sizeof(kNames) / sizeof(kNames[0]) == SVMDEV_STATUS_STALLED + 1, "one per status");
  if (status <= SVMDEV_STATUS_STALLED) return kNames[status];
  return "status " + std::to_string(status);
}

}  // namespace

DevCtl::DevCtl(int fd, double timeout) : fd_(fd), timeout_(timeout) {}

DevCtl::~DevCtl() { Close(); }

void DevCtl::Close() {
  if (fd_ >= 0) close(fd_);
  fd_ = -1;
  if (!broken_) Fail("control channel closed by the host");
  broken_ = true;
}

bool DevCtl::Fail(std::string why) {
  error_ = std::move(why);
  return false;
}

DevCtl::Got DevCtl::NextMessage(Clock::time_point deadline, svmdev_ctl_hdr* hdr,
                                std::vector<uint8_t>* payload) {
  for (;;) {
    if (broken_) return Got::kFailed;
    if (buf_.size() >= sizeof(*hdr)) {
      std::memcpy(hdr, buf_.data(), sizeof(*hdr));
      if (hdr->magic != SVMDEV_CTL_MAGIC) {
        broken_ = true;
        Fail("bad magic " + Hex(hdr->magic) + " from the device");
        return Got::kFailed;
      }
      if (hdr->len > SVMDEV_CTL_MAX_PAYLOAD) {
        broken_ = true;
        Fail("message of " + std::to_string(hdr->len) + " bytes from the device");
        return Got::kFailed;
      }
      if (buf_.size() >= sizeof(*hdr) + hdr->len) {
        payload->assign(buf_.begin() + sizeof(*hdr), buf_.begin() + sizeof(*hdr) + hdr->len);
        buf_.erase(buf_.begin(), buf_.begin() + sizeof(*hdr) + hdr->len);
        return Got::kMessage;
      }
    }
    if (!WaitReadable(fd_, deadline)) {
      Fail("control channel: timed out waiting for the device");
      return Got::kTimeout;
    }
    uint8_t chunk[64 * 1024];
    const ssize_t n = read(fd_, chunk, sizeof(chunk));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) continue;
    if (n <= 0) {
      broken_ = true;
      Fail("control channel closed by the device");
      return Got::kFailed;
    }
    buf_.insert(buf_.end(), chunk, chunk + n);
  }
}

bool DevCtl::Request(uint8_t type, const void* payload, size_t size, std::vector<uint8_t>* reply) {
  if (broken_) return false;
  if (size > SVMDEV_CTL_MAX_PAYLOAD) return Fail("request payload too long");
  tag_ = tag_ + 1 ? tag_ + 1 : 1;
  svmdev_ctl_hdr hdr{SVMDEV_CTL_MAGIC, type, static_cast<uint16_t>(size), tag_};
  std::vector<uint8_t> bytes(sizeof(hdr) + size);
  std::memcpy(bytes.data(), &hdr, sizeof(hdr));
  if (size) std::memcpy(bytes.data() + sizeof(hdr), payload, size);
  if (!WriteAll(fd_, bytes.data(), bytes.size())) {
    broken_ = true;
    return Fail("control channel closed by the device");
  }
  const Clock::time_point deadline = After(timeout_);
  for (;;) {
    svmdev_ctl_hdr got;
    std::vector<uint8_t> body;
    if (NextMessage(deadline, &got, &body) != Got::kMessage) return false;
    if (got.type == SVMDEV_CTL_EVENT) {
      if (!QueueEvent(got, body)) return false;
      continue;
    }
    // The late reply to a request that timed out is nobody's now.
    if (got.tag != tag_) continue;
    if (got.type == SVMDEV_CTL_ERROR) {
      CtlResult r{};
      std::memcpy(&r, body.data(), std::min(body.size(), sizeof(r)));
      return Fail("request " + Hex(type) + " refused: " + CtlStatusName(r.status));
    }
    if (got.type != (type | SVMDEV_CTL_REPLY)) {
      return Fail("reply type " + Hex(got.type) + " to request " + Hex(type));
    }
    *reply = std::move(body);
    return true;
  }
}

bool DevCtl::ResultRequest(uint8_t type, const void* payload, size_t size, CtlResult* out) {
  std::vector<uint8_t> reply;
  if (!Request(type, payload, size, &reply)) return false;
  if (reply.size() != sizeof(*out)) {
    return Fail("reply of " + std::to_string(reply.size()) + " bytes to request " + Hex(type) +
                ", expected " + std::to_string(sizeof(*out)));
  }
  std::memcpy(out, reply.data(), sizeof(*out));
  return true;
}

bool DevCtl::Ping(uint32_t* version, uint32_t* status) {
  std::vector<uint8_t> reply;
  if (!Request(SVMDEV_CTL_PING, nullptr, 0, &reply)) return false;
  if (reply.size() != 8) return Fail("PING reply of " + std::to_string(reply.size()) + " bytes");
  std::memcpy(version, reply.data(), 4);
  std::memcpy(status, reply.data() + 4, 4);
  return true;
}

bool DevCtl::Access(uint16_t ctx, uint64_t va, uint8_t kind, uint8_t size, uint64_t value,
                    CtlResult* out, uint64_t compare, uint8_t aop) {
  svmdev_ctl_access a{};
  a.va = va;
  a.value = value;
  a.compare = compare;
  a.ctx = ctx;
  a.kind = kind;
  a.size = size;
  a.aop = aop;
  return ResultRequest(SVMDEV_CTL_ACCESS, &a, sizeof(a), out);
}

bool DevCtl::FaultStorm(uint16_t ctx, uint64_t va, uint64_t stride, uint16_t count, uint8_t kind,
                        CtlResult* out) {
  svmdev_ctl_storm s{};
  s.va = va;
  s.stride = stride;
  s.ctx = ctx;
  s.count = count;
  s.kind = kind;
  return ResultRequest(SVMDEV_CTL_FAULT_STORM, &s, sizeof(s), out);
}

bool DevCtl::InvalMode(uint32_t mode, uint32_t count, uint32_t commands, CtlResult* out) {
  svmdev_ctl_inval_mode m{mode, count, commands, 0};
  return ResultRequest(SVMDEV_CTL_INVAL_MODE, &m, sizeof(m), out);
}

bool DevCtl::FailDma(uint32_t skip, uint32_t count, CtlResult* out) {
  svmdev_ctl_fail_dma f{skip, count};
  return ResultRequest(SVMDEV_CTL_FAIL_DMA, &f, sizeof(f), out);
}

bool DevCtl::Counters(std::vector<uint64_t>* out) {
  std::vector<uint8_t> reply;
  if (!Request(SVMDEV_CTL_COUNTERS, nullptr, 0, &reply)) return false;
  if (reply.size() != 8 * SVMDEV_NUM_COUNTERS) {
    return Fail("COUNTERS reply of " + std::to_string(reply.size()) + " bytes");
  }
  out->resize(SVMDEV_NUM_COUNTERS);
  std::memcpy(out->data(), reply.data(), reply.size());
  return true;
}

bool DevCtl::Tlb(std::vector<CtlTlbEntry>* out) {
  std::vector<uint8_t> reply;
  if (!Request(SVMDEV_CTL_TLB, nullptr, 0, &reply)) return false;
  uint32_t count = 0;
  if (reply.size() >= 4) std::memcpy(&count, reply.data(), 4);
  if (reply.size() < 4 || reply.size() != 4 + uint64_t{count} * sizeof(CtlTlbEntry)) {
    return Fail("TLB reply of " + std::to_string(reply.size()) + " bytes for " +
                std::to_string(count) + " entries");
  }
  out->resize(count);
  if (count) std::memcpy(out->data(), reply.data() + 4, count * sizeof(CtlTlbEntry));
  return true;
}

bool DevCtl::SetEvents(uint32_t mask, CtlResult* out) {
  return ResultRequest(SVMDEV_CTL_EVENTS, &mask, sizeof(mask), out);
}

bool DevCtl::Release(CtlResult* out) { return ResultRequest(SVMDEV_CTL_RELEASE, nullptr, 0, out); }

bool DevCtl::QueueEvent(const svmdev_ctl_hdr& hdr, const std::vector<uint8_t>& body) {
  if (hdr.type != SVMDEV_CTL_EVENT) {
    return Fail("unsolicited message type " + Hex(hdr.type) + " tag " + std::to_string(hdr.tag));
  }
  if (body.size() != sizeof(CtlEvent)) {
    return Fail("event of " + std::to_string(body.size()) + " bytes from the device");
  }
  CtlEvent e;
  std::memcpy(&e, body.data(), sizeof(e));
  events_.push_back(e);
  return true;
}

bool DevCtl::NextEvent(double timeout, CtlEvent* out) {
  const Clock::time_point deadline = After(timeout);
  while (events_.empty()) {
    svmdev_ctl_hdr hdr;
    std::vector<uint8_t> body;
    if (NextMessage(deadline, &hdr, &body) != Got::kMessage) return false;
    if (!LateReply(hdr) && !QueueEvent(hdr, body)) return false;
  }
  *out = events_.front();
  events_.pop_front();
  return true;
}

bool DevCtl::PollEvents(double timeout) {
  const Clock::time_point deadline = After(timeout);
  for (;;) {
    svmdev_ctl_hdr hdr;
    std::vector<uint8_t> body;
    switch (NextMessage(deadline, &hdr, &body)) {
      case Got::kTimeout:
        return true;
      case Got::kFailed:
        return false;
      case Got::kMessage:
        break;
    }
    if (!LateReply(hdr) && !QueueEvent(hdr, body)) return false;
  }
}

}  // namespace svmfuzz
