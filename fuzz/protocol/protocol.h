// Protocol v4 between the host and the in-guest executor (see docs/executor-protocol.md):
// length-prefixed binary frames over the virtio-serial port, all integers
// little-endian. This header is the only definition: the Python harness
// decodes RESULTs with this code too (svmfuzz_runner's decode_result), and
// pyharness/svmfuzz/protocol.py names the numbers in them; both sides are
// tested against the same byte layouts.
#ifndef SVMFUZZ_PROTOCOL_PROTOCOL_H_
#define SVMFUZZ_PROTOCOL_PROTOCOL_H_

#include <cstddef>
#include <cstdint>
#include <iterator>
#include <string>
#include <vector>

#include "svmdev/svmdev_uapi.h"

namespace svmfuzz::proto {

// The name the host gives the executor's virtio-serial port
// (virtserialport,name=...), by which the executor finds it.
inline constexpr char kExecutorPortName[] = "svmfuzz.exec";
// What the guest's init prints when the executor has gone; it then powers off.
inline constexpr char kExecutorExited[] = "svmfuzz-init: executor exited";

inline constexpr uint32_t kVersion = 4;
inline constexpr uint32_t kMagic = 0x464d5653;  // "SVMF" on the wire
inline constexpr size_t kHeaderSize = 12;         // magic, type, payload length
inline constexpr uint32_t kMaxPayload = 16u << 20;
// ExecRequest.knobs: at most one value per field of struct svmdev_knobs,
// whose names, in order, these are.
inline constexpr const char* kKnobNames[] = {
    "fail_vram_alloc", "fail_copy",       "fault_delay_ms",  "break_skip_invalidate",
    "break_livelock",  "break_leak_page", "break_imbalance", "break_fence_wait"};
inline constexpr size_t kMaxKnobs = sizeof(kKnobNames) / sizeof(kKnobNames[0]);
static_assert(kMaxKnobs * sizeof(uint64_t) == sizeof(svmdev_knobs));

enum class MsgType : uint32_t {
  kReady = 1,     // guest -> host, once: Ready
  kPing = 2,      // host -> guest: any payload, echoed in kPong
  kPong = 3,
  kPowerOff = 4,  // host -> guest: answered by kBye, then the guest powers off
  kBye = 5,
  kExec = 6,      // host -> guest: ExecRequest
  kResult = 7,    // guest -> host: ExecResult
  kError = 8,     // guest -> host: a request the executor could not read (text)
  kDevice = 9,       // guest -> host, while an EXEC runs: DeviceRequest
  kDeviceReply = 10, // host -> guest: DeviceReply
};

// What the guest kernel and executor can do; Ready.features.
enum Feature : uint32_t {
  kFeatureKcov = 1u << 0,
  kFeatureKcovRemote = 1u << 1,
  kFeatureDriver = 1u << 2,
  kFeatureFailNth = 1u << 3,
  kFeatureFailslab = 1u << 4,
  kFeatureFailPageAlloc = 1u << 5,
};
// The name of each Feature bit, lowest first, for whoever shows them.
inline constexpr const char* kFeatureNames[] = {"kcov",     "kcov_remote", "driver",
                                                "fail_nth", "failslab",    "fail_page_alloc"};
static_assert(1u << (std::size(kFeatureNames) - 1) == kFeatureFailPageAlloc,
              "a name for each Feature bit");

struct Ready {
  uint32_t version = kVersion;
  uint32_t features = 0;
  std::string kernel;  // uname release

  bool operator==(const Ready& o) const {
    return version == o.version && features == o.features && kernel == o.kernel;
  }
};

enum ExecFlags : uint32_t {
  kExecCover = 1u << 0,  // collect KCOV coverage (local and remote)
  // Fork the program's process when the program comes, as the executor did
  // before it forked one ahead: the benchmark's baseline.
  kExecFreshProcess = 1u << 1,
};

struct ExecRequest {
  uint64_t id = 0;
  uint32_t flags = 0;
  uint32_t op_timeout_ms = 0;       // one op longer than this ends the program (kHung)
  uint32_t program_timeout_ms = 0;  // the whole program
  uint32_t cover_cap = 0;           // at most this many distinct PCs per list
  // Test-only: struct svmdev_knobs fields, in order (missing ones 0), set on
  // every device file the program opens. Empty: the driver's defaults.
  std::vector<uint64_t> knobs;
  std::vector<uint8_t> program;     // the binary form of fuzz/program/binary.h

  bool operator==(const ExecRequest& o) const {
    return id == o.id && flags == o.flags && op_timeout_ms == o.op_timeout_ms &&
           program_timeout_ms == o.program_timeout_ms && cover_cap == o.cover_cap &&
           knobs == o.knobs && program == o.program;
  }
};

// How the program's process ended; ExecResult.detail qualifies it.
enum class Status : uint32_t {
  kOk = 0,             // ran to the end
  kCrashed = 1,        // killed by a signal it did not expect; detail: the signal
  kHung = 2,           // the watchdog killed it; detail: op index over its bound, or -1
  kOomKilled = 3,      // the OOM killer took it; detail: 0
  kStuck = 4,          // still alive after SIGKILL; detail: its state letter ('D', 'R', ...)
  kExecutorError = 5,  // the executor failed, not the program; message says why
};

// OpResult.flags.
enum OpFlags : uint16_t {
  kOpStarted = 1u << 0,
  kOpDone = 1u << 1,
  kOpTimedOut = 1u << 2,      // the per-op watchdog fired on it
  kOpUnsupported = 1u << 3,   // the guest has no way to do it yet (err is EOPNOTSUPP)
  kOpFaultInjected = 1u << 4, // fail_nth made an allocation of this op fail
  kOpAccessFault = 1u << 5,   // a CPU access faulted; ret is the signal
  kOpSkipped = 1u << 6,       // not attempted: its buffer or pages are not mapped
  kOpMismatch = 1u << 7,      // a shadow check after it found corrupted data
  kOpChildFailed = 1u << 8,   // fork: the child died of a signal or exited non-zero
};

// One per op of the decoded program, fork bodies included, in program order.
struct OpResult {
  uint8_t code = 0;
  uint8_t thread = 0;
  uint16_t flags = 0;
  int32_t err = 0;  // errno, 0 on success
  int64_t ret = 0;  // op-specific: bytes that differ for verify, wait status for fork, ...
  uint32_t duration_us = 0;

  bool operator==(const OpResult& o) const {
    return code == o.code && thread == o.thread && flags == o.flags && err == o.err &&
           ret == o.ret && duration_us == o.duration_us;
  }
};

// A byte of a buffer that does not hold what the shadow copy says it must.
struct Mismatch {
  static constexpr uint32_t kEndOfProcess = 0xffffffff;  // found by the final check
  uint32_t op = 0;  // index of the op after which it was found
  uint16_t buffer = 0;
  uint16_t offset = 0;  // byte in the page
  uint32_t page = 0;
  uint8_t expected = 0;
  uint8_t actual = 0;

  bool operator==(const Mismatch& o) const {
    return op == o.op && buffer == o.buffer && offset == o.offset && page == o.page &&
           expected == o.expected && actual == o.actual;
  }
};

// ExecResult.counters: struct svmdev_counters flattened in member order,
// drv[] cut to the SVMDEV_NUM_CTRS counters the driver has.
namespace counter {
inline constexpr size_t kHwCount = sizeof(svmdev_counters::hw) / sizeof(uint64_t);
inline constexpr size_t kHw = 0;
inline constexpr size_t kDrv = kHw + kHwCount;
inline constexpr size_t kMnStarts = kDrv + SVMDEV_NUM_CTRS;
inline constexpr size_t kMnEnds = kMnStarts + 1;
inline constexpr size_t kMnRefused = kMnStarts + 2;
inline constexpr size_t kBalanced = kMnStarts + 3;
inline constexpr size_t kCount = kMnStarts + 4;
static_assert(SVMDEV_NUM_CTRS <= sizeof(svmdev_counters::drv) / sizeof(uint64_t));
}  // namespace counter

inline std::vector<uint64_t> FlattenCounters(const svmdev_counters& c) {
  std::vector<uint64_t> out(std::begin(c.hw), std::end(c.hw));
  out.insert(out.end(), c.drv, c.drv + SVMDEV_NUM_CTRS);
  out.insert(out.end(), {c.mn_starts, c.mn_ends, c.mn_refused, c.balanced});
  return out;
}

struct ExecResult {
  uint64_t id = 0;
  Status status = Status::kOk;
  int32_t detail = 0;
  uint32_t duration_us = 0;
  std::vector<OpResult> ops;
  std::vector<Mismatch> mismatches;
  std::vector<uint64_t> counters;      // the driver's counters after the program
  // When the watchdog found the program past a deadline: how much each
  // driver counter (drv[], SVMDEV_CTR_*) rose while it watched a little longer.
  std::vector<uint64_t> watchdog_deltas;
  std::vector<uint64_t> cover;         // distinct PCs of the program's threads
  std::vector<uint64_t> remote_cover;  // distinct PCs of the driver's workers for it
  std::string message;                 // kExecutorError: why; kStuck: the tasks' kernel stacks

  bool operator==(const ExecResult& o) const {
    return id == o.id && status == o.status && detail == o.detail &&
           duration_us == o.duration_us && ops == o.ops && mismatches == o.mismatches &&
           counters == o.counters && watchdog_deltas == o.watchdog_deltas && cover == o.cover && remote_cover == o.remote_cover &&
           message == o.message;
  }
};

// A device action a program asks of the host, which performs it through the
// device's control channel (docs/device-spec.md) and answers with a DeviceReply.
struct DeviceRequest {
  uint32_t seq = 0;     // echoed in the reply; the executor numbers them
  uint8_t op = 0;       // the program's opcode (OpCode of fuzz/program/program.h)
  uint8_t device = 0;   // the N of /dev/svmdevN, in the order QEMU's devices probe
  uint16_t ctx = 0;     // the device context the driver bound the process's file to
  uint64_t va = 0;      // dev_access: the word; fault_storm: the range's first page
  uint64_t arg0 = 0;    // dev_access: access kind; fault_storm: pages; delay_acks: us;
                        // drop_acks, fail_dma: count
  uint64_t arg1 = 0;    // fault_storm: accesses

  bool operator==(const DeviceRequest& o) const {
    return seq == o.seq && op == o.op && device == o.device && ctx == o.ctx && va == o.va &&
           arg0 == o.arg0 && arg1 == o.arg1;
  }
};

// DeviceReply.status: a device status (SVMDEV_STATUS_*), or this one when the
// host cannot reach the device's control channel.
inline constexpr uint32_t kDeviceUnavailable = 0xffffffff;

struct DeviceReply {
  uint32_t seq = 0;
  uint32_t status = 0;
  uint64_t value = 0;  // dev_access: value read or old value; fault_storm: accesses that stalled

  bool operator==(const DeviceReply& o) const {
    return seq == o.seq && status == o.status && value == o.value;
  }
};

std::vector<uint8_t> EncodeFrame(MsgType type, const std::vector<uint8_t>& payload);

std::vector<uint8_t> Encode(const Ready& m);
std::vector<uint8_t> Encode(const ExecRequest& m);
std::vector<uint8_t> Encode(const ExecResult& m);
std::vector<uint8_t> Encode(const DeviceRequest& m);
std::vector<uint8_t> Encode(const DeviceReply& m);
// False if the payload is short, long, or has counts that do not fit.
bool Decode(const std::vector<uint8_t>& payload, Ready* m);
bool Decode(const std::vector<uint8_t>& payload, ExecRequest* m);
bool Decode(const std::vector<uint8_t>& payload, ExecResult* m);
bool Decode(const std::vector<uint8_t>& payload, DeviceRequest* m);
bool Decode(const std::vector<uint8_t>& payload, DeviceReply* m);

struct Frame {
  MsgType type = MsgType::kError;
  std::vector<uint8_t> payload;
};

// Splits a byte stream into frames.
class FrameReader {
 public:
  enum class Status { kFrame, kNeedMore, kBad };

  void Feed(const uint8_t* data, size_t size);
  // kBad: a header with the wrong magic or an oversized length; the reader
  // has skipped to the next magic (or the end), so calling again continues.
  Status Next(Frame* out);

 private:
  std::vector<uint8_t> buf_;
  size_t pos_ = 0;
};

}  // namespace svmfuzz::proto

#endif  // SVMFUZZ_PROTOCOL_PROTOCOL_H_
