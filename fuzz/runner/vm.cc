#include "runner/vm.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <fstream>
#include <initializer_list>
#include <sstream>
#include <thread>

extern char** environ;

namespace svmfuzz {
namespace {

namespace fs = std::filesystem;

const char* const kFirmwareDirs[] = {"/usr/share/qemu", "/usr/share/seabios"};
// How long QEMU gets to say how it died once its port has closed.
constexpr double kDyingSeconds = 2;
constexpr double kConnectRetrySeconds = 0.05;

void Sleep(double seconds) { std::this_thread::sleep_for(std::chrono::duration<double>(seconds)); }

// The text of a JSON string ("..."), escapes undone; empty if it is not one.
std::string JsonUnquote(const std::string& json) {
  std::string out;
  if (json.size() < 2 || json.front() != '"') return out;
  for (size_t i = 1; i + 1 < json.size(); i++) {
    char c = json[i];
    if (c == '\\' && i + 2 < json.size()) {
      c = json[++i];
      if (c == 'n') c = '\n';
      if (c == 'r') c = '\r';
      if (c == 't') c = '\t';
      if (c == 'u' && i + 4 < json.size()) {
        c = static_cast<char>(std::strtol(json.substr(i + 1, 4).c_str(), nullptr, 16));
        i += 4;
      }
    } else if (c == '"') {
      break;
    }
    out += c;
  }
  return out;
}

// The string value of the first "key" in a line of QMP; empty if none.
std::string JsonField(const std::string& json, const std::string& key) {
  const size_t at = json.find("\"" + key + "\"");
  if (at == std::string::npos) return "";
  const size_t colon = json.find(':', at);
  const size_t open = colon == std::string::npos ? colon : json.find_first_not_of(" ", colon + 1);
  if (open == std::string::npos || json[open] != '"') return "";
  size_t close = open + 1;
  while (close < json.size() && json[close] != '"') close += json[close] == '\\' ? 2 : 1;
  return JsonUnquote(json.substr(open, close - open + 1));
}

}  // namespace

Vm::Vm(VmConfig cfg) : cfg_(std::move(cfg)) {
  std::error_code ec;
  fs::create_directories(cfg_.workdir, ec);
  console_log_ = cfg_.workdir / (cfg_.name + ".console.log");
  stderr_log_ = cfg_.workdir / (cfg_.name + ".qemu.log");
  // Unix socket paths are short; keep them out of a possibly deep workdir.
  const char* tmp = std::getenv("TMPDIR");
  std::string dir = std::string(tmp && *tmp ? tmp : "/tmp") + "/svmfuzz-XXXXXX";
  if (mkdtemp(dir.data()) != nullptr) sockdir_ = dir;
}

Vm::~Vm() { Kill(); }

fs::path Vm::ctl_socket(int index) const {
  return sockdir_ / ("ctl" + std::to_string(index) + ".sock");
}

std::vector<std::string> Vm::Argv() const {
  const VmConfig& c = cfg_;
  std::string append = "console=ttyS0 panic=-1 printk.devkmsg=on svmfuzz.run=" + c.run;
  for (const std::string& a : c.extra_append) append += " " + a;
  std::vector<std::string> argv = {
      c.qemu.string(),        "-M",   "q35",    "-accel",      c.accel,    "-smp",
      std::to_string(c.cpus), "-m",   c.memory, "-nodefaults", "-display", "none",
      "-no-reboot",           "-nic", "none"};
  for (const char* dir : kFirmwareDirs) argv.insert(argv.end(), {"-L", dir});
  const std::string console = c.interactive
                                  ? "stdio,id=con,signal=off,logfile=" + console_log_.string()
                                  : "file,id=con,path=" + console_log_.string();
  argv.insert(
      argv.end(),
      {"-chardev", console, "-serial", "chardev:con", "-kernel", (c.kernel / "bzImage").string(),
       "-initrd", c.initramfs.string(), "-append", append, "-device", "virtio-serial-pci,id=vser0",
       "-chardev", "socket,id=exec,path=" + exec_socket().string() + ",server=on,wait=off",
       "-device", std::string("virtserialport,bus=vser0.0,chardev=exec,name=") + proto::kExecutorPortName,
       "-qmp", "unix:" + qmp_socket().string() + ",server=on,wait=off"});
  if (c.accel == "kvm") argv.insert(argv.end(), {"-cpu", "host"});
  if (!c.snapshot_disk.empty()) {
    // Not a disk of the guest's: only savevm's store.
    std::string file;
    for (const char ch : c.snapshot_disk.string()) file += ch == ',' ? ",," : std::string(1, ch);
    argv.insert(argv.end(), {"-drive", "if=none,id=snapshots,format=qcow2,file=" + file});
  }
  for (int i = 0; i < c.devices; i++) {
    const std::string n = std::to_string(i);
    argv.insert(argv.end(),
                {"-chardev",
                 "socket,id=ctl" + n + ",path=" + ctl_socket(i).string() + ",server=on,wait=off",
                 "-device",
                 "svmdev,id=svm" + n + ",chardev=ctl" + n +
                     (c.vram.empty() ? "" : ",vram-size=" + c.vram)});
  }
  return argv;
}

bool Vm::Start(std::string* error) {
  if (pid_ > 0) {
    *error = cfg_.name + ": already started";
    return false;
  }
  if (!fs::is_regular_file(cfg_.qemu)) {
    *error = "QEMU binary " + cfg_.qemu.string() + " is missing";
    return false;
  }
  if (sockdir_.empty()) {
    *error = cfg_.name + ": no directory for its sockets: " + std::strerror(errno);
    return false;
  }
  std::ofstream(console_log_, std::ios::trunc);
  const std::vector<std::string> args = Argv();
  std::vector<char*> argv;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);

  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  if (!cfg_.interactive) {
    posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
    posix_spawn_file_actions_addopen(&files, 1, "/dev/null", O_WRONLY, 0);
  }
  posix_spawn_file_actions_addopen(&files, 2, stderr_log_.c_str(), O_WRONLY | O_CREAT | O_TRUNC,
                                   0644);
  // QEMU gets default signal handling whatever its caller ignores (Python
  // ignores SIGPIPE) or blocks.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, defaults;
  sigemptyset(&none);
  sigemptyset(&defaults);
  sigaddset(&defaults, SIGPIPE);
  sigaddset(&defaults, SIGXFSZ);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &defaults);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);
  started_ = Clock::now();
  const int rc = posix_spawn(&pid_, argv[0], &files, &attr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&files);
  posix_spawnattr_destroy(&attr);
  if (rc != 0) {
    pid_ = -1;
    *error = cfg_.name + ": cannot start " + cfg_.qemu.string() + ": " + std::strerror(rc);
    return false;
  }
  return true;
}

void Vm::Reap(int status) {
  exit_status_ = WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

bool Vm::Alive() {
  if (pid_ <= 0 || exit_status_) return false;
  int status = 0;
  const pid_t got = waitpid(pid_, &status, WNOHANG);
  if (got == pid_) Reap(status);
  // Reaped by someone else: gone all the same.
  if (got < 0 && errno == ECHILD) exit_status_ = -SIGKILL;
  return !exit_status_;
}

std::optional<int> Vm::WaitExit(double timeout) {
  if (pid_ <= 0) return std::nullopt;
  const Clock::time_point deadline = After(timeout);
  double pause = 0.005;
  while (Alive()) {
    if (timeout >= 0 && SecondsLeft(deadline) <= 0) return std::nullopt;
    Sleep(timeout >= 0 ? std::min(pause, std::max(SecondsLeft(deadline), 0.0)) : pause);
    pause = std::min(pause * 2, 0.05);
  }
  return exit_status_;
}

void Vm::Kill() {
  for (auto& [index, ctl] : ctls_) ctl->Close();
  ctls_.clear();
  link_.reset();
  if (Alive()) {
    kill(pid_, SIGKILL);
    int status = 0;
    while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
    }
    Reap(status);
  }
  if (!sockdir_.empty()) {
    std::error_code ec;
    fs::remove_all(sockdir_, ec);
  }
}

double Vm::Elapsed() const { return SecondsSince(started_); }

std::string Vm::ConsoleTail(size_t lines) const {
  std::istringstream in(ReadFile(console_log_));
  std::deque<std::string> tail;
  for (std::string line; std::getline(in, line);) {
    tail.push_back(line);
    if (tail.size() > lines) tail.pop_front();
  }
  std::string out;
  for (const std::string& line : tail) out += (out.empty() ? "" : "\n") + line;
  return out;
}

std::string Vm::Died(const std::string& what) {
  const std::optional<int> rc = WaitExit(kDyingSeconds);
  const std::string who = rc ? "QEMU exited (" + std::to_string(*rc) + ")" : "the guest";
  const std::string said = Trim(ReadFile(stderr_log_));
  return cfg_.name + ": " + who + " " + what +
         "\nQEMU said: " + (said.empty() ? "(nothing)" : said) + "\nconsole tail:\n" +
         ConsoleTail(25);
}

std::string Vm::Frozen(double timeout) {
  // "pid (comm) state ...": comm may hold spaces and parentheses.
  const std::string stat = ReadFile("/proc/" + std::to_string(pid_) + "/stat");
  const size_t close_paren = stat.rfind(')');
  if (close_paren != std::string::npos && close_paren + 2 < stat.size()) {
    const char state = stat[close_paren + 2];
    if (state == 'T' || state == 't') return std::string("QEMU is stopped (state ") + state + ")";
  }
  std::vector<std::string> returns;
  std::string error;
  if (!Monitor({R"({"execute": "query-status"})"}, timeout, &returns, &error)) return error;
  const std::string status = JsonField(returns[0], "status");
  return status == "running" ? ""
                             : "QEMU says the VM is not running (status " +
                                   (status.empty() ? "unknown" : status) + ")";
}

bool Vm::Monitor(const std::vector<std::string>& commands, double timeout,
                 std::vector<std::string>* returns, std::string* error) {
  const Clock::time_point deadline = After(timeout);
  const int fd = ConnectUnix(qmp_socket().string());
  if (fd < 0) {
    *error = "QEMU's monitor does not take a connection: " + std::string(std::strerror(errno));
    return false;
  }
  std::string got;
  // The monitor's next whole line that starts with one of `starts`; events
  // are skipped.
  const auto next_line = [&](std::initializer_list<const char*> starts, std::string* line) {
    for (;;) {
      for (size_t nl; (nl = got.find('\n')) != std::string::npos;) {
        *line = Trim(got.substr(0, nl));
        got.erase(0, nl + 1);
        for (const char* start : starts) {
          if (line->rfind(start, 0) == 0) return true;
        }
      }
      char buf[4096];
      if (!WaitReadable(fd, deadline)) return false;
      const ssize_t n = read(fd, buf, sizeof(buf));
      if (n <= 0) return false;
      got.append(buf, static_cast<size_t>(n));
    }
  };
  const auto ask = [&](const std::string& command) {
    const std::string text = command + "\n";
    return WriteAll(fd, reinterpret_cast<const uint8_t*>(text.data()), text.size());
  };
  returns->clear();
  std::string line;
  bool answered = next_line({"{\"QMP\""}, &line) && ask(R"({"execute": "qmp_capabilities"})") &&
                  next_line({"{\"return\""}, &line);
  for (size_t i = 0; answered && i < commands.size(); i++) {
    answered = ask(commands[i]) && next_line({"{\"return\"", "{\"error\""}, &line);
    if (answered && line.rfind("{\"error\"", 0) == 0) {
      close(fd);
      const std::string desc = JsonField(line, "desc");
      *error = "QEMU's monitor refused " + commands[i] + ": " + (desc.empty() ? line : desc);
      return false;
    }
    // {"return": VALUE}
    const size_t colon = line.find(':');
    if (answered) returns->push_back(Trim(line.substr(colon + 1, line.rfind('}') - colon - 1)));
  }
  close(fd);
  if (!answered) {
    char seconds[32];
    std::snprintf(seconds, sizeof(seconds), "%.0f", timeout);
    *error = std::string("QEMU's monitor did not answer within ") + seconds + " s";
  }
  return answered;
}

bool Vm::Hmp(const std::string& command, double timeout, std::string* error) {
  std::vector<std::string> returns;
  if (!Monitor({R"({"execute": "human-monitor-command", "arguments": {"command-line": )" +
                JsonString(command) + "}}"},
               timeout, &returns, error)) {
    return false;
  }
  // The output is a JSON string: "" when the command had nothing to say.
  const std::string said = Trim(JsonUnquote(returns[0]));
  if (said.empty()) return true;
  *error = cfg_.name + ": " + command + ": " + said;
  return false;
}

bool Vm::Pause(double timeout, std::string* error) {
  std::vector<std::string> returns;
  return Monitor({R"({"execute": "stop"})"}, timeout, &returns, error);
}

bool Vm::Resume(double timeout, std::string* error) {
  std::vector<std::string> returns;
  return Monitor({R"({"execute": "cont"})"}, timeout, &returns, error);
}

bool Vm::SaveSnapshot(const std::string& tag, double timeout, std::string* error) {
  if (cfg_.snapshot_disk.empty()) {
    *error = cfg_.name + ": no disk for snapshots";
    return false;
  }
  return Hmp("savevm " + tag, timeout, error);
}

bool Vm::LoadSnapshot(const std::string& tag, const std::string& name, double timeout,
                      std::string* error) {
  for (auto& [index, ctl] : ctls_) ctl->Close();
  ctls_.clear();
  const fs::path console = cfg_.workdir / (name + ".console.log");
  std::vector<std::string> returns;
  if (!cfg_.interactive &&
      !Monitor({R"({"execute": "chardev-change", "arguments": {"id": "con", "backend": )"
                R"({"type": "file", "data": {"out": )" +
                JsonString(console.string()) + "}}}}"},
               timeout, &returns, error)) {
    return false;
  }
  cfg_.name = name;
  console_log_ = console;
  if (!Hmp("loadvm " + tag, timeout, error)) return false;
  if (link_) link_->Discard();
  return true;
}

LinkStatus Vm::Resync(double timeout, std::string* error) {
  ExecutorLink* link = Link(After(timeout), error);
  if (link == nullptr) return LinkStatus::kClosed;
  return Explain(link->Resync(timeout), error);
}

ExecutorLink* Vm::Link(Clock::time_point deadline, std::string* error) {
  while (!link_) {
    if (!Alive()) {
      *error = Died("before the executor port opened");
      return nullptr;
    }
    const int fd = ConnectUnix(exec_socket().string());
    if (fd >= 0) {
      link_ = std::make_unique<ExecutorLink>(fd);
      link_->set_alive([this] { return Alive(); });
      break;
    }
    if (SecondsLeft(deadline) <= 0) {
      *error = cfg_.name + ": executor port never appeared";
      return nullptr;
    }
    Sleep(kConnectRetrySeconds);
  }
  return link_.get();
}

LinkStatus Vm::Explain(LinkStatus status, std::string* error) {
  switch (status) {
    case LinkStatus::kOk:
      break;
    case LinkStatus::kTimeout:
      *error = cfg_.name + ": the executor did not answer in time";
      break;
    case LinkStatus::kClosed:
      *error = Died(link_->error());
      break;
    case LinkStatus::kProtocol:
      *error = cfg_.name + ": executor " + link_->error();
      break;
  }
  return status;
}

bool Vm::WaitReady(double timeout, std::string* error) {
  const Clock::time_point deadline = After(timeout);
  ExecutorLink* link = Link(deadline, error);
  if (link == nullptr) return false;
  const LinkStatus status = link->WaitReady(SecondsLeft(deadline), &ready_);
  if (status == LinkStatus::kTimeout) {
    char seconds[32];
    std::snprintf(seconds, sizeof(seconds), "%.0f", timeout);
    *error = cfg_.name + ": no executor after " + seconds + " s (accel " + cfg_.accel +
             "); console tail:\n" + ConsoleTail(25);
    return false;
  }
  return Explain(status, error) == LinkStatus::kOk;
}

LinkStatus Vm::Ping(double* seconds, std::string* error) {
  constexpr double kPingTimeout = 10;
  ExecutorLink* link = Link(After(kPingTimeout), error);
  if (link == nullptr) return LinkStatus::kClosed;
  return Explain(link->Ping(kPingTimeout, seconds), error);
}

LinkStatus Vm::Execute(const proto::ExecRequest& request, double timeout, DeviceHandler* devices,
                       Executed* out, std::string* error) {
  ExecutorLink* link = Link(After(timeout), error);
  if (link == nullptr) return LinkStatus::kClosed;
  return Explain(link->Execute(request, timeout, devices, out), error);
}

bool Vm::PowerOff(double timeout, std::string* error) {
  const Clock::time_point deadline = After(timeout);
  ExecutorLink* link = Link(deadline, error);
  if (link == nullptr) return false;
  if (Explain(link->PowerOff(timeout), error) != LinkStatus::kOk) return false;
  if (!WaitExit(std::max(SecondsLeft(deadline), 0.0))) {
    *error = cfg_.name + ": QEMU still running after the guest said BYE";
    return false;
  }
  return true;
}

std::shared_ptr<DevCtl> Vm::ControlChannel(int index, double timeout, std::string* error) {
  auto it = ctls_.find(index);
  if (it != ctls_.end()) return it->second;
  if (index < 0 || index >= cfg_.devices) {
    *error = cfg_.name + ": no device svm" + std::to_string(index);
    return nullptr;
  }
  const Clock::time_point deadline = After(timeout);
  for (;;) {
    if (!Alive()) {
      *error = Died("before its control channel opened");
      return nullptr;
    }
    const int fd = ConnectUnix(ctl_socket(index).string());
    if (fd >= 0) return ctls_[index] = std::make_shared<DevCtl>(fd);
    if (SecondsLeft(deadline) <= 0) {
      *error = cfg_.name + ": control channel of svm" + std::to_string(index) + " never appeared";
      return nullptr;
    }
    Sleep(kConnectRetrySeconds);
  }
}

int KillStrayVms(const std::filesystem::path& vm_workdir) {
  const std::string mark = "path=" + (vm_workdir / "").string();
  int killed = 0;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (const dirent* e = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == getpid()) continue;
    const std::string cmdline = ReadFile(std::string("/proc/") + e->d_name + "/cmdline");
    if (cmdline.find(mark) != std::string::npos && cmdline.find("svmfuzz.run=") != std::string::npos &&
        kill(static_cast<pid_t>(pid), SIGKILL) == 0) {
      killed++;
    }
  }
  closedir(proc);
  return killed;
}

}  // namespace svmfuzz
