// The campaign's parts: the PC-to-slot mapping, the trouble detector on
// sample consoles and outcomes, whole-file writes, and campaigns against the
// stand-in QEMU (fuzz/runner/fake_qemu.cc): coverage, saved findings, fresh
// lives after kernel reports, stats and resuming.
#include "campaign/campaign.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "svmdev/svmdev_uapi.h"

extern char** environ;

namespace svmfuzz::campaign {
namespace {

namespace fs = std::filesystem;

// The stand-in reads a program's first byte as an order (fake_qemu.cc).
const std::vector<uint8_t> kKernelDies = {0xfe};
const std::vector<uint8_t> kKernelWarns = {0xfb, 1};
const std::vector<uint8_t> kExecutorLeaves = {0xfc};
const std::vector<uint8_t> kStuck = {0xf9};
// What the oracles call it: the stand-in's stuck task sleeps nowhere known.
const std::string kStuckTitle = "INFO: task hung";

using proto::counter::kBalanced;
using proto::counter::kMnEnds;
using proto::counter::kMnStarts;

// The Python oracles of this checkout, as the harness judges with them.
Judge Oracles() {
  static Judge judge = [] {
    std::string error;
    Judge j = PythonJudge(SVMFUZZ_PYHARNESS_DIR, &error);
    EXPECT_TRUE(j) << error;
    return j;
  }();
  return judge;
}

std::string Read(const fs::path& path) {
  std::ifstream f(path, std::ios::binary);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

TEST(PcSlot, StaysInTheMapAndSpreadsKernelPcs) {
  std::set<size_t> slots;
  for (uint64_t pc = 0xffffffff81000000; pc < 0xffffffff81000000 + 4 * 10000; pc += 4) {
    const size_t slot = PcSlot(pc, 1 << 16);
    ASSERT_LT(slot, 1u << 16);
    EXPECT_EQ(slot, PcSlot(pc, 1 << 16));
    slots.insert(slot);
  }
  // 10000 PCs into 65536 slots: a good hash loses about 7% to collisions.
  EXPECT_GT(slots.size(), 9000u);
  EXPECT_LT(PcSlot(0xffffffff81234567, 1000), 1000u);
}

TEST(PcSlot, MapPcsCountsAndSaturates) {
  std::vector<uint8_t> map(64);
  const uint64_t pc = 0xffffffffa0001234;
  MapPcs(std::vector<uint64_t>(3, pc), map.data(), map.size());
  EXPECT_EQ(map[PcSlot(pc, map.size())], 3);
  MapPcs(std::vector<uint64_t>(1000, pc), map.data(), map.size());
  EXPECT_EQ(map[PcSlot(pc, map.size())], 255);
  EXPECT_EQ(std::count(map.begin(), map.end(), 0), 63);
}

TEST(Config, ParsesWhatTheFrontEndWrites) {
  Config c;
  std::string error;
  ASSERT_TRUE(ParseConfig("# campaign\nqemu = /q\nkernel=/k\ninitramfs = /i.cpio\n"
                          "workdir = /w\nengine = afl\naccel = tcg\ndevices = 2\ncpus = 1\n"
                          "memory = 1G\nappend = a=1 b\nboot_timeout = 60\n"
                          "op_timeout_ms = 100\nprogram_timeout_ms = 900\nsaved_per_kind = 2\n"
                          "reset = snapshot\nvram = 8M\npyharness = /src/pyharness\n"
                          "knobs = fault_delay_ms=7 fail_vram_alloc=2\n",
                          &c, &error))
      << error;
  EXPECT_EQ(c.runner.vm.qemu, "/q");
  EXPECT_EQ(c.runner.vm.workdir, "/w/vm");
  EXPECT_EQ(c.runner.vm.devices, 2);
  EXPECT_EQ(c.runner.vm.cpus, 1);
  EXPECT_EQ(c.runner.vm.memory, "1G");
  EXPECT_EQ(c.runner.vm.extra_append, (std::vector<std::string>{"a=1", "b"}));
  EXPECT_EQ(c.runner.boot_timeout, 60);
  EXPECT_EQ(c.runner.op_timeout_ms, 100u);
  EXPECT_EQ(c.runner.program_timeout_ms, 900u);
  EXPECT_EQ(c.saved_per_kind, 2);
  EXPECT_EQ(c.engine, "afl");
  EXPECT_EQ(c.runner.reset, Reset::kSnapshot);
  EXPECT_EQ(c.runner.vm.vram, "8M");
  EXPECT_EQ(c.pyharness, "/src/pyharness");
  EXPECT_EQ(c.knobs, (std::vector<uint64_t>{2, 0, 7}));

  EXPECT_FALSE(ParseConfig("qemu=/q\nkernel=/k\ninitramfs=/i\n", &c, &error));
  EXPECT_EQ(error, "no workdir given");
  EXPECT_FALSE(ParseConfig("qemu=/q\ncpus = two\n", &c, &error));
  EXPECT_EQ(error, "line 2: bad value for cpus: two");
  EXPECT_FALSE(ParseConfig("colour = red\n", &c, &error));
  EXPECT_EQ(error, "line 1: unknown key colour");
  EXPECT_FALSE(ParseConfig("knobs = break_everything=1\n", &c, &error));
  EXPECT_EQ(error, "line 1: bad value for knobs: break_everything=1");
  EXPECT_FALSE(ParseConfig("reset = sometimes\n", &c, &error));
  EXPECT_EQ(error, "line 1: bad value for reset: sometimes");
  EXPECT_FALSE(LoadConfig("/nonexistent/campaign.conf", &c, &error));
}

// The other way round: what the Python front end (campaign.write_config) writes,
// this parser reads whole.
TEST(Config, ReadsWhatThePythonFrontEndWrites) {
  const fs::path dir = fs::temp_directory_path() / ("svmfuzz-conf-" + std::to_string(getpid()));
  fs::create_directories(dir);
  const std::string script =
      "import sys, types; from pathlib import Path; sys.path.insert(0, '" SVMFUZZ_PYHARNESS_DIR
      "'); from svmfuzz import campaign; "
      "vm = types.SimpleNamespace(qemu=Path('/q'), kernel=Path('/k'), initramfs=Path('/i'), "
      "accel='tcg', cpus=1, memory='1G', devices=2, vram='8M', extra_append=['a=1']); "
      "campaign.write_config(Path(sys.argv[1]), vm, Path(sys.argv[2]), 'afl', 60, 100, 900, "
      "'reboot', 'break_imbalance=1 fail_copy=3')";
  const std::string conf = (dir / "campaign.conf").string();
  const std::string command = std::string(SVMFUZZ_PYTHON) + " -c \"" + script + "\" " + conf +
                              " " + (dir / "w").string();
  ASSERT_EQ(std::system(command.c_str()), 0) << command;
  Config c;
  std::string error;
  ASSERT_TRUE(LoadConfig(conf, &c, &error)) << error;
  EXPECT_EQ(c.runner.vm.qemu, "/q");
  EXPECT_EQ(c.workdir, dir / "w");
  EXPECT_EQ(c.runner.vm.workdir, dir / "w" / "vm");
  EXPECT_EQ(c.engine, "afl");
  EXPECT_EQ(c.runner.vm.devices, 2);
  EXPECT_EQ(c.runner.vm.vram, "8M");
  EXPECT_EQ(c.runner.vm.extra_append, (std::vector<std::string>{"a=1"}));
  EXPECT_EQ(c.runner.op_timeout_ms, 100u);
  EXPECT_EQ(c.runner.program_timeout_ms, 900u);
  EXPECT_EQ(c.runner.reset, Reset::kReboot);
  EXPECT_EQ(c.pyharness, fs::path(SVMFUZZ_PYHARNESS_DIR));
  EXPECT_EQ(c.knobs, (std::vector<uint64_t>{0, 3, 0, 0, 0, 0, 1}));
  fs::remove_all(dir);
}

TEST(Detector, FindsReportHeadersOnTheConsole) {
  struct Case {
    const char* console;
    const char* line;
    bool kernel;
  } cases[] = {
      {"[   10.1][  T100] svmdev 0000:00:03.0: bound\n"
       "[   12.345678][  T412] BUG: KASAN: slab-use-after-free in hmm_range_fault+0x1c/0x40\n",
       "[   12.345678][  T412] BUG: KASAN: slab-use-after-free in hmm_range_fault+0x1c/0x40", true},
      {"[ 1.0] WARNING: CPU: 1 PID: 9 at mm/hmm.c:12 hmm_vma_walk_pmd+0x2/0x9\n",
       "[ 1.0] WARNING: CPU: 1 PID: 9 at mm/hmm.c:12 hmm_vma_walk_pmd+0x2/0x9", true},
      {"[  245.1][  T30] INFO: task svmfuzz-prog:321 blocked for more than 120 seconds.\n",
       "[  245.1][  T30] INFO: task svmfuzz-prog:321 blocked for more than 120 seconds.", true},
      {"[ 30.0][    C1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:\n",
       "[ 30.0][    C1] rcu: INFO: rcu_preempt detected stalls on CPUs/tasks:", true},
      {"[ 9.9] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]\n",
       "[ 9.9] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [a:1]", true},
      {"[ 3.0] general protection fault, probably for non-canonical address\n",
       "[ 3.0] general protection fault, probably for non-canonical address", true},
      {"[ 3.0] Kernel panic - not syncing: Fatal exception\n",
       "[ 3.0] Kernel panic - not syncing: Fatal exception", true},
      {"[ 4.0] WARNING: possible circular locking dependency detected\n",
       "[ 4.0] WARNING: possible circular locking dependency detected", true},
      {"[ 5.0][ T77] svmdev: livelock suspected in svmdev_range_fault: 1000 retries\n",
       "[ 5.0][ T77] svmdev: livelock suspected in svmdev_range_fault: 1000 retries", false},
      {"[ 5.0] svmdev: unbalanced mmu_notifier start/end at release: 1\n",
       "[ 5.0] svmdev: unbalanced mmu_notifier start/end at release: 1", false},
  };
  for (const Case& c : cases) {
    const std::optional<Report> r = FindReport(c.console);
    ASSERT_TRUE(r) << c.console;
    EXPECT_EQ(r->line, c.line);
    EXPECT_EQ(r->kernel, c.kernel) << c.console;
  }
  EXPECT_FALSE(FindReport("[ 1.0] svmdev 0000:00:03.0: svmdev interface 1.0\n"
                          "[ 2.0] INFO: task hung_task_timeout_secs is 120\n"
                          "svmfuzz-init: executor ready\n"));
  EXPECT_FALSE(FindReport(""));
}

Outcome WithResult(proto::Status status = proto::Status::kOk) {
  Outcome o;
  o.result = proto::ExecResult();
  o.result->status = status;
  return o;
}

TEST(PythonJudge, TitlesAsTriageDoesAndEndsTheLifeAfterAKernelReport) {
  Outcome o;
  Judgement j;
  std::string error;
  // No result and no report: the guest was lost.
  o.lost = "the executor closed its port";
  o.lost_kind = Lost::kExecutorLost;
  ASSERT_TRUE(Oracles()(o, "", &j, &error)) << error;
  ASSERT_EQ(j.findings.size(), 1u);
  EXPECT_EQ(j.findings[0].title, "executor lost");
  EXPECT_FALSE(j.end_life);  // a lost guest has ended its life already
  const std::string kasan =
      "[   12.5][  T100] ==================================================================\n"
      "[   12.5][  T100] BUG: KASAN: slab-use-after-free in svmdev_fence_wait+0x10/0x40 [svmdev]\n"
      "[   12.5][  T100] Read of size 8 at addr ffff888012345678 by task a/100\n"
      "[   12.5][  T100] Call Trace:\n"
      "[   12.5][  T100]  <TASK>\n"
      "[   12.5][  T100]  svmdev_fence_wait+0x10/0x40 [svmdev]\n"
      "[   12.5][  T100]  svmdev_ioctl+0x20/0x80 [svmdev]\n"
      "[   12.5][  T100]  </TASK>\n"
      "[   12.5][  T100] ==================================================================\n";
  Outcome ran;
  ran.result = proto::ExecResult{};
  ran.result_payload = proto::Encode(*ran.result);
  ASSERT_TRUE(Oracles()(ran, kasan, &j, &error)) << error;
  ASSERT_FALSE(j.findings.empty());
  EXPECT_EQ(j.findings[0].title, "KASAN: slab-use-after-free Read in svmdev_fence_wait");
  EXPECT_EQ(j.findings[0].category, "kasan");
  EXPECT_TRUE(j.end_life);
  // Bytes that are not UTF-8 are no obstacle.
  ASSERT_TRUE(Oracles()(ran, std::string("\xff\xfe junk\n") + kasan, &j, &error)) << error;
  EXPECT_EQ(j.findings.size(), 1u);
  // A RESULT this side cannot read is a finding, and the life ends.
  ran.result_payload.resize(3);
  ASSERT_TRUE(Oracles()(ran, "", &j, &error)) << error;
  ASSERT_EQ(j.findings.size(), 1u);
  EXPECT_EQ(j.findings[0].title, "executor sent an unreadable result");
  EXPECT_TRUE(j.end_life);
}

TEST(PythonJudge, AMissingPackageIsAClearError) {
  std::string error;
  EXPECT_FALSE(PythonJudge("/nonexistent/pyharness", &error));
  EXPECT_EQ(error, "no oracles in /nonexistent/pyharness (svmfuzz/oracles/verdict.py)");
}

TEST(Slug, TitlesBecomeFileNames) {
  EXPECT_EQ(Slug("KASAN: slab-use-after-free Read in svmdev_fence_wait"),
            "kasan-slab-use-after-free-read-in-svmdev_fence_wait");
  EXPECT_EQ(Slug("!!!"), "finding");
  EXPECT_EQ(Slug(std::string(200, 'a')).size(), kMaxSlug);
  EXPECT_EQ(Slug("device stale access in ctx 0 at 0x7f00/"), "device-stale-access-in-ctx-0-at-0x7f00");
}

TEST(Detector, JudgesOutcomes) {
  EXPECT_TRUE(Trouble(WithResult(), "[ 1.0] all quiet\n").empty());
  // A slow program is no finding; one whose retries kept rising is.
  Outcome hung = WithResult(proto::Status::kHung);
  hung.result->watchdog_deltas.assign(SVMDEV_NUM_CTRS, 0);
  hung.result->watchdog_deltas[SVMDEV_CTR_FAULTS] = 40;
  EXPECT_TRUE(Trouble(hung, "").empty());
  hung.result->watchdog_deltas[SVMDEV_CTR_HMM_BUSY] = 812;
  EXPECT_EQ(Trouble(hung, ""), std::vector<std::string>{
                                   "livelock: past its deadline with retries rising: hmm_busy +812"});

  Outcome stuck = WithResult(proto::Status::kStuck);
  stuck.result->detail = 'D';
  EXPECT_EQ(Trouble(stuck, ""),
            std::vector<std::string>{"stuck: a task of the program in state D after SIGKILL"});

  Outcome unbalanced = WithResult();
  unbalanced.result->counters.assign(kBalanced + 1, 0);
  unbalanced.result->counters[kMnStarts] = 5;
  unbalanced.result->counters[kMnEnds] = 4;
  EXPECT_EQ(Trouble(unbalanced, ""),
            std::vector<std::string>{"notifier: unbalanced start/end (starts 5, ends 4)"});
  unbalanced.result->counters[kBalanced] = 1;
  EXPECT_TRUE(Trouble(unbalanced, "").empty());

  Outcome corrupt = WithResult();
  corrupt.result->mismatches.resize(3);
  corrupt.result->mismatches[0].buffer = 2;
  corrupt.stale.resize(1);
  EXPECT_EQ(Trouble(corrupt, ""),
            (std::vector<std::string>{"shadow: 3 byte(s) differ, first in buffer 2",
                                      "device: 1 stale access(es)"}));

  Outcome lost;
  lost.lost = "vm0: QEMU exited (0) and closed the executor port\nQEMU said: (nothing)";
  lost.lost_kind = Lost::kVmLost;
  EXPECT_EQ(Trouble(lost, "[ 7.0][ T1] BUG: KASAN: use-after-free in f+0x1/0x2\n"),
            (std::vector<std::string>{
                "kernel: BUG: KASAN: use-after-free in f+0x1/0x2",
                "guest lost (vm lost): vm0: QEMU exited (0) and closed the executor port"}));
  EXPECT_EQ(Trouble(WithResult(), "[ 5.0] svmdev: livelock suspected in svmdev_exclusive\n"),
            std::vector<std::string>{"driver: svmdev: livelock suspected in svmdev_exclusive"});
}

TEST(Detector, KindsLeaveOutNumbers) {
  EXPECT_EQ(Kind("kernel: BUG: KASAN: use-after-free in hmm_range_fault+0x1c/0x40"),
            "kernel: BUG: KASAN: use-after-free in hmm_range_fault");
  EXPECT_EQ(Kind("kernel: INFO: task prog:321 blocked for more than 120 seconds."),
            "kernel: INFO: task prog:N blocked for more than N seconds.");
  EXPECT_EQ(Kind("notifier: unbalanced start/end (starts 5, ends 4)"),
            "notifier: unbalanced start/end");
  EXPECT_EQ(Kind("livelock: past its deadline with retries rising: hmm_busy +812"),
            Kind("livelock: past its deadline with retries rising: hmm_busy +3"));
}

class TempDir : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("FAKE_QEMU_MODE");
    std::string dir = fs::temp_directory_path() / "svmfuzz-campaign-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = dir;
  }
  void TearDown() override {
    unsetenv("FAKE_QEMU_MODE");
    fs::remove_all(dir_);
  }
  fs::path dir_;
};

using WriteAtomicTest = TempDir;

TEST_F(WriteAtomicTest, ReplacesTheFileWholeAndLeavesNoTemporary) {
  std::string error;
  ASSERT_TRUE(WriteAtomic(dir_ / "stats.json", "{\"execs\": 1}\n", &error)) << error;
  ASSERT_TRUE(WriteAtomic(dir_ / "stats.json", "{}\n", &error)) << error;
  EXPECT_EQ(Read(dir_ / "stats.json"), "{}\n");
  EXPECT_EQ(std::distance(fs::directory_iterator(dir_), fs::directory_iterator()), 1);
  EXPECT_EQ(fs::status(dir_ / "stats.json").permissions() & fs::perms::others_read,
            fs::perms::others_read);
  EXPECT_FALSE(WriteAtomic(dir_ / "missing" / "f", "x", &error));
  EXPECT_TRUE(Has(error, "cannot create a file in " + (dir_ / "missing").string())) << error;
}

TEST_F(WriteAtomicTest, AppendLineEndsALineAKillCutShort) {
  std::string error;
  ASSERT_TRUE(AppendLine(dir_ / "h.jsonl", "{\"a\": 1}", &error)) << error;
  ASSERT_TRUE(AppendLine(dir_ / "h.jsonl", "{\"a\": 2}", &error)) << error;
  EXPECT_EQ(Read(dir_ / "h.jsonl"), "{\"a\": 1}\n{\"a\": 2}\n");
  {
    std::ofstream cut(dir_ / "h.jsonl", std::ios::app);
    cut << "{\"a\": ";
  }
  ASSERT_TRUE(AppendLine(dir_ / "h.jsonl", "{\"a\": 3}", &error)) << error;
  EXPECT_EQ(Read(dir_ / "h.jsonl"), "{\"a\": 1}\n{\"a\": 2}\n{\"a\": \n{\"a\": 3}\n");
  EXPECT_FALSE(AppendLine(dir_ / "missing" / "h", "x", &error));
  EXPECT_TRUE(Has(error, "cannot open " + (dir_ / "missing" / "h").string())) << error;
}

TEST_F(WriteAtomicTest, NamesItsTemporariesAndChecksTheDirectorySync) {
  EXPECT_TRUE(IsTemporary(".stats.json.tmp-a1B2c3"));
  EXPECT_TRUE(IsTemporary(".stats.json.tmp-a1B2c3", "stats.json"));
  EXPECT_FALSE(IsTemporary(".stats.json.tmp-a1B2c3", "guest-pcs"));
  EXPECT_TRUE(IsTemporary(".crash-0123.txt.tmp-k_9xq2mm"));
  EXPECT_FALSE(IsTemporary("stats.json"));
  EXPECT_FALSE(IsTemporary(".stats.json.tmp-ab"));
  std::string error;
  EXPECT_TRUE(SyncDir(dir_, &error)) << error;
  EXPECT_FALSE(SyncDir(dir_ / "missing", &error));
  EXPECT_TRUE(Has(error, "cannot sync directory " + (dir_ / "missing").string())) << error;
}

TEST(Stats, TheOpTimeNamesTheLargestSharesFirst) {
  TimeSplit t;
  EXPECT_EQ(t.TopOps(3), "");
  t.ops[static_cast<size_t>(OpCode::kMunmap)] = 1;
  t.ops[static_cast<size_t>(OpCode::kMmap)] = 2;
  t.ops[static_cast<size_t>(OpCode::kMigrateToDevice)] = 5;
  EXPECT_EQ(t.TopOps(2), "migrate_to_dev 62%, mmap 25%");
  EXPECT_EQ(t.TopOps(9), "migrate_to_dev 62%, mmap 25%, munmap 12%");
}

TEST(Stats, ParsesWhatTheCampaignWritesAndRefusesTheRest) {
  std::map<std::string, double> n;
  std::string why;
  ASSERT_TRUE(
      ParseStats("{\"engine\": \"lib\\\"fuzzer\", \"start_time\": 1700000000, "
                 "\"execs\": 12, \"execs_per_sec\": 2.50, \"lives\": 3, "
                 "\"findings\": 1}\n",
                 &n, &why))
      << why;
  EXPECT_EQ(n["execs"], 12);
  EXPECT_EQ(n["execs_per_sec"], 2.5);
  EXPECT_EQ(n.count("engine"), 0u);
  for (const char* bad :
       {"", "{", "[1]", "{\"execs\": -, \"lives\": 1, \"findings\": 0}",
        "{\"execs\": 1e999, \"lives\": 1, \"findings\": 0}",
        "{\"execs\": -3, \"lives\": 1, \"findings\": 0}",
        "{\"execs\": 1 \"lives\": 1, \"findings\": 0}",
        "{\"execs\": 1, \"lives\": 1, \"findings\": 0} x", "{\"lives\": 1, \"findings\": 0}",
        "{\"execs\": nan, \"lives\": 1, \"findings\": 0}", "{\"execs\": 1, \"lives\": 1, \"find"}) {
    n.clear();
    EXPECT_FALSE(ParseStats(bad, &n, &why)) << bad;
    EXPECT_FALSE(why.empty()) << bad;
  }
}

TEST_F(WriteAtomicTest, TheDirectoryIsHeldByOneProcessAtATime) {
  std::string error;
  std::unique_ptr<DirLock> lock = DirLock::Take(dir_, &error);
  ASSERT_TRUE(lock) << error;
  EXPECT_EQ(Read(dir_ / kLockFile), std::to_string(getpid()) + "\n");
  // Another open of the file is another holder, even in this process.
  EXPECT_FALSE(DirLock::Take(dir_, &error));
  EXPECT_EQ(error, "campaign directory " + dir_.string() + " is in use by pid " +
                       std::to_string(getpid()));
  lock.reset();
  EXPECT_TRUE(DirLock::Take(dir_, &error)) << error;
}

TEST_F(WriteAtomicTest, TheFrontEndsLockIsPassedDown) {
  const int fd = open((dir_ / kLockFile).c_str(), O_RDWR | O_CREAT, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(flock(fd, LOCK_EX | LOCK_NB), 0);
  std::string error;
  EXPECT_FALSE(DirLock::Take(dir_, &error));
  EXPECT_TRUE(Has(error, "is in use by another process")) << error;
  setenv(kLockFdEnv, std::to_string(fd).c_str(), 1);
  std::unique_ptr<DirLock> lock = DirLock::Take(dir_, &error);
  unsetenv(kLockFdEnv);
  ASSERT_TRUE(lock) << error;
  // Taken over: what the harness starts (QEMU) does not inherit it.
  EXPECT_EQ(fcntl(fd, F_GETFD) & FD_CLOEXEC, FD_CLOEXEC);
}

TEST_F(WriteAtomicTest, InputHashNamesInputs) {
  const uint8_t a[] = {1, 2, 3};
  EXPECT_EQ(InputHash(a, 3), InputHash(a, 3));
  EXPECT_NE(InputHash(a, 3), InputHash(a, 2));
  EXPECT_EQ(InputHash(a, 3).size(), 16u);
}

class CampaignTest : public TempDir {
 protected:
  Config MakeConfig() {
    Config c;
    c.workdir = dir_ / "campaign";
    c.engine = "test";
    c.runner.vm.qemu = SVMFUZZ_FAKE_QEMU;
    c.runner.vm.kernel = dir_ / "kernel";
    c.runner.vm.initramfs = dir_ / "initramfs.cpio";
    c.runner.vm.workdir = c.workdir / "vm";
    c.runner.boot_timeout = 20;
    c.runner.program_timeout_ms = 500;
    c.runner.result_slack = 1;
    return c;
  }
  std::unique_ptr<Campaign> Open(Config cfg) {
    std::string error;
    std::unique_ptr<Campaign> c = Campaign::Open(std::move(cfg), log_, Oracles(), &error);
    EXPECT_TRUE(c) << error;
    return c;
  }
  void Run(Campaign* c, const std::vector<uint8_t>& input) {
    std::string error;
    ASSERT_TRUE(c->Execute(input.data(), input.size(), map_.data(), map_.size(), &error))
        << error;
  }
  std::vector<fs::path> Saved() {
    std::vector<fs::path> out;
    for (const auto& e : fs::directory_iterator(dir_ / "campaign" / "crashes")) {
      out.push_back(e.path());
    }
    std::sort(out.begin(), out.end());
    return out;
  }

  std::vector<uint8_t> map_ = std::vector<uint8_t>(4096);
  std::vector<std::string> logged_;
  Log log_ = [this](const std::string& line) { logged_.push_back(line); };
};

TEST_F(CampaignTest, CleanInputsFeedCoverageAndSaveNothing) {
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  Run(c.get(), {1, 2, 3});
  // The stand-in's coverage is one PC: the program's length.
  EXPECT_EQ(map_[PcSlot(3, map_.size())], 1);
  Run(c.get(), {1, 2, 3, 4, 5});
  EXPECT_EQ(c->guest_pcs(), 2u);
  EXPECT_EQ(c->stats().execs, 2u);
  EXPECT_EQ(c->stats().findings, 0u);
  EXPECT_EQ(c->lives(), 1);
  EXPECT_TRUE(Saved().empty());
}

TEST_F(CampaignTest, AKernelReportIsSavedAndTheNextInputGetsAFreshKernel) {
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  Run(c.get(), {1});
  Run(c.get(), kKernelWarns);
  EXPECT_EQ(c->stats().findings, 1u);
  // Named by the title triage gives it, from the oracles triage uses.
  const std::string name =
      "crash-warning-in-hmm_bar-" + InputHash(kKernelWarns.data(), kKernelWarns.size());
  const std::vector<fs::path> saved = Saved();
  ASSERT_EQ(saved.size(), 2u);
  EXPECT_EQ(saved[0].filename(), name);
  EXPECT_EQ(Read(saved[0]), std::string(kKernelWarns.begin(), kKernelWarns.end()));
  const std::string why = Read(saved[1]);
  EXPECT_TRUE(Has(why, "why: kernel: WARNING: CPU: 0 PID: 1 at mm/hmm.c:2 hmm_bar+0x2\n")) << why;
  EXPECT_TRUE(Has(why, "kind: WARNING in hmm_bar\ntitle: WARNING in hmm_bar\n")) << why;
  EXPECT_TRUE(Has(why, "--- console while it ran ---\nWARNING: CPU: 0")) << why;
  EXPECT_TRUE(Has(why, "console log: " + (dir_ / "campaign" / "vm").string())) << why;
  // The life ended with the report; the next input boots the next one.
  Run(c.get(), {2});
  EXPECT_EQ(c->lives(), 2);
  EXPECT_EQ(c->stats().findings, 1u);
}

TEST_F(CampaignTest, LostGuestsAndStuckTasksAreSavedAndTheCampaignGoesOn) {
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  Run(c.get(), kKernelDies);
  Run(c.get(), kExecutorLeaves);
  Run(c.get(), kStuck);
  Run(c.get(), {1, 2});
  EXPECT_EQ(c->stats().execs, 4u);
  EXPECT_EQ(c->stats().findings, 3u);
  EXPECT_EQ(c->stats().saved, 3u);
  EXPECT_EQ(c->lives(), 4);
  std::string whys;
  for (const fs::path& p : Saved()) {
    if (p.extension() == ".txt") whys += Read(p);
  }
  EXPECT_TRUE(Has(whys, "why: kernel: BUG: KASAN: use-after-free in hmm_range_fault+0x1/0x2\n"))
      << whys;
  EXPECT_TRUE(Has(whys, "why: guest lost (executor lost)")) << whys;
  EXPECT_TRUE(Has(whys, "why: stuck: a task of the program in state D after SIGKILL")) << whys;
}

TEST_F(CampaignTest, KeepsAFewInputsOfEachKind) {
  Config cfg = MakeConfig();
  cfg.saved_per_kind = 2;
  std::unique_ptr<Campaign> c = Open(cfg);
  for (uint8_t i = 1; i <= 4; i++) Run(c.get(), {0xf9, i});
  EXPECT_EQ(c->stats().findings, 4u);
  EXPECT_EQ(c->stats().saved, 2u);
  EXPECT_EQ(Saved().size(), 4u);
}

TEST_F(CampaignTest, StatsAreWrittenAndAResumedCampaignCountsOn) {
  {
    std::unique_ptr<Campaign> c = Open(MakeConfig());
    Run(c.get(), {1});
    Run(c.get(), kStuck);
    c->WriteStats();
    const std::string json = Read(dir_ / "campaign" / "stats.json");
    EXPECT_TRUE(Has(json, "\"engine\": \"test\"")) << json;
    EXPECT_TRUE(Has(json, "\"execs\": 2,")) << json;
    // Both programs are one byte long: the stand-in's one PC.
    EXPECT_TRUE(Has(json, "\"guest_pcs\": 1,")) << json;
    EXPECT_TRUE(Has(json, "\"findings\": 1,")) << json;
    EXPECT_TRUE(Has(json, "\"saved\": 1,")) << json;
    EXPECT_TRUE(Has(json, "\"lives\": 1,")) << json;
    // Where the time went: the stand-in's ops are all munmap (opcode 1).
    EXPECT_TRUE(Has(json, "\"time_life_start_s\": ")) << json;
    EXPECT_TRUE(Has(json, "\"time_engine_s\": ")) << json;
    EXPECT_TRUE(Has(json, "\"op_time\": \"munmap 100%\"")) << json;
    EXPECT_GT(c->time_split().life_start, 0);
  }
  std::unique_ptr<Campaign> again = Open(MakeConfig());
  Run(again.get(), {1, 1, 1});
  again->Finish();
  const std::string json = Read(dir_ / "campaign" / "stats.json");
  EXPECT_TRUE(Has(json, "\"execs\": 3,")) << json;
  EXPECT_TRUE(Has(json, "\"session_execs\": 1,")) << json;
  EXPECT_TRUE(Has(json, "\"guest_pcs\": 2,")) << json;
  EXPECT_TRUE(Has(json, "\"saved\": 1,")) << json;
  EXPECT_TRUE(Has(json, "\"lives\": 2,")) << json;
  EXPECT_TRUE(Has(json, "\"reboots\": 1,")) << json;
  // The history has the first write of each session and the last one.
  std::istringstream history(Read(dir_ / "campaign" / "stats-history.jsonl"));
  std::vector<std::string> lines;
  for (std::string line; std::getline(history, line);) lines.push_back(line);
  ASSERT_GE(lines.size(), 3u);
  EXPECT_TRUE(Has(lines.back(), "\"execs\": 3,")) << lines.back();
  // The second session's life has a log of its own.
  EXPECT_EQ(again->lives(), 1);
  EXPECT_TRUE(fs::exists(dir_ / "campaign" / "vm" / "vm0-life000.console.log"));
  EXPECT_TRUE(fs::exists(dir_ / "campaign" / "vm" / "vm0-life001.console.log"));
}

TEST_F(CampaignTest, ASecondHarnessOnTheDirectoryIsRefusedAndTheFirstGoesOn) {
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  Run(c.get(), {1});
  std::string error;
  EXPECT_FALSE(Campaign::Open(MakeConfig(), log_, Oracles(), &error));
  EXPECT_EQ(error, "campaign directory " + (dir_ / "campaign").string() + " is in use by pid " +
                       std::to_string(getpid()));
  // Its VM was left alone.
  Run(c.get(), {1, 2});
  EXPECT_EQ(c->lives(), 1);
  c.reset();
  EXPECT_TRUE(Open(MakeConfig()));
}

TEST_F(CampaignTest, AMalformedStatsFileIsKeptAsideAndTheCountsStartAfresh) {
  fs::create_directories(dir_ / "campaign");
  const std::string bad = "{\"execs\": -, \"lives\": 2}";
  std::ofstream(dir_ / "campaign" / "stats.json") << bad;
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  ASSERT_TRUE(c);
  EXPECT_EQ(c->stats().execs, 0u);
  EXPECT_EQ(Read(dir_ / "campaign" / "stats.json.malformed"), bad);
  ASSERT_FALSE(logged_.empty());
  EXPECT_TRUE(Has(logged_.back(), "stats.json is malformed (no count for \"execs\" at byte 10)"))
      << logged_.back();
  Run(c.get(), {1});
  c->WriteStats();
  EXPECT_TRUE(Has(Read(dir_ / "campaign" / "stats.json"), "\"execs\": 1,"));
}

TEST_F(CampaignTest, TheTemporariesOfAKilledHarnessAreRemoved) {
  const fs::path work = dir_ / "campaign";
  fs::create_directories(work / "crashes");
  for (const fs::path& p : {work / ".stats.json.tmp-Ab12Cd", work / ".guest-pcs.tmp-000000",
                            work / "crashes" / ".crash-0011223344556677.txt.tmp-zzzzzz",
                            work / ".triage.json.tmp-abcdef", work / "notes"}) {
    std::ofstream(p) << "half";
  }
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  std::vector<std::string> left;
  for (const auto& e : fs::recursive_directory_iterator(work)) {
    if (e.is_regular_file()) left.push_back(e.path().filename().string());
  }
  std::sort(left.begin(), left.end());
  // Triage's temporaries are its own.
  EXPECT_EQ(left, (std::vector<std::string>{".triage.json.tmp-abcdef", kLockFile, "notes"}));
  EXPECT_TRUE(std::find(logged_.begin(), logged_.end(),
                        "campaign: removed 3 temporary file(s) a killed harness left") !=
              logged_.end());
}

TEST_F(CampaignTest, AnInputSavedWithoutItsDescriptionIsKeptAndDescribedWhenItShowsAgain) {
  const fs::path crashes = dir_ / "campaign" / "crashes";
  fs::create_directories(crashes);
  // As a harness killed before the description names it.
  const std::string name = "crash-" + Slug(kStuckTitle) + "-" + InputHash(kStuck.data(), kStuck.size());
  std::ofstream(crashes / name) << std::string(kStuck.begin(), kStuck.end());
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  EXPECT_EQ(c->stats().saved, 1u);
  EXPECT_TRUE(Has(Read(crashes / (name + ".txt")), "kind: unknown\n"));
  Run(c.get(), kStuck);
  EXPECT_EQ(c->stats().saved, 1u);
  EXPECT_TRUE(Has(Read(crashes / (name + ".txt")), "why: stuck: a task of the program in state D"));
  EXPECT_EQ(Saved().size(), 2u);
}

// Checks that a campaign directory holds whole files only.
void ExpectWhole(const fs::path& work) {
  std::string why;
  std::map<std::string, double> n;
  if (fs::exists(work / "stats.json")) {
    EXPECT_TRUE(ParseStats(Read(work / "stats.json"), &n, &why)) << why;
  }
  EXPECT_EQ(Read(work / "guest-pcs").size() % 8, 0u);
  for (const auto& e : fs::directory_iterator(work / "crashes")) {
    const std::string name = e.path().filename().string();
    if (e.path().extension() == ".txt") {
      EXPECT_TRUE(fs::exists(work / "crashes" / e.path().stem())) << name;
      EXPECT_TRUE(Has(Read(e.path()), "kind: ")) << name;
    }
  }
}

TEST_F(CampaignTest, KilledAtEachWriteStepItResumesWithNothingLostOrDoubled) {
  const std::vector<std::vector<uint8_t>> inputs = {{1}, kStuck, {1, 2}, kKernelWarns, {1, 2, 3}};
  const fs::path work = dir_ / "campaign";
  Config cfg = MakeConfig();
  cfg.stats_seconds = 0;  // stats after every input: a write step each
  int killed = 0;
  for (int at = 1;; at++) {
    fs::remove_all(work);
    const pid_t pid = fork();
    if (pid == 0) {
      setenv(kKillAtWriteEnv, std::to_string(at).c_str(), 1);
      std::string error;
      std::unique_ptr<Campaign> c = Campaign::Open(
          cfg, [](const std::string&) {}, Oracles(), &error);
      for (const std::vector<uint8_t>& in : inputs) {
        if (!c || !c->Execute(in.data(), in.size(), map_.data(), map_.size(), &error)) _exit(2);
      }
      c.reset();
      _exit(0);
    }
    int status = 0;
    ASSERT_EQ(waitpid(pid, &status, 0), pid);
    if (WIFEXITED(status)) {
      ASSERT_EQ(WEXITSTATUS(status), 0);
      break;
    }
    ASSERT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL) << "step " << at;
    killed++;
    ExpectWhole(work);
    std::map<std::string, double> before;
    std::string why;
    ParseStats(Read(work / "stats.json"), &before, &why);
    // Resumed, the engine runs its inputs again.
    {
      std::unique_ptr<Campaign> c = Open(cfg);
      ASSERT_TRUE(c);
      for (const std::vector<uint8_t>& in : inputs) Run(c.get(), in);
      EXPECT_EQ(c->stats().execs, static_cast<uint64_t>(before["execs"]) + inputs.size())
          << "step " << at;
    }
    ExpectWhole(work);
    std::vector<std::string> names;
    for (const fs::path& p : Saved()) names.push_back(p.filename().string());
    const std::string stuck =
        "crash-" + Slug(kStuckTitle) + "-" + InputHash(kStuck.data(), kStuck.size());
    const std::string warns =
        "crash-warning-in-hmm_bar-" + InputHash(kKernelWarns.data(), kKernelWarns.size());
    std::vector<std::string> want = {stuck, stuck + ".txt", warns, warns + ".txt"};
    std::sort(want.begin(), want.end());
    EXPECT_EQ(names, want) << "step " << at;
    EXPECT_EQ(Read(work / "crashes" / stuck), std::string(kStuck.begin(), kStuck.end()));
    EXPECT_TRUE(Has(Read(work / "crashes" / (stuck + ".txt")), "why: stuck:")) << "step " << at;
    EXPECT_TRUE(Has(Read(work / "crashes" / (warns + ".txt")), "why: kernel: WARNING:"))
        << "step " << at;
    const std::string json = Read(work / "stats.json");
    EXPECT_TRUE(Has(json, "\"saved\": 2,")) << "step " << at << ": " << json;
    EXPECT_TRUE(Has(json, "\"guest_pcs\": 3,")) << "step " << at << ": " << json;
    EXPECT_EQ(Read(work / "guest-pcs").size(), 3 * 8u) << "step " << at;
    for (const auto& e : fs::recursive_directory_iterator(work)) {
      EXPECT_FALSE(IsTemporary(e.path().filename().string())) << e.path();
    }
  }
  // Five inputs, a stats write after each and two findings: dozens of steps.
  EXPECT_GT(killed, 20);
}

TEST_F(CampaignTest, GivesUpOnAGuestThatDoesNotBoot) {
  setenv("FAKE_QEMU_MODE", "die", 1);
  std::unique_ptr<Campaign> c = Open(MakeConfig());
  const uint8_t input[] = {1};
  std::string error;
  EXPECT_TRUE(c->Execute(input, 1, map_.data(), map_.size(), &error));
  EXPECT_TRUE(c->Execute(input, 1, map_.data(), map_.size(), &error));
  EXPECT_FALSE(c->Execute(input, 1, map_.data(), map_.size(), &error));
  EXPECT_TRUE(Has(error, "QEMU exited (1)")) << error;
  EXPECT_EQ(c->stats().boot_failures, 3u);
  EXPECT_EQ(c->stats().execs, 0u);
}

}  // namespace
}  // namespace svmfuzz::campaign
