// A fuzz campaign against the guest: the part the libFuzzer and AFL++ builds
// of svmfuzz-guest-fuzz share.
//
// A Campaign owns a Runner (fuzz/runner) and boots the guest on the first
// input. Each input is run as a program; the guest kernel's PCs of it (the
// program's threads and the driver's workers) go into the engine's coverage
// map, hashed. The oracles triage uses (judge.h) judge each outcome; one with
// a finding (the guest lost, a stuck task, a livelock, an unbalanced
// notifier, corrupted data, a stale device access, a kernel report on the
// console) is saved as <workdir>/crashes/crash-<title>-<input hash>, with its
// titles and what the harness saw, and the campaign goes on; after a kernel
// report the VM life ends so the next input gets a fresh kernel. <workdir>/stats.json is rewritten every few
// seconds, and every kHistorySeconds it is also appended to
// <workdir>/stats-history.jsonl, one JSON object a line, for plots over time. Every file is written whole (WriteAtomic: temporary file, fsync,
// rename, directory fsync), so a campaign killed at any moment leaves nothing
// half-written behind; the temporaries it leaves are removed on resume.
//
// One harness at a time owns a campaign directory (<workdir>/campaign.lock,
// flock): a second one would kill the first one's VMs (KillStrayVms).
#ifndef SVMFUZZ_CAMPAIGN_CAMPAIGN_H_
#define SVMFUZZ_CAMPAIGN_CAMPAIGN_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <string>
#include <unordered_set>
#include <vector>

#include "campaign/judge.h"
#include "program/program.h"
#include "runner/runner.h"

namespace svmfuzz::campaign {

// The environment variable naming the campaign's configuration file.
inline constexpr char kConfigEnv[] = "SVMFUZZ_CAMPAIGN";
// A descriptor of <workdir>/campaign.lock that the front end (svmfuzz fuzz)
// locked and passed down: the harness shares its lock.
inline constexpr char kLockFdEnv[] = "SVMFUZZ_CAMPAIGN_LOCK_FD";
inline constexpr char kLockFile[] = "campaign.lock";
// Seconds between two lines of <workdir>/stats-history.jsonl.
inline constexpr double kHistorySeconds = 30;
// N: the process SIGKILLs itself at the Nth step of WriteAtomic (each write
// has three: the temporary half-written, synced, renamed), so tests can show
// that a campaign killed anywhere resumes with nothing lost or doubled.
inline constexpr char kKillAtWriteEnv[] = "SVMFUZZ_KILL_AT_WRITE";

struct Config {
  RunnerConfig runner;
  std::filesystem::path workdir;  // crashes/, stats.json, guest-pcs
  std::string engine;             // named in stats.json
  double stats_seconds = 5;
  // Inputs kept per kind of trouble: the rest are counted, not saved.
  int saved_per_kind = 5;
  std::filesystem::path pyharness;  // the Python oracles' package folder (svmfuzz fuzz sets it)
  // Boots that fail in a row before the campaign gives up.
  int boot_attempts = 3;
  // Test-only driver knobs for every program (ExecRequest.knobs): a campaign
  // against a planted driver bug. Empty: the driver's defaults.
  std::vector<uint64_t> knobs;
};

// "key = value" lines ('#' starts a comment): qemu, kernel, initramfs,
// workdir (required); vm_workdir (default <workdir>/vm), engine, accel, cpus,
// memory, devices, vram, append (kernel arguments, space-separated),
// boot_timeout, op_timeout_ms, program_timeout_ms, reset (reboot or
// snapshot), stats_seconds, saved_per_kind, pyharness, knobs (name=value
// pairs of proto::kKnobNames, space-separated).
bool ParseConfig(const std::string& text, Config* out, std::string* error);
bool LoadConfig(const std::filesystem::path& path, Config* out, std::string* error);

// The slot of a guest PC in a coverage map of `size` slots.
size_t PcSlot(uint64_t pc, size_t size);
// Counts each PC in its slot, saturating at 255.
void MapPcs(const std::vector<uint64_t>& pcs, uint8_t* map, size_t size);

// A report header on the guest console.
struct Report {
  std::string line;   // the console line, printk prefix included
  bool kernel;        // false for the driver's own oracle lines (livelock, unbalanced)
};
// The first report in `console`, if any.
std::optional<Report> FindReport(const std::string& console);

// What is wrong with an outcome, a line per symptom (the first says most);
// empty when nothing is. `console`: the program's console window.
std::vector<std::string> Trouble(const Outcome& outcome, const std::string& console);
// The kind of a trouble line, for capping how many inputs are kept of each:
// the line with numbers and offsets taken out.
std::string Kind(const std::string& trouble);
// A title as part of a file name: lower case, runs of other characters as
// one '-', at most kMaxSlug characters.
inline constexpr size_t kMaxSlug = 60;
std::string Slug(const std::string& title);

// Writes `data` to `path` through a temporary file in the same directory
// (.<name>.tmp-XXXXXX), synced before it is renamed over `path`, and syncs the
// directory so the rename lasts. False with `error` if any step failed.
bool WriteAtomic(const std::filesystem::path& path, const std::string& data, std::string* error);
// Appends `line` and a newline to `path` (created if missing) and syncs it.
// A line a kill cut short is ended first, so only it is lost to a reader.
bool AppendLine(const std::filesystem::path& path, const std::string& line, std::string* error);
// fsync of a directory: what was created or renamed in it lasts.
bool SyncDir(const std::filesystem::path& dir, std::string* error);
// Whether `name` is a temporary of WriteAtomic (of `of`, when given).
bool IsTemporary(const std::string& name, const std::string& of = "");

// <dir>/campaign.lock, held for as long as this lives. Take fails, saying
// "campaign directory <dir> is in use by pid N", while another process holds
// it; the front end's lock passed down in kLockFdEnv, or held by an ancestor
// of this process (the engine in between may close descriptors), is ours.
class DirLock {
 public:
  static std::unique_ptr<DirLock> Take(const std::filesystem::path& dir, std::string* error);
  ~DirLock();
  DirLock(const DirLock&) = delete;
  DirLock& operator=(const DirLock&) = delete;

 private:
  explicit DirLock(int fd) : fd_(fd) {}
  int fd_;
};

// The numbers of a stats.json: a flat JSON object of numbers and strings.
// False with `why` when it is not one.
bool ParseStats(const std::string& json, std::map<std::string, double>* numbers, std::string* why);

// A 64-bit hash of `data` in hex: saved inputs are named after it.
std::string InputHash(const uint8_t* data, size_t size);

struct Stats {
  uint64_t execs = 0;
  uint64_t findings = 0;       // inputs that showed trouble
  uint64_t saved = 0;          // of them, saved under crashes/
  uint64_t boot_failures = 0;
  double start_time = 0;       // Unix time the campaign started (its first run)
  double session_start = 0;    // Unix time this process started
  uint64_t session_execs = 0;
};

// Where this session's time went, in seconds, for stats.json: a campaign's
// rate is only as good as the largest of these lets it be.
struct TimeSplit {
  double life_start = 0;   // boots and restores before a program could run
  double program = 0;      // the executor's time from fork to exit
  double transport = 0;    // the host's wait for a result less the executor's time
  double judging = 0;      // oracles, the console, saving findings
  double life_end = 0;     // ending lives after a report, re-reading their consoles
  double stopped = 0;      // of `program`, runs the watchdog ended (hung, stuck)
  std::array<double, kNumOps> ops{};  // op times by op (threads' ops overlap)

  // "op a%, op b%, ..." of the op time, largest first: the top `n`.
  std::string TopOps(size_t n) const;
};

class Campaign {
 public:
  // Takes the campaign directory, kills the VMs an earlier harness left,
  // removes the temporaries a killed one left and loads the earlier
  // sessions' state. Null with `error` when the directory is in use or
  // cannot be made. A malformed stats.json is kept as stats.json.malformed
  // and the counts start afresh (saved findings are counted from crashes/).
  // `judge` decides what is a finding and titles it (PythonJudge, as triage).
  static std::unique_ptr<Campaign> Open(Config cfg, Log log, Judge judge, std::string* error);
  ~Campaign();
  Campaign(const Campaign&) = delete;
  Campaign& operator=(const Campaign&) = delete;

  // Runs one input and adds its guest PCs to `map` (`map_size` slots). False
  // only when the guest could not be booted `boot_attempts` times in a row.
  bool Execute(const uint8_t* data, size_t size, uint8_t* map, size_t map_size,
               std::string* error);
  // Rewrites stats.json (and guest-pcs when it grew).
  // `final`: the campaign's last write, which always reaches the history.
  void WriteStats(bool final = false);
  // Ends the VM and writes the stats: the campaign is over.
  void Finish();

  const Stats& stats() const { return stats_; }
  const TimeSplit& time_split() const { return time_; }
  size_t guest_pcs() const { return pcs_.size(); }
  int lives() const { return static_cast<int>(runner_.lives().size()); }
  std::filesystem::path crashes_dir() const { return cfg_.workdir / "crashes"; }

 private:
  Campaign(Config cfg, Log log, Judge judge, std::unique_ptr<DirLock> lock);
  // The judge's findings; an oracle that fails is a finding of its own.
  Judgement Decide(const Outcome& outcome, const std::string& console);
  void Save(const uint8_t* data, size_t size, const Outcome& outcome, const Judgement& judged,
            const std::string& console);
  void RemoveTemporaries();
  void LoadStats();
  void LoadState();

  std::unique_ptr<DirLock> lock_;
  Config cfg_;
  Log log_;
  Judge judge_;
  Runner runner_;
  Stats stats_;
  TimeSplit time_;
  std::unordered_set<uint64_t> pcs_;
  size_t pcs_written_ = 0;
  std::map<std::string, int> saved_kinds_;
  std::set<std::string> unexplained_;  // saved inputs described as unknown
  int failed_boots_ = 0;
  double last_stats_ = 0;
  double last_history_ = 0;
  int previous_lives_ = 0;     // lives of earlier sessions of this campaign
  int previous_restores_ = 0;  // of which restored from a snapshot
};

}  // namespace svmfuzz::campaign

#endif  // SVMFUZZ_CAMPAIGN_CAMPAIGN_H_
