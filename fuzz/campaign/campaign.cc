#include "campaign/campaign.h"

#include <dirent.h>
#include <fcntl.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "svmdev_uapi.h"

namespace svmfuzz::campaign {
namespace {

namespace fs = std::filesystem;

// ExecResult.counters: hw[16], drv[SVMDEV_NUM_CTRS], mn_starts, mn_ends,
// mn_refused, balanced (PROTOCOL.md).
constexpr size_t kHwCounters = 16;
constexpr size_t kMnStarts = kHwCounters + SVMDEV_NUM_CTRS;
constexpr size_t kMnEnds = kMnStarts + 1;
constexpr size_t kBalanced = kMnStarts + 3;
// The driver's retry loops, by the counter their retries raise.
constexpr struct {
  size_t counter;
  const char* name;
} kRetryCounters[] = {{SVMDEV_CTR_HMM_BUSY, "hmm_busy"},
                      {SVMDEV_CTR_READ_RETRY, "read_retry"},
                      {SVMDEV_CTR_EXCL_RETRY, "excl_retry"}};
// A saved console window keeps its end: that is where the report is.
constexpr size_t kMaxConsoleSaved = 256 << 10;

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

std::string JsonString(const std::string& s) {
  std::string out = "\"";
  for (const unsigned char c : s) {
    if (c == '"' || c == '\\') {
      out += '\\';
      out += static_cast<char>(c);
    } else if (c < 0x20) {
      char esc[8];
      std::snprintf(esc, sizeof(esc), "\\u%04x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  return out + "\"";
}

// A number field of the stats.json this campaign wrote before.
double JsonNumber(const std::string& json, const std::string& key) {
  const std::regex re("\"" + key + "\":\\s*([0-9.eE+-]+)");
  std::smatch m;
  return std::regex_search(json, m, re) ? std::stod(m[1]) : 0;
}

// printk's prefix: "[   12.345678][  T123] ".
const std::regex& PrintkPrefix() {
  static const std::regex re(R"(^(<\d+>)?\[\s*\d+\.\d+\](\[\s*[CT]\d+\])?\s?)");
  return re;
}

struct Header {
  std::regex re;
  bool kernel;
};

const std::vector<Header>& Headers() {
  static const std::vector<Header> headers = [] {
    std::vector<Header> h;
    for (const char* driver : {"svmdev: livelock suspected", "svmdev: unbalanced"}) {
      h.push_back({std::regex(driver), false});
    }
    for (const char* kernel :
         {"BUG:", "KASAN:", "UBSAN:", "WARNING:", "general protection fault", "kernel BUG at",
          "Kernel panic", "INFO: task .* blocked for more than", "watchdog: BUG: soft lockup",
          "rcu: INFO: rcu_.* detected( expedited)? stall", "possible circular locking",
          "Oops:"}) {
      h.push_back({std::regex(kernel), true});
    }
    return h;
  }();
  return headers;
}

}  // namespace

bool ParseConfig(const std::string& text, Config* out, std::string* error) {
  Config c;
  std::istringstream in(text);
  int number = 0;
  for (std::string line; std::getline(in, line);) {
    number++;
    line = Trim(line.substr(0, line.find('#')));
    if (line.empty()) continue;
    const size_t eq = line.find('=');
    if (eq == std::string::npos) {
      *error = "line " + std::to_string(number) + ": not key = value: " + line;
      return false;
    }
    const std::string key = Trim(line.substr(0, eq));
    const std::string value = Trim(line.substr(eq + 1));
    try {
      if (key == "qemu") {
        c.runner.vm.qemu = value;
      } else if (key == "kernel") {
        c.runner.vm.kernel = value;
      } else if (key == "initramfs") {
        c.runner.vm.initramfs = value;
      } else if (key == "workdir") {
        c.workdir = value;
      } else if (key == "vm_workdir") {
        c.runner.vm.workdir = value;
      } else if (key == "engine") {
        c.engine = value;
      } else if (key == "accel") {
        c.runner.vm.accel = value;
      } else if (key == "memory") {
        c.runner.vm.memory = value;
      } else if (key == "cpus") {
        c.runner.vm.cpus = std::stoi(value);
      } else if (key == "devices") {
        c.runner.vm.devices = std::stoi(value);
      } else if (key == "append") {
        std::istringstream words(value);
        for (std::string w; words >> w;) c.runner.vm.extra_append.push_back(w);
      } else if (key == "boot_timeout") {
        c.runner.boot_timeout = std::stod(value);
      } else if (key == "op_timeout_ms") {
        c.runner.op_timeout_ms = static_cast<uint32_t>(std::stoul(value));
      } else if (key == "program_timeout_ms") {
        c.runner.program_timeout_ms = static_cast<uint32_t>(std::stoul(value));
      } else if (key == "stats_seconds") {
        c.stats_seconds = std::stod(value);
      } else if (key == "saved_per_kind") {
        c.saved_per_kind = std::stoi(value);
      } else {
        *error = "line " + std::to_string(number) + ": unknown key " + key;
        return false;
      }
    } catch (const std::exception&) {
      *error = "line " + std::to_string(number) + ": bad value for " + key + ": " + value;
      return false;
    }
  }
  for (const auto& [name, path] : {std::pair<const char*, const fs::path*>{"qemu", &c.runner.vm.qemu},
                                   {"kernel", &c.runner.vm.kernel},
                                   {"initramfs", &c.runner.vm.initramfs},
                                   {"workdir", &c.workdir}}) {
    if (path->empty()) {
      *error = std::string("no ") + name + " given";
      return false;
    }
  }
  if (c.runner.vm.workdir.empty()) c.runner.vm.workdir = c.workdir / "vm";
  *out = std::move(c);
  return true;
}

bool LoadConfig(const fs::path& path, Config* out, std::string* error) {
  std::ifstream f(path);
  if (!f) {
    *error = "cannot read " + path.string();
    return false;
  }
  std::stringstream s;
  s << f.rdbuf();
  if (!ParseConfig(s.str(), out, error)) {
    *error = path.string() + ": " + *error;
    return false;
  }
  return true;
}

size_t PcSlot(uint64_t pc, size_t size) {
  // Kernel PCs share their high bits: mix them all into the low ones.
  uint64_t h = pc * 0x9e3779b97f4a7c15ull;
  h ^= h >> 29;
  h *= 0xbf58476d1ce4e5b9ull;
  h ^= h >> 32;
  return static_cast<size_t>(h % size);
}

void MapPcs(const std::vector<uint64_t>& pcs, uint8_t* map, size_t size) {
  for (const uint64_t pc : pcs) {
    uint8_t& slot = map[PcSlot(pc, size)];
    if (slot != 255) slot++;
  }
}

std::optional<Report> FindReport(const std::string& console) {
  std::istringstream in(console);
  for (std::string line; std::getline(in, line);) {
    const std::string text = std::regex_replace(line, PrintkPrefix(), "");
    for (const Header& h : Headers()) {
      if (std::regex_search(text, h.re)) return Report{Trim(line), h.kernel};
    }
  }
  return std::nullopt;
}

std::vector<std::string> Trouble(const Outcome& outcome, const std::string& console) {
  std::vector<std::string> out;
  if (const std::optional<Report> report = FindReport(console)) {
    const std::string text = std::regex_replace(report->line, PrintkPrefix(), "");
    out.push_back((report->kernel ? "kernel: " : "driver: ") + text);
  }
  if (!outcome.lost.empty()) {
    static const char* const kinds[] = {"", "no output", "executor lost", "vm lost"};
    out.push_back(std::string("guest lost (") + kinds[static_cast<int>(outcome.lost_kind)] +
                  "): " + outcome.lost.substr(0, outcome.lost.find('\n')));
  }
  if (!outcome.result) return out;
  const proto::ExecResult& r = *outcome.result;
  if (r.status == proto::Status::kStuck) {
    out.push_back(std::string("stuck: a task of the program in state ") +
                  static_cast<char>(r.detail) + " after SIGKILL");
  }
  std::string rose;
  for (const auto& c : kRetryCounters) {
    if (c.counter < r.watchdog_deltas.size() && r.watchdog_deltas[c.counter]) {
      rose += std::string(rose.empty() ? "" : ", ") + c.name + " +" +
              std::to_string(r.watchdog_deltas[c.counter]);
    }
  }
  if (!rose.empty()) out.push_back("livelock: past its deadline with retries rising: " + rose);
  if (r.counters.size() > kBalanced && r.counters[kBalanced] == 0) {
    out.push_back("notifier: unbalanced start/end (starts " +
                  std::to_string(r.counters[kMnStarts]) + ", ends " +
                  std::to_string(r.counters[kMnEnds]) + ")");
  }
  if (!r.mismatches.empty()) {
    out.push_back("shadow: " + std::to_string(r.mismatches.size()) + " byte(s) differ, first in buffer " +
                  std::to_string(r.mismatches[0].buffer));
  }
  if (!outcome.stale.empty()) {
    out.push_back("device: " + std::to_string(outcome.stale.size()) + " stale access(es)");
  }
  return out;
}

std::string Kind(const std::string& trouble) {
  static const std::regex offsets(R"(\+0x[0-9a-f]+/0x[0-9a-f]+)");
  static const std::regex numbers(R"((0x)?[0-9a-f]*[0-9][0-9a-f]*)");
  std::string kind = trouble.substr(0, trouble.find(" (starts"));
  kind = std::regex_replace(kind, offsets, "");
  return std::regex_replace(kind, numbers, "N");
}

bool WriteAtomic(const fs::path& path, const std::string& data, std::string* error) {
  std::string tmp = (path.parent_path() / ("." + path.filename().string() + ".XXXXXX")).string();
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    *error = "cannot create a file in " + path.parent_path().string() + ": " + std::strerror(errno);
    return false;
  }
  bool ok = fchmod(fd, 0644) == 0;
  for (size_t done = 0; ok && done < data.size();) {
    const ssize_t n = write(fd, data.data() + done, data.size() - done);
    if (n < 0 && errno == EINTR) continue;
    ok = n > 0;
    done += ok ? static_cast<size_t>(n) : 0;
  }
  ok = ok && fsync(fd) == 0;
  ok = (close(fd) == 0) && ok;
  ok = ok && rename(tmp.c_str(), path.c_str()) == 0;
  if (!ok) {
    *error = "cannot write " + path.string() + ": " + std::strerror(errno);
    unlink(tmp.c_str());
    return false;
  }
  // The rename itself lasts once the directory is synced.
  const int dir = open(path.parent_path().c_str(), O_RDONLY | O_DIRECTORY);
  if (dir >= 0) {
    fsync(dir);
    close(dir);
  }
  return true;
}

std::string InputHash(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

int KillStrayVms(const fs::path& vm_workdir) {
  const std::string mark = "path=" + (vm_workdir / "").string();
  int killed = 0;
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return 0;
  while (const dirent* e = readdir(proc)) {
    char* end = nullptr;
    const long pid = std::strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == getpid()) continue;
    const std::string cmdline = ReadFile(fs::path("/proc") / e->d_name / "cmdline");
    if (cmdline.find(mark) != std::string::npos && cmdline.find("svmfuzz.run=") != std::string::npos &&
        kill(static_cast<pid_t>(pid), SIGKILL) == 0) {
      killed++;
    }
  }
  closedir(proc);
  return killed;
}

Campaign::Campaign(Config cfg, Log log)
    : cfg_(std::move(cfg)), log_(log), runner_(cfg_.runner, std::move(log)) {
  std::error_code ec;
  fs::create_directories(crashes_dir(), ec);
  if (const int stray = KillStrayVms(cfg_.runner.vm.workdir); stray && log_) {
    log_("campaign: killed " + std::to_string(stray) + " VM(s) an earlier harness left running");
  }
  stats_.session_start = Now();
  stats_.start_time = stats_.session_start;
  LoadState();
  last_stats_ = Now();
}

Campaign::~Campaign() { Finish(); }

void Campaign::LoadState() {
  // A resumed campaign goes on counting from where it stopped.
  const std::string json = ReadFile(cfg_.workdir / "stats.json");
  if (!json.empty()) {
    stats_.execs = static_cast<uint64_t>(JsonNumber(json, "execs"));
    stats_.findings = static_cast<uint64_t>(JsonNumber(json, "findings"));
    stats_.boot_failures = static_cast<uint64_t>(JsonNumber(json, "boot_failures"));
    previous_lives_ = static_cast<int>(JsonNumber(json, "lives"));
    if (const double start = JsonNumber(json, "start_time"); start > 0) stats_.start_time = start;
  }
  const std::string pcs = ReadFile(cfg_.workdir / "guest-pcs");
  for (size_t i = 0; i + 8 <= pcs.size(); i += 8) {
    uint64_t pc;
    std::memcpy(&pc, pcs.data() + i, 8);
    pcs_.insert(pc);
  }
  pcs_written_ = pcs_.size();
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(crashes_dir(), ec)) {
    if (e.path().extension() != ".txt") continue;
    stats_.saved++;
    std::istringstream in(ReadFile(e.path()));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("kind: ", 0) == 0) {
        saved_kinds_[line.substr(6)]++;
        break;
      }
    }
  }
}

bool Campaign::Execute(const uint8_t* data, size_t size, uint8_t* map, size_t map_size,
                       std::string* error) {
  const std::vector<uint8_t> program(data, data + size);
  Outcome outcome;
  if (!runner_.Run(program, {}, &outcome, error)) {
    stats_.boot_failures++;
    WriteStats();
    return ++failed_boots_ < cfg_.boot_attempts;
  }
  failed_boots_ = 0;
  stats_.execs++;
  stats_.session_execs++;
  if (outcome.result) {
    for (const auto* list : {&outcome.result->cover, &outcome.result->remote_cover}) {
      MapPcs(*list, map, map_size);
      pcs_.insert(list->begin(), list->end());
    }
  }
  std::string console = outcome.console;
  std::vector<std::string> trouble = Trouble(outcome, console);
  if (!trouble.empty()) {
    const std::optional<Report> report = FindReport(console);
    if (report && report->kernel && outcome.lost.empty()) {
      // Lockdep and KASAN report once, a WARN may leave state behind: the
      // next input gets a fresh kernel. The rest of a report the kernel was
      // still printing belongs to this one.
      runner_.EndLife("kernel: " + std::regex_replace(report->line, PrintkPrefix(), ""));
      console = runner_.ConsoleWindow(outcome);
      trouble = Trouble(outcome, console);
    }
    stats_.findings++;
    Save(data, size, outcome, trouble, console);
  }
  if (Now() - last_stats_ >= cfg_.stats_seconds) WriteStats();
  return true;
}

void Campaign::Save(const uint8_t* data, size_t size, const Outcome& outcome,
                    const std::vector<std::string>& trouble, const std::string& console) {
  const std::string kind = Kind(trouble[0]);
  if (saved_kinds_[kind] >= cfg_.saved_per_kind) return;
  const std::string name = "crash-" + InputHash(data, size);
  const fs::path input = crashes_dir() / name;
  const fs::path text = crashes_dir() / (name + ".txt");
  if (fs::exists(text)) return;
  std::string why = "kind: " + kind + "\n";
  for (const std::string& t : trouble) why += "why: " + t + "\n";
  if (outcome.result) {
    why += "status: " + std::to_string(static_cast<uint32_t>(outcome.result->status)) +
           " detail " + std::to_string(outcome.result->detail) + "\n";
  }
  if (outcome.life) {
    why += "life: " + std::to_string(outcome.life->index) + "\nconsole log: " +
           outcome.life->console_log.string() + " from byte " +
           std::to_string(outcome.console_offset) + "\n";
  }
  why += "--- console while it ran ---\n";
  why += console.size() > kMaxConsoleSaved ? console.substr(console.size() - kMaxConsoleSaved)
                                           : console;
  std::string error;
  // The input first: a description always has its input.
  if (!WriteAtomic(input, std::string(data, data + size), &error) ||
      !WriteAtomic(text, why, &error)) {
    if (log_) log_("campaign: " + error);
    return;
  }
  saved_kinds_[kind]++;
  stats_.saved++;
  if (log_) log_("campaign: saved " + input.string() + ": " + trouble[0]);
}

void Campaign::WriteStats() {
  last_stats_ = Now();
  std::string error;
  if (pcs_.size() != pcs_written_) {
    std::string bytes;
    bytes.reserve(pcs_.size() * 8);
    for (const uint64_t pc : pcs_) bytes.append(reinterpret_cast<const char*>(&pc), 8);
    if (WriteAtomic(cfg_.workdir / "guest-pcs", bytes, &error)) {
      pcs_written_ = pcs_.size();
    } else if (log_) {
      log_("campaign: " + error);
    }
  }
  const double session = last_stats_ - stats_.session_start;
  const int lives = previous_lives_ + this->lives();
  char rate[32];
  std::snprintf(rate, sizeof(rate), "%.2f", session > 0 ? stats_.session_execs / session : 0.0);
  char times[96];
  std::snprintf(times, sizeof(times), "\"start_time\": %.0f, \"updated\": %.0f", stats_.start_time,
                last_stats_);
  std::string json = "{\"engine\": " + JsonString(cfg_.engine) + ", " + times +
                     ", \"execs\": " + std::to_string(stats_.execs) +
                     ", \"session_execs\": " + std::to_string(stats_.session_execs) +
                     ", \"execs_per_sec\": " + rate +
                     ", \"guest_pcs\": " + std::to_string(pcs_.size()) +
                     ", \"lives\": " + std::to_string(lives) +
                     ", \"reboots\": " + std::to_string(lives > 0 ? lives - 1 : 0) +
                     ", \"findings\": " + std::to_string(stats_.findings) +
                     ", \"saved\": " + std::to_string(stats_.saved) +
                     ", \"boot_failures\": " + std::to_string(stats_.boot_failures) + "}\n";
  if (!WriteAtomic(cfg_.workdir / "stats.json", json, &error) && log_) log_("campaign: " + error);
}

void Campaign::Finish() {
  runner_.EndLife("campaign over");
  WriteStats();
}

}  // namespace svmfuzz::campaign
