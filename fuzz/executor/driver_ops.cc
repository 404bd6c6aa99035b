#include "executor/driver_ops.h"

#include <fcntl.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iterator>
#include <string>
#include <utility>

#include "protocol/protocol.h"
#include "svmdev/svmdev_uapi.h"

namespace svmfuzz {
namespace {

constexpr const char* kDevicePath = "/dev/svmdev0";
static_assert(sizeof(svmdev_knobs) == proto::kMaxKnobs * sizeof(uint64_t),
              "ExecRequest.knobs carries every field of struct svmdev_knobs");

OpOutcome Unsupported() {
  OpOutcome out;
  out.err = EOPNOTSUPP;
  out.flags = proto::kOpUnsupported;
  return out;
}

uint64_t Addr(const void* p) { return reinterpret_cast<uint64_t>(p); }

// ret: pages the driver did.
OpOutcome RangeIoctl(int fd, unsigned long cmd, uint8_t* addr, uint64_t pages, uint64_t flags) {
  svmdev_range_op op = {};
  op.addr = Addr(addr);
  op.npages = pages;
  op.flags = flags;
  OpOutcome out;
  if (ioctl(fd, cmd, &op) != 0) out.err = errno;
  out.ret = static_cast<int64_t>(op.done);
  return out;
}

// One device access; errno, or EIO when the device completed it with an error.
int Access(int fd, uint64_t addr, uint64_t kind, uint64_t size, uint64_t value, uint8_t* data) {
  svmdev_access a = {};
  a.addr = addr;
  a.kind = kind;
  a.size = size;
  a.aop = SVMDEV_UAOP_ADD;
  a.value = value;
  a.ptr = data != nullptr ? Addr(data) : 0;
  if (ioctl(fd, SVMDEV_IOC_ACCESS, &a) != 0) return errno;
  return a.status == 0 ? 0 : EIO;
}

// A device action's result: the device's value, or EIO with the device's
// status; unsupported when the host cannot reach the device.
OpOutcome FromReply(const proto::DeviceReply& reply) {
  if (reply.status == proto::kDeviceUnavailable) return Unsupported();
  OpOutcome out;
  if (reply.status != 0) {
    out.err = EIO;
    out.ret = reply.status;
  } else {
    out.ret = static_cast<int64_t>(reply.value);
  }
  return out;
}

proto::DeviceRequest Request(OpCode code, uint8_t device, uint16_t ctx, uint64_t va,
                             uint64_t arg0, uint64_t arg1) {
  proto::DeviceRequest r;
  r.op = static_cast<uint8_t>(code);
  r.device = device;
  r.ctx = ctx;
  r.va = va;
  r.arg0 = arg0;
  r.arg1 = arg1;
  return r;
}

}  // namespace

void HostCaller::InitMutex(pthread_mutex_t* mu) {
  pthread_mutexattr_t attr;
  pthread_mutexattr_init(&attr);
  pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
  pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
  pthread_mutex_init(mu, &attr);
  pthread_mutexattr_destroy(&attr);
}

proto::DeviceReply HostCaller::Call(const proto::DeviceRequest& request) const {
  proto::DeviceReply reply;
  reply.status = proto::kDeviceUnavailable;
  if (fd_ < 0) return reply;
  const std::vector<uint8_t> out = proto::Encode(request);
  std::vector<uint8_t> in(64);
  const int locked = pthread_mutex_lock(mu_);
  if (locked == EOWNERDEAD) {
    // Its holder died mid-request: the reply it never read may be waiting,
    // and is not this caller's.
    pthread_mutex_consistent(mu_);
    while (recv(fd_, in.data(), in.size(), MSG_DONTWAIT) > 0) {
    }
  } else if (locked != 0) {
    return reply;
  }
  ssize_t n = send(fd_, out.data(), out.size(), MSG_NOSIGNAL);
  if (n == static_cast<ssize_t>(out.size())) {
    while ((n = recv(fd_, in.data(), in.size(), 0)) < 0 && errno == EINTR) {
    }
  }
  pthread_mutex_unlock(mu_);
  in.resize(n > 0 ? static_cast<size_t>(n) : 0);
  if (!proto::Decode(in, &reply)) reply.status = proto::kDeviceUnavailable;
  return reply;
}

bool UsesDriver(const std::vector<Op>& ops) {
  for (const Op& op : ops)
    if (IsDriverOp(op.code) || UsesDriver(op.body)) return true;
  return false;
}

bool HaveDriver() { return access(kDevicePath, F_OK) == 0; }

Device::Device(Config config, std::vector<uint64_t> knobs, std::function<void(int fd)> on_open)
    : config_(config), knobs_(std::move(knobs)), on_open_(std::move(on_open)) {}

Device::~Device() {
  if (fd_ >= 0) close(fd_);
}

int Device::Fd() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) return fd_;
  if (!config_.declared) return -EBADF;
  return BindLocked();
}

int Device::Open(const Config& config) {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ >= 0) return -EBUSY;
  config_ = config;
  config_.declared = true;
  return BindLocked();
}

Device::Config Device::config() {
  std::lock_guard<std::mutex> lock(mu_);
  return config_;
}

uint8_t Device::dev() {
  std::lock_guard<std::mutex> lock(mu_);
  return static_cast<uint8_t>(config_.dev);
}

int Device::BindLocked() {
  const std::string path = "/dev/svmdev" + std::to_string(config_.dev);
  const int fd = open(path.c_str(), O_RDWR | O_CLOEXEC);
  if (fd < 0) return -errno;
  svmdev_bind bind = {};
  bind.personality = config_.personality;
  int err = ioctl(fd, SVMDEV_IOC_BIND, &bind) != 0 ? errno : 0;
  ctx_ = static_cast<uint16_t>(bind.ctx);
  index_ = static_cast<uint8_t>(bind.device);
  if (err == 0 && !knobs_.empty()) err = ApplyKnobs(fd);
  if (err != 0) {
    close(fd);
    return -err;
  }
  if (on_open_) on_open_(fd);
  return fd_ = fd;
}

int Device::ApplyKnobs(int fd) {
  uint64_t fields[sizeof(svmdev_knobs) / sizeof(uint64_t)] = {};
  std::copy_n(knobs_.begin(), std::min(knobs_.size(), std::size(fields)), fields);
  svmdev_knobs k;
  std::memcpy(&k, fields, sizeof(k));
  return ioctl(fd, SVMDEV_IOC_KNOBS, &k) == 0 ? 0 : errno;
}

int Device::SetKnob(uint64_t fail_vram_alloc, uint64_t fail_copy) {
  const int fd = Fd();
  if (fd < 0) return -fd;
  std::lock_guard<std::mutex> lock(mu_);
  // The ioctl sets every knob at once, so the others are written again
  // (count-down knobs start over).
  knobs_.resize(std::max<size_t>(knobs_.size(), 2));
  if (fail_vram_alloc != 0) knobs_[0] = fail_vram_alloc;
  if (fail_copy != 0) knobs_[1] = fail_copy;
  return ApplyKnobs(fd);
}

std::vector<uint64_t> Device::CheckedCounters() {
  std::lock_guard<std::mutex> lock(mu_);
  if (fd_ < 0) return {};
  svmdev_counters c = {};
  if (ioctl(fd_, SVMDEV_IOC_CHECK, &c) != 0) return {};
  return proto::FlattenCounters(c);
}

std::vector<uint64_t> DriverCounters(int fd) {
  svmdev_counters c = {};
  if (ioctl(fd, SVMDEV_IOC_COUNTERS, &c) != 0) return {};
  return std::vector<uint64_t>(c.drv, c.drv + SVMDEV_NUM_CTRS);
}

bool IsDriverOp(OpCode code) {
  // The ops that go through a driver file, and the one that opens it.
  return Describe(code).uses_file || code == OpCode::kOpenDev;
}

OpOutcome RunDriverOp(const Op& op, Buffers* buffers, Device* device, const HostCaller& host,
                    std::vector<PageMismatch>* bad) {
  switch (op.code) {
    // Device-wide: no context, so no need to bind; the device is the op's file's.
    case OpCode::kDelayAcks:
    case OpCode::kDropAcks:
    case OpCode::kFailDma:
      return FromReply(host.Call(Request(op.code, device->dev(), 0, 0, op.args[0], 0)));
    default:
      break;
  }
  const int fd = device->Fd();
  if (fd < 0) {
    OpOutcome out = Unsupported();
    if (fd != -ENOENT) {  // the driver is there but refused: that is a result
      out.err = -fd;
      out.flags = 0;
    }
    return out;
  }
  const auto& a = op.args;
  using Effect = Buffers::DeviceEffect;
  const auto range = [&](unsigned long cmd, uint64_t flags) {
    return buffers->OnRange(a[0], a[1], a[2], [&](uint8_t* addr, uint64_t pages) {
      return RangeIoctl(fd, cmd, addr, pages, flags);
    });
  };
  switch (op.code) {
    case OpCode::kMirror:
      // Fault the range in and map it in the device (hmm_range_fault with faulting).
      return range(SVMDEV_IOC_MIRROR, a[3] ? SVMDEV_RANGE_F_WRITE : 0);
    case OpCode::kMapPresent:
      // Map what the CPU already maps, without faulting.
      return range(SVMDEV_IOC_MAP_PRESENT, 0);
    case OpCode::kMigrateToDevice:
      return range(SVMDEV_IOC_MIGRATE, 0);
    case OpCode::kMigrateToSystem:
      return range(SVMDEV_IOC_MIGRATE, SVMDEV_RANGE_F_TO_SYS);
    case OpCode::kExclusive:
      return range(SVMDEV_IOC_EXCLUSIVE, 0);
    case OpCode::kRelease: {
      svmdev_range_op r = {};  // npages 0: evict all of the device's memory
      OpOutcome out;
      if (ioctl(fd, SVMDEV_IOC_RELEASE, &r) != 0) out.err = errno;
      out.ret = static_cast<int64_t>(r.done);
      return out;
    }
    case OpCode::kSnapshot:
      return buffers->OnRange(a[0], a[1], a[2], [&](uint8_t* addr, uint64_t pages) {
        std::vector<uint8_t> states(pages);
        svmdev_snapshot s = {};
        s.addr = Addr(addr);
        s.npages = pages;
        s.ptr = Addr(states.data());
        OpOutcome out;
        if (ioctl(fd, SVMDEV_IOC_SNAPSHOT, &s) != 0) out.err = errno;
        out.ret = static_cast<int64_t>(s.valid);
        return out;
      });
    case OpCode::kDeviceRead:
      return buffers->OnPages(a[0], a[1], a[2], Effect::kRead, 0,
                              [&](uint8_t* addr, uint64_t, uint8_t* data) {
                                return Access(fd, Addr(addr), SVMDEV_UACC_READ, 4096, 0, data);
                              },
                              bad);
    case OpCode::kDeviceWrite:
      return buffers->OnPages(a[0], a[1], a[2], Effect::kWrite, static_cast<uint32_t>(a[3]),
                              [&](uint8_t* addr, uint64_t, uint8_t* data) {
                                return Access(fd, Addr(addr), SVMDEV_UACC_WRITE, 4096, 0, data);
                              },
                              bad);
    case OpCode::kDeviceAtomic:
      return buffers->OnPages(a[0], a[1], a[2], Effect::kAdd, 0,
                              [&](uint8_t* addr, uint64_t, uint8_t*) {
                                return Access(fd, Addr(addr), SVMDEV_UACC_ATOMIC, 8, 1, nullptr);
                              },
                              bad);
    case OpCode::kDeviceAccess: {
      // buf, page, word, access: the device accesses one 64-bit word on its
      // own, in this file's context (a write stores 1, an atomic adds 1). An
      // atomic add on word 0 is what the shadow follows; a write or another
      // word makes it unknown.
      const uint64_t word = a[2], kind = a[3];
      const auto access = [&](uint8_t* addr) {
        return FromReply(host.Call(Request(op.code, device->index(), device->ctx(),
                                           Addr(addr) + word * 8, kind, 0)));
      };
      if (kind == SVMDEV_UACC_READ)
        return buffers->OnRange(a[0], a[1], 1, [&](uint8_t* addr, uint64_t) { return access(addr); });
      const Effect effect = kind == SVMDEV_UACC_ATOMIC && word == 0 ? Effect::kAdd
                                                                    : Effect::kClobber;
      OpOutcome done;
      OpOutcome out = buffers->OnPages(a[0], a[1], 1, effect, 0,
                                     [&](uint8_t* addr, uint64_t, uint8_t*) {
                                       done = access(addr);
                                       return done.err;
                                     },
                                     bad);
      if (out.err == done.err) {
        out.ret = done.ret;
        out.flags |= done.flags;
      }
      return out;
    }
    case OpCode::kFaultStorm:
      // buf, off, pages, count: the device's accesses spread over the mapped
      // part of the range, each stalling on a fault the driver must serve.
      return buffers->OnRange(a[0], a[1], a[2], [&](uint8_t* addr, uint64_t pages) {
        return FromReply(host.Call(Request(op.code, device->index(), device->ctx(), Addr(addr),
                                           pages, a[3])));
      });
    case OpCode::kDriverFailAlloc:
    case OpCode::kDriverFailCopy: {
      OpOutcome out;
      out.err = op.code == OpCode::kDriverFailAlloc ? device->SetKnob(a[0], 0)
                                                    : device->SetKnob(0, a[0]);
      return out;
    }
    default:
      return Unsupported();
  }
}

}  // namespace svmfuzz
