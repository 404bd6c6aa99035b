// A stand-in for qemu-system-x86_64 in the tests of the runner (C++ and
// Python): it takes QEMU's command line, writes a console log, serves the
// executor's port the way the guest's executor does and each device's
// control channel (every request succeeds; an ACCESS reads 0x1234 and is
// reported stale).
//
// FAKE_QEMU_MODE picks how the "guest" behaves: ok (the default), warn (the
// kernel warns while booting), die (QEMU fails to start), silent (no
// executor), old (an executor of protocol 1), abort (QEMU asserts after
// READY), exec (the real executor, FAKE_QEMU_EXECUTOR, serves the port).
// In the other modes a program's first byte may order something else:
//   0xfe the kernel dies, 0xfd the guest hangs, 0xfc the executor goes away,
//   0xfb the kernel warns, 0xfa the program asks for a dev_access,
//   0xf9 a task of the program is stuck, 0xf8 the executor exits and the
//   guest powers off, 0xf7 QEMU freezes (its monitor stops answering too),
//   0xf6 the result has a status no one knows.
// The monitor (QMP) answers qmp_capabilities and query-status ("running")
// until QEMU freezes; it keeps no snapshots (savevm and loadvm fail).
// Any other program "runs": an op per byte (its opcode), coverage [length].
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <string>
#include <thread>
#include <vector>

#include "protocol/protocol.h"
#include "program/program.h"
#include "runner/fake_device.h"

namespace svmfuzz {
namespace {

using proto::MsgType;

constexpr uint64_t kBufferBase = 0x100000000000;

[[noreturn]] void SleepForever() {
  for (;;) pause();
}

int Listen(const std::string& path) {
  const int fd = socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) < 0 || listen(fd, 1) < 0) {
    std::perror(path.c_str());
    std::exit(1);
  }
  return fd;
}

// After "key=" up to the next comma.
std::string Option(const std::string& arg, const std::string& key) {
  const size_t at = arg.find(key + "=");
  if (at == std::string::npos) return "";
  const size_t start = at + key.size() + 1;
  return arg.substr(start, arg.find(',', start) - start);
}

fake::Bytes Device(const svmdev_ctl_hdr& hdr, const fake::Bytes& payload, bool*) {
  if (hdr.type == SVMDEV_CTL_PING) {
    const uint32_t reply[2] = {0x10000, 0};
    return fake::Message(hdr.type | SVMDEV_CTL_REPLY, hdr.tag, reply, sizeof(reply));
  }
  if (hdr.type == SVMDEV_CTL_ACCESS && payload.size() == sizeof(svmdev_ctl_access)) {
    svmdev_ctl_access a;
    std::memcpy(&a, payload.data(), sizeof(a));
    svmdev_ctl_event e{};
    e.stamp = 1;
    e.va = a.va;
    e.arg = 0x7f000;
    e.kind = SVMDEV_EVT_STALE;
    e.ctx = 3;
    return fake::Join(fake::Event(e), fake::Reply(hdr, 0x1234));
  }
  return fake::Reply(hdr);
}

std::atomic<bool> frozen{false};

void ServeMonitor(const std::string& path) {
  const int listener = Listen(path);
  std::thread([listener] {
    for (int fd; (fd = accept(listener, nullptr, nullptr)) >= 0;) {
      if (frozen) continue;  // connected, never answered
      const std::string greeting = "{\"QMP\": {\"version\": {}, \"capabilities\": []}}\r\n";
      WriteAll(fd, reinterpret_cast<const uint8_t*>(greeting.data()), greeting.size());
      std::string got;
      char buf[1024];
      for (ssize_t n; !frozen && (n = read(fd, buf, sizeof(buf))) > 0;) {
        got.append(buf, static_cast<size_t>(n));
        for (size_t nl; (nl = got.find('\n')) != std::string::npos; got.erase(0, nl + 1)) {
          const std::string line = got.substr(0, nl);
          // HMP's savevm and loadvm say what went wrong in their output.
          const std::string reply =
              line.find("query-status") != std::string::npos
                  ? "{\"return\": {\"status\": \"running\", \"running\": true}}\r\n"
              : line.find("human-monitor-command") != std::string::npos
                  ? "{\"return\": \"Error: the stand-in keeps no snapshots\\r\\n\"}\r\n"
                  : "{\"return\": {}}\r\n";
          WriteAll(fd, reinterpret_cast<const uint8_t*>(reply.data()), reply.size());
        }
      }
      close(fd);
    }
  }).detach();
}

void ServeControlChannels(const std::vector<std::string>& paths) {
  for (const std::string& path : paths) {
    const int listener = Listen(path);
    std::thread([listener] {
      const int fd = accept(listener, nullptr, nullptr);
      if (fd >= 0) fake::Serve(fd, Device);
    }).detach();
  }
}

class Port {
 public:
  explicit Port(int fd) : fd_(fd) {}
  void Send(MsgType type, const std::vector<uint8_t>& payload) {
    const std::vector<uint8_t> bytes = proto::EncodeFrame(type, payload);
    WriteAll(fd_, bytes.data(), bytes.size());
  }
  bool Receive(proto::Frame* f) {
    while (reader_.Next(f) != proto::FrameReader::Status::kFrame) {
      uint8_t buf[65536];
      const ssize_t n = read(fd_, buf, sizeof(buf));
      if (n <= 0) return false;
      reader_.Feed(buf, static_cast<size_t>(n));
    }
    return true;
  }
  int fd() const { return fd_; }

 private:
  int fd_;
  proto::FrameReader reader_;
};

void Write(std::ofstream& console, const std::string& line) {
  console << line << "\n";
  console.flush();
}

int Main(int argc, char** argv) {
  const char* env = std::getenv("FAKE_QEMU_MODE");
  const std::string mode = env ? env : "ok";
  std::string console_path, exec_path;
  std::vector<std::string> ctl_paths;
  std::string qmp_path;
  for (int i = 1; i < argc; i++) {
    const std::string a = argv[i];
    if (a.rfind("file,id=con,", 0) == 0) console_path = Option(a, "path");
    if (a.rfind("socket,id=exec,", 0) == 0) exec_path = Option(a, "path");
    if (a.rfind("socket,id=ctl", 0) == 0) ctl_paths.push_back(Option(a, "path"));
    if (a == "-qmp" && i + 1 < argc) {
      const std::string unix_path = std::string(argv[i + 1]).substr(5);  // after "unix:"
      qmp_path = unix_path.substr(0, unix_path.find(','));
    }
  }
  std::ofstream console(console_path);
  Write(console, "svmdev 0000:00:03.0: svmdev interface 1.0");
  if (mode == "warn") Write(console, "WARNING: CPU: 1 PID: 9 at mm/hmm.c:1 hmm_foo+0x1");
  if (mode == "die") {
    std::fprintf(stderr, "qemu: could not load kernel\n");
    return 1;
  }
  if (!qmp_path.empty()) ServeMonitor(qmp_path);
  const int listener = Listen(exec_path);
  const int conn = accept(listener, nullptr, nullptr);
  ServeControlChannels(ctl_paths);
  if (mode == "exec") {  // QEMU lives as long as the executor does
    const pid_t pid = fork();
    if (pid == 0) {
      const char* exe = std::getenv("FAKE_QEMU_EXECUTOR");
      const std::string fd = std::to_string(conn);
      execl(exe, exe, "--fd", fd.c_str(), nullptr);
      std::perror(exe);
      _exit(127);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  }
  if (mode == "silent") SleepForever();
  Port port(conn);
  proto::Ready ready{mode == "old" ? 1 : proto::kVersion, proto::kFeatureKcov, "fake"};
  port.Send(MsgType::kReady, proto::Encode(ready));
  if (mode == "abort") {  // QEMU asserting with a request unread: the host sees a reset
    sleep(1);
    std::fprintf(stderr, "qemu-system-x86_64: kvm.c:3183: Assertion failed\n");
    std::abort();
  }
  proto::Frame f;
  while (port.Receive(&f)) {
    if (f.type == MsgType::kPing) {
      port.Send(MsgType::kPong, f.payload);
    } else if (f.type == MsgType::kPowerOff) {
      port.Send(MsgType::kBye, {});
      return 0;
    } else if (f.type == MsgType::kExec) {
      proto::ExecRequest req;
      proto::Decode(f.payload, &req);
      const int what = req.program.empty() ? -1 : req.program[0];
      proto::ExecResult res;
      res.id = req.id;
      int64_t ret = 0;
      switch (what) {
        case 0xfe:
          Write(console, "BUG: KASAN: use-after-free in hmm_range_fault+0x1/0x2");
          Write(console, "Kernel panic - not syncing: KASAN");
          return 0;
        case 0xfd:
          SleepForever();
        case 0xf7:
          frozen = true;
          SleepForever();
        case 0xfc:
          close(conn);
          SleepForever();
        case 0xfb:
          Write(console, "WARNING: CPU: 0 PID: 1 at mm/hmm.c:2 hmm_bar+0x2");
          break;
        case 0xfa: {  // the host answers a dev_access mid-program
          const proto::DeviceRequest ask{7,
                                         static_cast<uint8_t>(OpCode::kDeviceAccess),
                                         0,
                                         3,
                                         kBufferBase + 8,
                                         SVMDEV_ACC_READ,
                                         0};
          port.Send(MsgType::kDevice, proto::Encode(ask));
          proto::Frame r;
          proto::DeviceReply reply;
          if (!port.Receive(&r) || !proto::Decode(r.payload, &reply)) return 1;
          ret = reply.seq == 7 ? static_cast<int64_t>(reply.value) : -1;
          break;
        }
        case 0xf9:
          res.status = proto::Status::kStuck;
          res.detail = 'D';
          break;
        case 0xf8:
          Write(console, proto::kExecutorExited);
          return 0;
        case 0xf6:
          res.status = static_cast<proto::Status>(99);
          break;
      }
      for (uint8_t b : req.program) {
        res.ops.push_back(proto::OpResult{b, 0, proto::kOpStarted | proto::kOpDone, 0, ret, 1});
      }
      res.cover = {req.program.size()};
      port.Send(MsgType::kResult, proto::Encode(res));
    }
  }
  return 0;
}

}  // namespace
}  // namespace svmfuzz

int main(int argc, char** argv) { return svmfuzz::Main(argc, argv); }
