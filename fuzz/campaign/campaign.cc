#include "campaign/campaign.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <regex>
#include <sstream>

#include "program/binary.h"
#include "program/mutate.h"
#include "svmdev/svmdev_uapi.h"

namespace svmfuzz::campaign {
namespace {

namespace fs = std::filesystem;

using proto::counter::kBalanced;
using proto::counter::kMnEnds;
using proto::counter::kMnStarts;
// The driver's retry loops, by the counter their retries raise.
constexpr struct {
  size_t counter;
  const char* name;
} kRetryCounters[] = {{SVMDEV_CTR_HMM_BUSY, "hmm_busy"},
                      {SVMDEV_CTR_READ_RETRY, "read_retry"},
                      {SVMDEV_CTR_EXCL_RETRY, "excl_retry"}};
// The description of an input whose harness was killed before it said why.
constexpr char kUnexplained[] =
    "kind: unknown\nwhy: unknown: the harness was killed after saving this input, before "
    "saying why\n";
// A saved console window keeps its end: that is where the report is.
constexpr size_t kMaxConsoleSaved = 256 << 10;

// The session's TimeSplit as stats.json keys; the engine's share (mutation,
// its own bookkeeping) is what the others leave of the session's `seconds`.
std::string TimeJson(const TimeSplit& t, double seconds) {
  const double engine =
      std::max(0.0, seconds - t.life_start - t.program - t.transport - t.judging - t.life_end);
  char out[512];
  std::snprintf(out, sizeof(out),
                "\"time_life_start_s\": %.1f, \"time_program_s\": %.1f, "
                "\"time_stopped_by_watchdog_s\": %.1f, \"time_transport_s\": %.1f, "
                "\"time_judging_s\": %.1f, \"time_life_end_s\": %.1f, \"time_engine_s\": %.1f",
                t.life_start, t.program, t.stopped, t.transport, t.judging, t.life_end, engine);
  return std::string(out) + ", \"op_time\": " + JsonString(t.TopOps(6));
}

double Now() {
  return std::chrono::duration<double>(std::chrono::system_clock::now().time_since_epoch())
      .count();
}

// A step of WriteAtomic where a test may have the process killed
// (kKillAtWriteEnv); steps are counted per process.
void KillPoint() {
  static pid_t counted_in = 0;
  static long steps = 0;
  const char* at = std::getenv(kKillAtWriteEnv);
  if (at == nullptr || *at == '\0') return;
  if (counted_in != getpid()) {
    counted_in = getpid();
    steps = 0;
  }
  if (++steps == std::atol(at)) kill(getpid(), SIGKILL);
}

bool WriteWhole(int fd, const char* data, size_t size) {
  for (size_t done = 0; done < size;) {
    const ssize_t n = write(fd, data + done, size - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return false;
    done += static_cast<size_t>(n);
  }
  return true;
}

// Whether `pid` is this process's parent, or its parent's, and so on.
bool IsAncestor(pid_t pid) {
  pid_t p = getppid();
  for (int depth = 0; p > 1 && depth < 64; depth++) {
    if (p == pid) return true;
    const std::string stat = ReadFile("/proc/" + std::to_string(p) + "/stat");
    // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
    const size_t close = stat.rfind(')');
    if (close == std::string::npos) return false;
    char state;
    int parent;
    if (std::sscanf(stat.c_str() + close + 1, " %c %d", &state, &parent) != 2) return false;
    p = parent;
  }
  return false;
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
      } else if (key == "vram") {
        c.runner.vm.vram = value;
      } else if (key == "append") {
        std::istringstream words(value);
        for (std::string w; words >> w;) c.runner.vm.extra_append.push_back(w);
      } else if (key == "boot_timeout") {
        c.runner.boot_timeout = std::stod(value);
      } else if (key == "op_timeout_ms") {
        c.runner.op_timeout_ms = static_cast<uint32_t>(std::stoul(value));
      } else if (key == "program_timeout_ms") {
        c.runner.program_timeout_ms = static_cast<uint32_t>(std::stoul(value));
      } else if (key == "reset") {
        if (value != "reboot" && value != "snapshot") throw std::invalid_argument(value);
        c.runner.reset = value == "snapshot" ? Reset::kSnapshot : Reset::kReboot;
      } else if (key == "stats_seconds") {
        c.stats_seconds = std::stod(value);
      } else if (key == "pyharness") {
        c.pyharness = value;
      } else if (key == "saved_per_kind") {
        c.saved_per_kind = std::stoi(value);
      } else if (key == "knobs") {
        std::istringstream words(value);
        for (std::string w; words >> w;) {
          const size_t at = w.find('=');
          const auto* names = std::begin(proto::kKnobNames);
          const auto* name = std::find(names, std::end(proto::kKnobNames), w.substr(0, at));
          if (at == std::string::npos || name == std::end(proto::kKnobNames))
            throw std::invalid_argument(w);
          const size_t index = static_cast<size_t>(name - names);
          if (c.knobs.size() <= index) c.knobs.resize(index + 1);
          c.knobs[index] = std::stoull(w.substr(at + 1));
        }
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
    static const char* const kinds[] = {"", "no output", "executor lost", "vm lost", "vm frozen"};
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

std::string Slug(const std::string& title) {
  std::string out;
  for (const char ch : title) {
    const bool word = std::isalnum(static_cast<unsigned char>(ch)) || ch == '_';
    if (word) {
      out += static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    } else if (!out.empty() && out.back() != '-') {
      out += '-';
    }
    if (out.size() >= kMaxSlug) break;
  }
  while (!out.empty() && out.back() == '-') out.pop_back();
  return out.empty() ? "finding" : out;
}

std::string Kind(const std::string& trouble) {
  static const std::regex offsets(R"(\+0x[0-9a-f]+/0x[0-9a-f]+)");
  static const std::regex numbers(R"((0x)?[0-9a-f]*[0-9][0-9a-f]*)");
  std::string kind = trouble.substr(0, trouble.find(" (starts"));
  kind = std::regex_replace(kind, offsets, "");
  return std::regex_replace(kind, numbers, "N");
}

bool SyncDir(const fs::path& dir, std::string* error) {
  const fs::path where = dir.empty() ? fs::path(".") : dir;
  const int fd = open(where.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const bool ok = fd >= 0 && fsync(fd) == 0;
  const int err = errno;
  if (fd >= 0) close(fd);
  if (!ok) *error = "cannot sync directory " + where.string() + ": " + std::strerror(err);
  return ok;
}

bool IsTemporary(const std::string& name, const std::string& of) {
  // mkstemp's six characters, or Python's tempfile's eight.
  static const std::regex re(R"(^\.(.+)\.tmp-[A-Za-z0-9_]{6,8}$)");
  std::smatch m;
  return std::regex_match(name, m, re) && (of.empty() || m[1] == of);
}

bool AppendLine(const fs::path& path, const std::string& line, std::string* error) {
  const int fd = open(path.c_str(), O_RDWR | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "cannot open " + path.string() + ": " + std::strerror(errno);
    return false;
  }
  std::string data = line + "\n";
  struct stat st;
  char last = '\n';
  if (fstat(fd, &st) == 0 && st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) == 1 &&
      last != '\n') {
    data.insert(data.begin(), '\n');
  }
  bool ok = WriteWhole(fd, data.data(), data.size()) && fsync(fd) == 0;
  const int err = errno;
  close(fd);
  if (!ok) *error = "cannot append to " + path.string() + ": " + std::strerror(err);
  return ok;
}

bool WriteAtomic(const fs::path& path, const std::string& data, std::string* error) {
  const fs::path dir = path.parent_path();
  std::string tmp = (dir / ("." + path.filename().string() + ".tmp-XXXXXX")).string();
  const int fd = mkstemp(tmp.data());
  if (fd < 0) {
    *error = "cannot create a file in " + dir.string() + ": " + std::strerror(errno);
    return false;
  }
  const size_t half = data.size() / 2;
  bool ok = fchmod(fd, 0644) == 0 && WriteWhole(fd, data.data(), half);
  if (ok) KillPoint();
  ok = ok && WriteWhole(fd, data.data() + half, data.size() - half) && fsync(fd) == 0;
  int err = ok ? 0 : errno;
  if (close(fd) != 0 && ok) {
    ok = false;
    err = errno;
  }
  if (ok) KillPoint();
  if (ok && rename(tmp.c_str(), path.c_str()) != 0) {
    ok = false;
    err = errno;
  }
  if (!ok) {
    *error = "cannot write " + path.string() + ": " + std::strerror(err);
    unlink(tmp.c_str());
    return false;
  }
  KillPoint();
  // The rename itself lasts once the directory is synced.
  return SyncDir(dir, error);
}

std::unique_ptr<DirLock> DirLock::Take(const fs::path& dir, std::string* error) {
  const fs::path path = dir / kLockFile;
  int fd = -1;
  bool passed = false;
  if (const char* env = std::getenv(kLockFdEnv); env != nullptr && *env != '\0') {
    const int given = std::atoi(env);
    struct stat a, b;
    if (given > 2 && fstat(given, &a) == 0 && stat(path.c_str(), &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino) {
      fd = given;
      passed = true;
      fcntl(fd, F_SETFD, FD_CLOEXEC);  // a VM must not keep the directory
    }
  }
  if (fd < 0) fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) {
    *error = "cannot open " + path.string() + ": " + std::strerror(errno);
    return nullptr;
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const long holder = std::atol(Trim(ReadFile(path)).c_str());
    if (err == EWOULDBLOCK && holder > 0 && IsAncestor(static_cast<pid_t>(holder))) {
      return std::unique_ptr<DirLock>(new DirLock(fd));
    }
    close(fd);
    *error = err != EWOULDBLOCK
                 ? "cannot lock " + path.string() + ": " + std::strerror(err)
                 : "campaign directory " + dir.string() + " is in use by " +
                       (holder > 0 ? "pid " + std::to_string(holder) : "another process");
    return nullptr;
  }
  if (!passed) {
    // Written in place: the lock is on this file, its text only says who holds it.
    const std::string pid = std::to_string(getpid()) + "\n";
    if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
      // The lock holds all the same; only the message to a second harness is poorer.
    }
  }
  return std::unique_ptr<DirLock>(new DirLock(fd));
}

DirLock::~DirLock() { close(fd_); }

bool ParseStats(const std::string& json, std::map<std::string, double>* numbers, std::string* why) {
  size_t i = 0;
  const auto fail = [&](const std::string& what) {
    *why = what + " at byte " + std::to_string(i);
    return false;
  };
  const auto space = [&] {
    while (i < json.size() && std::isspace(static_cast<unsigned char>(json[i]))) i++;
  };
  const auto is = [&](char c) { return i < json.size() && json[i] == c; };
  const auto string = [&](std::string* out) {
    if (!is('"')) return false;
    for (i++; i < json.size() && json[i] != '"'; i++) {
      if (json[i] == '\\') i++;  // the escaped character, kept as it is
      if (i < json.size()) out->push_back(json[i]);
    }
    return i++ < json.size();
  };
  space();
  if (!is('{')) return fail("not a JSON object");
  i++;
  space();
  for (bool first = true; !is('}'); first = false) {
    if (!first) {
      if (!is(',')) return fail("no ',' or '}'");
      i++;
      space();
    }
    std::string key, text;
    if (!string(&key)) return fail("no key");
    space();
    if (!is(':')) return fail("no ':' after \"" + key + "\"");
    i++;
    space();
    if (is('"')) {
      if (!string(&text)) return fail("unterminated string");
    } else {
      const char* start = json.c_str() + i;
      char* end = nullptr;
      errno = 0;
      const double v = std::strtod(start, &end);
      if (end == start || errno == ERANGE || !std::isfinite(v) || v < 0) {
        return fail("no count for \"" + key + "\"");
      }
      i += static_cast<size_t>(end - start);
      (*numbers)[key] = v;
    }
    space();
  }
  i++;
  space();
  if (i != json.size()) return fail("bytes after the object");
  for (const char* key : {"execs", "findings", "lives"}) {
    if (numbers->count(key) == 0) {
      *why = std::string("no \"") + key + "\"";
      return false;
    }
  }
  return true;
}

std::string TimeSplit::TopOps(size_t n) const {
  double total = 0;
  std::vector<std::pair<double, size_t>> order;
  for (size_t i = 0; i < ops.size(); i++) {
    total += ops[i];
    if (ops[i] > 0) order.emplace_back(ops[i], i);
  }
  std::sort(order.rbegin(), order.rend());
  std::string out;
  for (size_t i = 0; i < std::min(n, order.size()); i++) {
    char share[48];
    std::snprintf(share, sizeof(share), " %.0f%%", 100 * order[i].first / total);
    out += (out.empty() ? "" : ", ") +
           std::string(Describe(static_cast<OpCode>(order[i].second)).name) + share;
  }
  return out;
}

std::string InputHash(const uint8_t* data, size_t size) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a
  for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 0x100000001b3ull;
  char hex[17];
  std::snprintf(hex, sizeof(hex), "%016llx", static_cast<unsigned long long>(h));
  return hex;
}

std::unique_ptr<Campaign> Campaign::Open(Config cfg, Log log, Judge judge, std::string* error) {
  if (!judge) {
    *error = "a campaign needs a judge of its programs";
    return nullptr;
  }
  std::error_code ec;
  const fs::path crashes = cfg.workdir / "crashes";
  const bool made = fs::create_directories(crashes, ec);
  if (ec) {
    *error = "cannot make " + crashes.string() + ": " + ec.message();
    return nullptr;
  }
  std::unique_ptr<DirLock> lock = DirLock::Take(cfg.workdir, error);
  if (!lock) return nullptr;
  if (made && !(SyncDir(cfg.workdir, error) && SyncDir(cfg.workdir.parent_path(), error))) {
    return nullptr;
  }
  return std::unique_ptr<Campaign>(
      new Campaign(std::move(cfg), std::move(log), std::move(judge), std::move(lock)));
}

Campaign::Campaign(Config cfg, Log log, Judge judge, std::unique_ptr<DirLock> lock)
    : lock_(std::move(lock)),
      cfg_(std::move(cfg)),
      log_(log),
      judge_(std::move(judge)),
      runner_(cfg_.runner, std::move(log)) {
  if (const int stray = KillStrayVms(cfg_.runner.vm.workdir); stray && log_) {
    log_("campaign: killed " + std::to_string(stray) + " VM(s) an earlier harness left running");
  }
  RemoveTemporaries();
  // Lives go on from the last console log an earlier session left.
  static const std::regex life_log(R"(-life(\d{1,6})\.console\.log$)");
  std::error_code ec;
  for (const fs::directory_entry& e : fs::directory_iterator(cfg_.runner.vm.workdir, ec)) {
    std::smatch m;
    const std::string name = e.path().filename().string();
    if (std::regex_search(name, m, life_log) && name.rfind(cfg_.runner.vm.name + "-", 0) == 0) {
      runner_.config().first_life = std::max(runner_.config().first_life, std::stoi(m[1]) + 1);
    }
  }
  stats_.session_start = Now();
  stats_.start_time = stats_.session_start;
  LoadState();
  last_stats_ = Now();
}

Campaign::~Campaign() { Finish(); }

void Campaign::RemoveTemporaries() {
  // Only this harness's own files: the front end's and triage's are theirs.
  int removed = 0;
  std::error_code ec;
  for (const fs::path& dir : {cfg_.workdir, crashes_dir()}) {
    for (const fs::directory_entry& e : fs::directory_iterator(dir, ec)) {
      const std::string name = e.path().filename().string();
      const bool ours = dir == crashes_dir()
                            ? IsTemporary(name)
                            : IsTemporary(name, "stats.json") || IsTemporary(name, "guest-pcs");
      if (ours && fs::remove(e.path(), ec)) removed++;
    }
  }
  if (removed && log_) {
    log_("campaign: removed " + std::to_string(removed) +
         " temporary file(s) a killed harness left");
  }
}

void Campaign::LoadStats() {
  // A resumed campaign goes on counting from where it stopped.
  const fs::path path = cfg_.workdir / "stats.json";
  std::error_code ec;
  if (!fs::exists(path, ec)) return;
  std::map<std::string, double> n;
  std::string why;
  if (!ParseStats(ReadFile(path), &n, &why)) {
    // Written whole, so never torn by a kill: edited, or the disk's doing.
    // The counts start afresh rather than the campaign refusing to go on.
    const fs::path aside = path.string() + ".malformed";
    fs::rename(path, aside, ec);
    std::string error;
    if (ec || !SyncDir(cfg_.workdir, &error)) why += "; " + (ec ? ec.message() : error);
    if (log_) {
      log_("campaign: " + path.string() + " is malformed (" + why + "): kept as " + aside.string() +
           ", the counts start afresh");
    }
    return;
  }
  const auto count = [&n](const char* key) -> uint64_t {
    const auto it = n.find(key);
    return it == n.end() || it->second >= 1.8e19 ? 0 : static_cast<uint64_t>(it->second);
  };
  stats_.execs = count("execs");
  stats_.findings = count("findings");
  stats_.boot_failures = count("boot_failures");
  previous_lives_ = static_cast<int>(std::min<uint64_t>(count("lives"), 1 << 30));
  previous_restores_ =
      static_cast<int>(std::min<uint64_t>(count("restores"), static_cast<uint64_t>(previous_lives_)));
  if (const uint64_t start = count("start_time"); start > 0) stats_.start_time = start;
}

void Campaign::LoadState() {
  LoadStats();
  const std::string pcs = ReadFile(cfg_.workdir / "guest-pcs");
  for (size_t i = 0; i + 8 <= pcs.size(); i += 8) {
    uint64_t pc;
    std::memcpy(&pc, pcs.data() + i, 8);
    pcs_.insert(pc);
  }
  pcs_written_ = pcs_.size();
  std::error_code ec;
  std::vector<fs::path> unexplained;
  for (const fs::directory_entry& e : fs::directory_iterator(crashes_dir(), ec)) {
    const std::string name = e.path().filename().string();
    // Triage's minimal programs and C reproducers sit beside the inputs.
    if (name.rfind("crash-", 0) != 0 || e.path().extension() == ".svmp" ||
        e.path().extension() == ".c") {
      continue;
    }
    if (e.path().extension() != ".txt") {
      if (!fs::exists(e.path().string() + ".txt")) unexplained.push_back(e.path());
      continue;
    }
    stats_.saved++;
    std::istringstream in(ReadFile(e.path()));
    for (std::string line; std::getline(in, line);) {
      if (line.rfind("kind: ", 0) == 0) {
        saved_kinds_[line.substr(6)]++;
        break;
      }
    }
  }
  // A harness killed between an input and its description: the input is a
  // finding all the same. It is described as unknown until it shows again.
  for (const fs::path& input : unexplained) {
    std::string error;
    if (WriteAtomic(input.string() + ".txt", std::string(kUnexplained), &error)) {
      unexplained_.insert(input.filename().string());
      stats_.saved++;
      saved_kinds_["unknown"]++;
    } else if (log_) {
      log_("campaign: " + error);
    }
  }
}

bool Campaign::Execute(const uint8_t* data, size_t size, uint8_t* map, size_t map_size,
                       std::string* error) {
  std::vector<uint8_t> program(data, data + size);
  // What runs, and what is saved, has its sleeps and delays capped.
  if (Program p = Decode(program); CapDelays(&p)) {
    program = Encode(p);
    data = program.data();
    size = program.size();
  }
  Outcome outcome;
  const double start = Now();
  if (!runner_.Run(program, cfg_.knobs, &outcome, error)) {
    time_.life_start += Now() - start;
    stats_.boot_failures++;
    WriteStats();
    return ++failed_boots_ < cfg_.boot_attempts;
  }
  failed_boots_ = 0;
  stats_.execs++;
  stats_.session_execs++;
  const double ran = Now();
  time_.life_start += std::max(0.0, ran - start - outcome.seconds);
  if (outcome.result) {
    const double guest = outcome.result->duration_us / 1e6;
    time_.program += guest;
    time_.transport += std::max(0.0, outcome.seconds - guest);
    const proto::Status status = outcome.result->status;
    if (status == proto::Status::kHung || status == proto::Status::kStuck) time_.stopped += guest;
    for (const proto::OpResult& op : outcome.result->ops)
      if (op.code < kNumOps) time_.ops[op.code] += op.duration_us / 1e6;
    for (const auto* list : {&outcome.result->cover, &outcome.result->remote_cover}) {
      MapPcs(*list, map, map_size);
      pcs_.insert(list->begin(), list->end());
    }
  }
  std::string console = outcome.console;
  double ended = 0;
  Judgement judged = Decide(outcome, console);
  if (!judged.findings.empty()) {
    if (judged.end_life) {
      const double ending = Now();
      console = runner_.EndLifeAfterReport(outcome, judged.findings[0].title);
      ended = Now() - ending;
      Judgement whole = Decide(outcome, console);
      if (!whole.findings.empty()) judged = std::move(whole);
    }
    stats_.findings++;
    Save(data, size, outcome, judged, console);
  }
  time_.life_end += ended;
  time_.judging += std::max(0.0, Now() - ran - ended);
  if (Now() - last_stats_ >= cfg_.stats_seconds) WriteStats();
  return true;
}

Judgement Campaign::Decide(const Outcome& outcome, const std::string& console) {
  Judgement out;
  std::string error;
  if (!judge_(outcome, console, &out, &error)) {
    if (log_) log_("campaign: " + error);
    out = Judgement{{{"oracle failed: " + error.substr(0, error.find('\n')), "harness"}}, false};
  }
  return out;
}

void Campaign::Save(const uint8_t* data, size_t size, const Outcome& outcome,
                    const Judgement& judged, const std::string& console) {
  const std::string& title = judged.findings[0].title;
  const std::string kind = Kind(title);
  if (saved_kinds_[kind] >= cfg_.saved_per_kind) return;
  // Named by title and input: a bucket can be read from a listing.
  const std::string name = "crash-" + Slug(title) + "-" + InputHash(data, size);
  const fs::path input = crashes_dir() / name;
  const fs::path text = crashes_dir() / (name + ".txt");
  const bool explains = unexplained_.erase(name) > 0;
  if (fs::exists(text) && !explains) return;
  std::string why = "kind: " + kind + "\n";
  for (const Verdict& v : judged.findings) why += "title: " + v.title + "\n";
  // What the harness itself saw, for the record.
  for (const std::string& t : Trouble(outcome, console)) why += "why: " + t + "\n";
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
  if (!explains) stats_.saved++;
  if (log_) log_("campaign: saved " + input.string() + ": " + title);
}

void Campaign::WriteStats(bool final) {
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
  int restores = previous_restores_;
  for (const auto& life : runner_.lives()) restores += life->restored;
  // Every life but the campaign's first is a reboot or a restore.
  const int reboots = std::max(0, lives - 1 - restores);
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
                     ", \"reboots\": " + std::to_string(reboots) +
                     ", \"restores\": " + std::to_string(restores) +
                     ", \"findings\": " + std::to_string(stats_.findings) +
                     ", \"saved\": " + std::to_string(stats_.saved) +
                     ", \"boot_failures\": " + std::to_string(stats_.boot_failures) + ", " +
                     TimeJson(time_, session) + "}\n";
  if (!WriteAtomic(cfg_.workdir / "stats.json", json, &error) && log_) log_("campaign: " + error);
  if (last_history_ == 0 || last_stats_ - last_history_ >= kHistorySeconds || final) {
    last_history_ = last_stats_;
    json.pop_back();  // its newline
    if (!AppendLine(cfg_.workdir / "stats-history.jsonl", json, &error) && log_)
      log_("campaign: " + error);
  }
}

void Campaign::Finish() {
  runner_.EndLife("campaign over");
  WriteStats(true);
}

}  // namespace svmfuzz::campaign
