// The campaign's parts: the PC-to-slot mapping, the trouble detector on
// sample consoles and outcomes, whole-file writes, and campaigns against the
// stand-in QEMU (fuzz/runner/fake_qemu.cc): coverage, saved findings, fresh
// lives after kernel reports, stats and resuming.
#include "campaign/campaign.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>

#include <algorithm>
#include <fstream>
#include <set>
#include <sstream>

#include "svmdev_uapi.h"

extern char** environ;

namespace svmfuzz::campaign {
namespace {

namespace fs = std::filesystem;

// The stand-in reads a program's first byte as an order (fake_qemu.cc).
const std::vector<uint8_t> kKernelDies = {0xfe};
const std::vector<uint8_t> kKernelWarns = {0xfb, 1};
const std::vector<uint8_t> kExecutorLeaves = {0xfc};
const std::vector<uint8_t> kStuck = {0xf9};

constexpr size_t kBalanced = 16 + SVMDEV_NUM_CTRS + 3;

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
                          "op_timeout_ms = 100\nprogram_timeout_ms = 900\nsaved_per_kind = 2\n",
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

  EXPECT_FALSE(ParseConfig("qemu=/q\nkernel=/k\ninitramfs=/i\n", &c, &error));
  EXPECT_EQ(error, "no workdir given");
  EXPECT_FALSE(ParseConfig("qemu=/q\ncpus = two\n", &c, &error));
  EXPECT_EQ(error, "line 2: bad value for cpus: two");
  EXPECT_FALSE(ParseConfig("colour = red\n", &c, &error));
  EXPECT_EQ(error, "line 1: unknown key colour");
  EXPECT_FALSE(LoadConfig("/nonexistent/campaign.conf", &c, &error));
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
  unbalanced.result->counters[kBalanced - 3] = 5;
  unbalanced.result->counters[kBalanced - 2] = 4;
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
  Campaign c(MakeConfig(), log_);
  Run(&c, {1, 2, 3});
  // The stand-in's coverage is one PC: the program's length.
  EXPECT_EQ(map_[PcSlot(3, map_.size())], 1);
  Run(&c, {1, 2, 3, 4, 5});
  EXPECT_EQ(c.guest_pcs(), 2u);
  EXPECT_EQ(c.stats().execs, 2u);
  EXPECT_EQ(c.stats().findings, 0u);
  EXPECT_EQ(c.lives(), 1);
  EXPECT_TRUE(Saved().empty());
}

TEST_F(CampaignTest, AKernelReportIsSavedAndTheNextInputGetsAFreshKernel) {
  Campaign c(MakeConfig(), log_);
  Run(&c, {1});
  Run(&c, kKernelWarns);
  EXPECT_EQ(c.stats().findings, 1u);
  const std::string name = "crash-" + InputHash(kKernelWarns.data(), kKernelWarns.size());
  const std::vector<fs::path> saved = Saved();
  ASSERT_EQ(saved.size(), 2u);
  EXPECT_EQ(saved[0].filename(), name);
  EXPECT_EQ(Read(saved[0]), std::string(kKernelWarns.begin(), kKernelWarns.end()));
  const std::string why = Read(saved[1]);
  EXPECT_TRUE(Has(why, "why: kernel: WARNING: CPU: 0 PID: 1 at mm/hmm.c:2 hmm_bar+0x2\n")) << why;
  EXPECT_TRUE(Has(why, "kind: kernel: WARNING: CPU: N PID: N at mm/hmm.c:N hmm_bar+N\n")) << why;
  EXPECT_TRUE(Has(why, "--- console while it ran ---\nWARNING: CPU: 0")) << why;
  EXPECT_TRUE(Has(why, "console log: " + (dir_ / "campaign" / "vm").string())) << why;
  // The life ended with the report; the next input boots the next one.
  Run(&c, {2});
  EXPECT_EQ(c.lives(), 2);
  EXPECT_EQ(c.stats().findings, 1u);
}

TEST_F(CampaignTest, LostGuestsAndStuckTasksAreSavedAndTheCampaignGoesOn) {
  Campaign c(MakeConfig(), log_);
  Run(&c, kKernelDies);
  Run(&c, kExecutorLeaves);
  Run(&c, kStuck);
  Run(&c, {1, 2});
  EXPECT_EQ(c.stats().execs, 4u);
  EXPECT_EQ(c.stats().findings, 3u);
  EXPECT_EQ(c.stats().saved, 3u);
  EXPECT_EQ(c.lives(), 4);
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
  Campaign c(cfg, log_);
  for (uint8_t i = 1; i <= 4; i++) Run(&c, {0xf9, i});
  EXPECT_EQ(c.stats().findings, 4u);
  EXPECT_EQ(c.stats().saved, 2u);
  EXPECT_EQ(Saved().size(), 4u);
}

TEST_F(CampaignTest, StatsAreWrittenAndAResumedCampaignCountsOn) {
  {
    Campaign c(MakeConfig(), log_);
    Run(&c, {1});
    Run(&c, kStuck);
    c.WriteStats();
    const std::string json = Read(dir_ / "campaign" / "stats.json");
    EXPECT_TRUE(Has(json, "\"engine\": \"test\"")) << json;
    EXPECT_TRUE(Has(json, "\"execs\": 2,")) << json;
    // Both programs are one byte long: the stand-in's one PC.
    EXPECT_TRUE(Has(json, "\"guest_pcs\": 1,")) << json;
    EXPECT_TRUE(Has(json, "\"findings\": 1,")) << json;
    EXPECT_TRUE(Has(json, "\"saved\": 1,")) << json;
    EXPECT_TRUE(Has(json, "\"lives\": 1,")) << json;
  }
  Campaign again(MakeConfig(), log_);
  Run(&again, {1, 1, 1});
  again.Finish();
  const std::string json = Read(dir_ / "campaign" / "stats.json");
  EXPECT_TRUE(Has(json, "\"execs\": 3,")) << json;
  EXPECT_TRUE(Has(json, "\"session_execs\": 1,")) << json;
  EXPECT_TRUE(Has(json, "\"guest_pcs\": 2,")) << json;
  EXPECT_TRUE(Has(json, "\"saved\": 1,")) << json;
  EXPECT_TRUE(Has(json, "\"lives\": 2,")) << json;
  EXPECT_TRUE(Has(json, "\"reboots\": 1,")) << json;
}

TEST_F(CampaignTest, GivesUpOnAGuestThatDoesNotBoot) {
  setenv("FAKE_QEMU_MODE", "die", 1);
  Campaign c(MakeConfig(), log_);
  const uint8_t input[] = {1};
  std::string error;
  EXPECT_TRUE(c.Execute(input, 1, map_.data(), map_.size(), &error));
  EXPECT_TRUE(c.Execute(input, 1, map_.data(), map_.size(), &error));
  EXPECT_FALSE(c.Execute(input, 1, map_.data(), map_.size(), &error));
  EXPECT_TRUE(Has(error, "QEMU exited (1)")) << error;
  EXPECT_EQ(c.stats().boot_failures, 3u);
  EXPECT_EQ(c.stats().execs, 0u);
}

TEST_F(CampaignTest, KillsTheVmsAKilledHarnessLeftBehind) {
  const fs::path vm = dir_ / "campaign" / "vm";
  const std::string console = "file,id=con,path=" + (vm / "vm0-life000.console.log").string();
  const char* argv[] = {"/bin/sh", "-c", "sleep 60", console.c_str(), "svmfuzz.run=executor",
                        nullptr};
  pid_t stray;
  ASSERT_EQ(posix_spawn(&stray, argv[0], nullptr, nullptr, const_cast<char**>(argv), environ), 0);
  const char* other_argv[] = {"/bin/sh", "-c", "sleep 60", "path=/elsewhere/vm/x", nullptr};
  pid_t other;
  ASSERT_EQ(posix_spawn(&other, other_argv[0], nullptr, nullptr, const_cast<char**>(other_argv),
                        environ),
            0);
  EXPECT_EQ(KillStrayVms(vm), 1);
  int status = 0;
  ASSERT_EQ(waitpid(stray, &status, 0), stray);
  EXPECT_TRUE(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
  EXPECT_EQ(waitpid(other, &status, WNOHANG), 0);
  kill(other, SIGKILL);
  waitpid(other, &status, 0);
}

}  // namespace
}  // namespace svmfuzz::campaign
