// The Vm and the Runner's VM lives with a stand-in for QEMU (fake_qemu.cc):
// QEMU's command line, boots, lost guests, kernel crashes and hangs, stuck
// programs, device actions, and the real executor behind it all.
#include "runner/runner.h"

#include <gtest/gtest.h>
#include <signal.h>
#include <spawn.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "program/binary.h"
#include "program/text.h"

namespace svmfuzz {
namespace {

namespace fs = std::filesystem;

// The stand-in reads a program's first byte as an order.
const std::vector<uint8_t> kKernelDies = {0xfe};
const std::vector<uint8_t> kGuestHangs = {0xfd};
const std::vector<uint8_t> kQemuFreezes = {0xf7};
const std::vector<uint8_t> kExecutorLeaves = {0xfc};
const std::vector<uint8_t> kKernelWarns = {0xfb, 1};
const std::vector<uint8_t> kDeviceAccess = {0xfa};
const std::vector<uint8_t> kStuck = {0xf9};
const std::vector<uint8_t> kExecutorExits = {0xf8};

std::string Read(const fs::path& path) {
  std::ifstream f(path);
  std::stringstream s;
  s << f.rdbuf();
  return s.str();
}

bool Has(const std::string& text, const std::string& part) {
  return text.find(part) != std::string::npos;
}

class StandInTest : public ::testing::Test {
 protected:
  void SetUp() override {
    unsetenv("FAKE_QEMU_MODE");
    std::string dir = fs::temp_directory_path() / "svmfuzz-runner-test-XXXXXX";
    ASSERT_NE(mkdtemp(dir.data()), nullptr);
    dir_ = dir;
    vm_.qemu = SVMFUZZ_FAKE_QEMU;
    vm_.kernel = dir_ / "kernel";
    vm_.initramfs = dir_ / "initramfs.cpio";
    vm_.workdir = dir_ / "work";
  }
  void TearDown() override {
    unsetenv("FAKE_QEMU_MODE");
    fs::remove_all(dir_);
  }
  RunnerConfig Config() {
    RunnerConfig cfg;
    cfg.vm = vm_;
    cfg.boot_timeout = 20;
    cfg.program_timeout_ms = 500;
    cfg.result_slack = 1;
    return cfg;
  }
  Outcome Run(Runner* r, const std::vector<uint8_t>& program) {
    Outcome o;
    std::string error;
    EXPECT_TRUE(r->Run(program, {}, &o, &error)) << error;
    return o;
  }

  fs::path dir_;
  VmConfig vm_;
  std::vector<std::string> logged_;
  Log log_ = [this](const std::string& line) { logged_.push_back(line); };
};

TEST_F(StandInTest, KillsTheVmsOfItsWorkdirThatAKilledProcessLeftBehind) {
  const fs::path vm = dir_ / "campaign" / "vm";
  // The marks ride in argv[0] of a sleep that never forks: a shell's child, caught between its
  // fork and its exec, would carry the same command line and be counted twice.
  const std::string stray_name = "file,id=con,path=" +
                                 (vm / "vm0-life000.console.log").string() +
                                 " svmfuzz.run=executor";
  const char* argv[] = {stray_name.c_str(), "60", nullptr};
  pid_t stray;
  ASSERT_EQ(posix_spawn(&stray, "/bin/sleep", nullptr, nullptr, const_cast<char**>(argv), environ),
            0);
  const char* other_argv[] = {"path=/elsewhere/vm/x svmfuzz.run=executor", "60", nullptr};
  pid_t other;
  ASSERT_EQ(posix_spawn(&other, "/bin/sleep", nullptr, nullptr, const_cast<char**>(other_argv),
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

TEST_F(StandInTest, ArgvIsQemusCommandLine) {
  vm_.qemu = "/q/qemu-system-x86_64";
  vm_.kernel = "/k";
  vm_.initramfs = "/i.cpio";
  vm_.workdir = dir_;
  vm_.extra_append = {"a=1", "b"};
  Vm vm(vm_);
  const std::string s = vm.socket_dir().string();
  // QEMU's options, a line per group.
  // clang-format off
  const std::vector<std::string> want = {
      "/q/qemu-system-x86_64", "-M", "q35", "-accel", "tcg", "-smp", "2", "-m", "2G",
      "-nodefaults", "-display", "none", "-no-reboot", "-nic", "none",
      "-L", "/usr/share/qemu", "-L", "/usr/share/seabios",
      "-chardev", "file,id=con,path=" + (dir_ / "vm0.console.log").string(),
      "-serial", "chardev:con", "-kernel", "/k/bzImage", "-initrd", "/i.cpio",
      "-append", "console=ttyS0 panic=-1 printk.devkmsg=on svmfuzz.run=executor a=1 b",
      "-device", "virtio-serial-pci,id=vser0",
      "-chardev", "socket,id=exec,path=" + s + "/exec.sock,server=on,wait=off",
      "-device", "virtserialport,bus=vser0.0,chardev=exec,name=svmfuzz.exec",
      "-qmp", "unix:" + s + "/qmp.sock,server=on,wait=off",
      "-chardev", "socket,id=ctl0,path=" + s + "/ctl0.sock,server=on,wait=off",
      "-device", "svmdev,id=svm0,chardev=ctl0"};
  // clang-format on
  EXPECT_EQ(vm.Argv(), want);

  vm_.devices = 3;
  vm_.vram = "8M";
  vm_.accel = "kvm";
  vm_.interactive = true;
  const std::vector<std::string> kvm = Vm(vm_).Argv();
  EXPECT_EQ(std::count(kvm.begin(), kvm.end(), "-device"), 5);
  EXPECT_EQ(kvm.back(), "svmdev,id=svm2,chardev=ctl2,vram-size=8M");
  const auto cpu = std::find(kvm.begin(), kvm.end(), "-cpu");
  ASSERT_NE(cpu, kvm.end());
  EXPECT_EQ(cpu[1], "host");
  EXPECT_TRUE(Has(kvm[20], "stdio,id=con,signal=off,logfile=")) << kvm[20];
}

TEST_F(StandInTest, VmBootsAnswersAndPowersOff) {
  Vm vm(vm_);
  std::string error;
  ASSERT_TRUE(vm.Start(&error)) << error;
  ASSERT_TRUE(vm.WaitReady(20, &error)) << error;
  EXPECT_EQ(vm.ready().kernel, "fake");
  EXPECT_GT(vm.Elapsed(), 0);
  double seconds = 0;
  ASSERT_EQ(vm.Ping(&seconds, &error), LinkStatus::kOk) << error;
  EXPECT_LT(seconds, 5);
  ASSERT_TRUE(vm.ControlChannel(0, 5, &error)) << error;
  EXPECT_EQ(vm.ControlChannel(0, 5, &error), vm.ControlChannel(0, 5, &error));
  EXPECT_FALSE(vm.ControlChannel(1, 5, &error));
  ASSERT_TRUE(vm.PowerOff(20, &error)) << error;
  EXPECT_EQ(vm.WaitExit(0), 0);
  EXPECT_TRUE(Has(Read(vm.console_log()), "svmdev interface 1.0"));
  const fs::path sockets = vm.socket_dir();
  EXPECT_TRUE(fs::exists(sockets));
  vm.Kill();
  EXPECT_FALSE(fs::exists(sockets));
}

TEST_F(StandInTest, AQemuThatDiesIsReportedWithWhatItSaid) {
  setenv("FAKE_QEMU_MODE", "die", 1);
  Vm vm(vm_);
  std::string error;
  ASSERT_TRUE(vm.Start(&error)) << error;
  EXPECT_FALSE(vm.WaitReady(20, &error));
  EXPECT_TRUE(Has(error, "vm0: QEMU exited (1) before the executor port opened")) << error;
  EXPECT_TRUE(Has(error, "QEMU said: qemu: could not load kernel")) << error;
  EXPECT_TRUE(Has(error, "console tail:\nsvmdev 0000:00:03.0")) << error;
}

TEST_F(StandInTest, ASilentGuestTimesOutWithItsConsoleTail) {
  setenv("FAKE_QEMU_MODE", "silent", 1);
  Vm vm(vm_);
  std::string error;
  ASSERT_TRUE(vm.Start(&error));
  EXPECT_FALSE(vm.WaitReady(1, &error));
  EXPECT_TRUE(Has(error, "vm0: no executor after 1 s (accel tcg); console tail:\nsvmdev")) << error;
  EXPECT_TRUE(vm.Alive());
  vm.Kill();
  EXPECT_FALSE(vm.Alive());
  EXPECT_EQ(vm.WaitExit(0), -9);
}

TEST_F(StandInTest, AnExecutorOfAnotherVersionIsRefused) {
  setenv("FAKE_QEMU_MODE", "old", 1);
  Vm vm(vm_);
  std::string error;
  ASSERT_TRUE(vm.Start(&error));
  EXPECT_FALSE(vm.WaitReady(20, &error));
  EXPECT_EQ(error, "vm0: executor speaks protocol 1, the host 4: rebuild the initramfs");
}

TEST_F(StandInTest, QemuAbortingIsReportedNotHidden) {
  setenv("FAKE_QEMU_MODE", "abort", 1);
  Vm vm(vm_);
  std::string error;
  ASSERT_TRUE(vm.Start(&error));
  ASSERT_TRUE(vm.WaitReady(20, &error)) << error;
  double seconds;
  EXPECT_EQ(vm.Ping(&seconds, &error), LinkStatus::kClosed);
  EXPECT_TRUE(Has(error, "QEMU exited (-6) and closed the executor port")) << error;
  EXPECT_TRUE(Has(error, "Assertion failed")) << error;
}

TEST_F(StandInTest, MissingQemuIsAnError) {
  vm_.qemu = dir_ / "nothing";
  Vm vm(vm_);
  std::string error;
  EXPECT_FALSE(vm.Start(&error));
  EXPECT_EQ(error, "QEMU binary " + vm_.qemu.string() + " is missing");
}

TEST_F(StandInTest, RunsProgramsInOneLife) {
  Runner r(Config(), log_);
  const Outcome a = Run(&r, {1, 2, 3});
  const Outcome b = Run(&r, {4});
  double seconds;
  std::string error;
  ASSERT_TRUE(r.Ping(&seconds, &error)) << error;
  ASSERT_TRUE(a.result);
  EXPECT_EQ(a.result->status, proto::Status::kOk);
  EXPECT_EQ(a.result->cover, (std::vector<uint64_t>{3}));
  ASSERT_EQ(a.result->ops.size(), 3u);
  EXPECT_EQ(a.result->ops[2].code, 3);
  proto::ExecResult decoded;
  ASSERT_TRUE(proto::Decode(a.result_payload, &decoded));
  EXPECT_EQ(decoded, *a.result);
  EXPECT_EQ(b.id, a.id + 1);
  EXPECT_TRUE(b.lost.empty());
  EXPECT_EQ(b.lost_kind, Lost::kNone);
  EXPECT_EQ(a.life, b.life);
  // The boot's console was before the first program.
  EXPECT_TRUE(Has(a.console, "svmdev interface")) << a.console;
  EXPECT_EQ(b.console, "");
  r.Close();
  ASSERT_EQ(r.lives().size(), 1u);
  EXPECT_EQ(r.lives()[0]->programs, 2);
  EXPECT_EQ(r.lives()[0]->end, "");
  EXPECT_EQ(r.lives()[0]->console_log.filename(), "vm0-life000.console.log");
  ASSERT_FALSE(logged_.empty());
  EXPECT_TRUE(Has(logged_[0], "runner: life 0 ready in ")) << logged_[0];
}

TEST_F(StandInTest, DeviceRequestsArePerformedAndStaleAccessesHandedOver) {
  Runner r(Config(), log_);
  const Outcome o = Run(&r, kDeviceAccess);
  const Outcome clean = Run(&r, {1});
  ASSERT_TRUE(o.result);
  EXPECT_EQ(o.result->ops[0].ret, 0x1234);  // what the device's ACCESS read
  ASSERT_EQ(o.stale.size(), 1u);
  EXPECT_EQ(o.stale[0].ctx, 3);
  EXPECT_EQ(o.stale[0].va, 0x100000000008u);
  EXPECT_TRUE(clean.stale.empty());
  EXPECT_EQ(clean.life, o.life);
  std::string error;
  EXPECT_TRUE(r.ControlChannel(0, &error)) << error;
}

TEST_F(StandInTest, AKernelCrashEndsTheLifeAndKeepsItsConsole) {
  Runner r(Config(), log_);
  const Outcome crashed = Run(&r, kKernelDies);
  const Outcome after = Run(&r, {1});
  EXPECT_FALSE(crashed.result);
  EXPECT_TRUE(Has(crashed.lost, "QEMU exited (0) and closed the executor port")) << crashed.lost;
  EXPECT_EQ(crashed.lost_kind, Lost::kVmLost);
  EXPECT_TRUE(Has(crashed.console, "Kernel panic - not syncing: KASAN\n")) << crashed.console;
  ASSERT_TRUE(after.result);
  EXPECT_EQ(after.life->index, 1);
  ASSERT_EQ(r.lives().size(), 2u);
  EXPECT_NE(r.lives()[0]->console_log, r.lives()[1]->console_log);
  EXPECT_TRUE(Has(Read(r.lives()[0]->console_log), "Kernel panic"));
  EXPECT_FALSE(Has(Read(r.lives()[1]->console_log), "Kernel panic"));
  EXPECT_EQ(r.lives()[0]->end, crashed.lost);
}

TEST_F(StandInTest, ASnapshotDiskIsADriveOfItsOwn) {
  vm_.snapshot_disk = dir_ / "a,b.qcow2";
  const std::vector<std::string> argv = Vm(vm_).Argv();
  const auto drive = std::find(argv.begin(), argv.end(), "-drive");
  ASSERT_NE(drive, argv.end());
  // A comma in the path is doubled: QEMU's options are split at commas.
  EXPECT_EQ(drive[1], "if=none,id=snapshots,format=qcow2,file=" + (dir_ / "a,,b.qcow2").string());
}

TEST_F(StandInTest, ASnapshotThatCannotBeTakenLeavesEveryLifeToABoot) {
  RunnerConfig cfg = Config();
  cfg.reset = Reset::kSnapshot;
  Runner r(cfg, log_);
  const Outcome crashed = Run(&r, kKernelDies);
  EXPECT_EQ(crashed.lost_kind, Lost::kVmLost);
  const Outcome after = Run(&r, {1});
  ASSERT_TRUE(after.result);
  EXPECT_EQ(after.life->index, 1);
  EXPECT_FALSE(after.life->restored);
  // The stand-in cannot give a snapshot (its devices' counters are not
  // svmdev's, its savevm fails), and the log says so and why.
  const auto said = std::find_if(logged_.begin(), logged_.end(), [](const std::string& l) {
    return Has(l, "runner: no snapshot, every life boots: svm0: ");
  });
  std::string log;
  for (const std::string& line : logged_) log += line + "\n";
  EXPECT_NE(said, logged_.end()) << log;
  // Its store goes with the runner.
  const fs::path disk = vm_.workdir / "vm0.snapshots.qcow2";
  EXPECT_TRUE(fs::exists(disk));
  r.Close();
  EXPECT_FALSE(fs::exists(disk));
}

TEST_F(StandInTest, AHungGuestIsKilledAndReplaced) {
  Runner r(Config(), log_);
  const Outcome hung = Run(&r, kGuestHangs);
  EXPECT_EQ(hung.lost, "no result within 6 s");  // 0.5 s + kill grace + slack
  EXPECT_EQ(hung.lost_kind, Lost::kNoOutput);
  EXPECT_EQ(r.lives()[0]->end, hung.lost);
  const Outcome ok = Run(&r, {2});
  ASSERT_TRUE(ok.result);
  EXPECT_EQ(ok.life->index, 1);
}

TEST_F(StandInTest, AFrozenQemuIsToldFromAQuietExecutor) {
  Runner r(Config(), log_);
  const Outcome frozen = Run(&r, kQemuFreezes);
  EXPECT_FALSE(frozen.result);
  EXPECT_EQ(frozen.lost_kind, Lost::kVmFrozen);
  EXPECT_EQ(frozen.lost,
            "vm0-life000: QEMU's monitor did not answer within 5 s; no result within 6 s");
  EXPECT_EQ(Run(&r, {2}).life->index, 1);
}

TEST_F(StandInTest, AStoppedQemuIsFrozen) {
  Runner r(Config(), log_);
  Run(&r, {1});
  ASSERT_EQ(kill(r.vm()->pid(), SIGSTOP), 0);
  const Outcome stopped = Run(&r, {2});
  EXPECT_EQ(stopped.lost_kind, Lost::kVmFrozen);
  EXPECT_TRUE(Has(stopped.lost, "vm0-life000: QEMU is stopped (state T); ")) << stopped.lost;
}

TEST_F(StandInTest, ALostExecutorIsReplaced) {
  Runner r(Config(), log_);
  const Outcome lost = Run(&r, kExecutorLeaves);
  EXPECT_FALSE(lost.result);
  EXPECT_TRUE(Has(lost.lost, "the guest and closed the executor port")) << lost.lost;
  EXPECT_EQ(lost.lost_kind, Lost::kExecutorLost);
  EXPECT_EQ(Run(&r, {2}).life->index, 1);
}

TEST_F(StandInTest, AGuestThatPowersOffWithoutItsExecutorLostTheExecutor) {
  Runner r(Config(), log_);
  const Outcome lost = Run(&r, kExecutorExits);
  EXPECT_TRUE(Has(lost.lost, "QEMU exited (0)")) << lost.lost;
  EXPECT_EQ(lost.lost_kind, Lost::kExecutorLost);
}

TEST_F(StandInTest, AStuckProgramEndsItsLifeAndTheCallerMayNameWhy) {
  Runner r(Config(), log_);
  const Outcome stuck = Run(&r, kStuck);
  ASSERT_TRUE(stuck.result);
  EXPECT_EQ(stuck.result->status, proto::Status::kStuck);
  EXPECT_TRUE(stuck.lost.empty());
  EXPECT_EQ(stuck.life->end, "program 1 left a task in state D");
  r.EndLife("kernel: INFO: task hung in svmdev_wait");
  EXPECT_EQ(stuck.life->end, "kernel: INFO: task hung in svmdev_wait");
  EXPECT_EQ(Run(&r, {1}).life->index, 1);

  const Outcome again = Run(&r, kStuck);
  EXPECT_EQ(Run(&r, {1}).life->index, 2);
  EXPECT_EQ(again.life->end, "program 3 left a task in state D");
}

TEST_F(StandInTest, EndLifeGivesTheProgramTheRestOfTheConsole) {
  Runner r(Config(), log_);
  Run(&r, {1});
  const Outcome warned = Run(&r, kKernelWarns);
  EXPECT_EQ(warned.console, "WARNING: CPU: 0 PID: 1 at mm/hmm.c:2 hmm_bar+0x2\n");
  std::ofstream(warned.life->console_log, std::ios::app) << "a line still being printed";
  EXPECT_EQ(r.ConsoleWindow(warned), warned.console);  // whole lines while the life goes on
  EXPECT_EQ(r.EndLifeAfterReport(warned, "WARNING in hmm_bar"),
            warned.console + "a line still being printed");
  EXPECT_EQ(r.ConsoleWindow(warned), warned.console + "a line still being printed");
  EXPECT_EQ(warned.life->end, "kernel: WARNING in hmm_bar");
  EXPECT_TRUE(Has(logged_.back(), "life 0 ended after 2 program(s): kernel: WARNING"))
      << logged_.back();
  EXPECT_EQ(Run(&r, {1}).life->index, 1);
}

TEST_F(StandInTest, ABootFailureIsAnErrorWithTheLifeRecorded) {
  setenv("FAKE_QEMU_MODE", "die", 1);
  Runner r(Config(), log_);
  Outcome o;
  std::string error;
  EXPECT_FALSE(r.Run({1}, {}, &o, &error));
  EXPECT_TRUE(Has(error, "could not load kernel")) << error;
  ASSERT_EQ(r.lives().size(), 1u);
  EXPECT_EQ(r.lives()[0]->end,
            "boot failed: vm0-life000: QEMU exited (1) before the executor port opened");
}

std::vector<uint8_t> Program(const std::string& text) {
  ParseError error;
  const auto program = Parse(text, &error);
  EXPECT_TRUE(program.has_value()) << error.ToString();
  return program ? Encode(*program) : std::vector<uint8_t>{};
}

TEST_F(StandInTest, TheRealExecutorBehindTheRunner) {
  setenv("FAKE_QEMU_MODE", "exec", 1);
  setenv("FAKE_QEMU_EXECUTOR", SVMFUZZ_EXECUTOR, 1);
  RunnerConfig cfg = Config();
  cfg.program_timeout_ms = 400;
  Runner r(cfg, log_);
  const Outcome ok = Run(&r, Program("mmap buf=0 pages=4 kind=anon prot=rw\n"
                                     "write buf=0 off=0 pages=4 seed=7\n"
                                     "verify buf=0 off=0 pages=4 seed=7\n"
                                     "mirror buf=0 off=0 pages=1 write=yes\n"
                                     "delay_acks us=1000\n"));
  const Outcome hung = Run(&r, Program("sleep us=1000000\n"));
  const Outcome again = Run(&r, Program("mmap buf=0 pages=1 kind=anon prot=rw\n"));
  ASSERT_TRUE(ok.result) << ok.lost;
  EXPECT_EQ(ok.result->status, proto::Status::kOk);
  ASSERT_EQ(ok.result->ops.size(), 5u);
  EXPECT_EQ(ok.result->ops[2].err, 0);
  EXPECT_TRUE(ok.result->ops[3].flags & proto::kOpUnsupported);
  // The device action went to the host, which performed it on the channel.
  EXPECT_EQ(ok.result->ops[4].err, 0);
  EXPECT_FALSE(ok.result->ops[4].flags & proto::kOpUnsupported);
  ASSERT_TRUE(hung.result) << hung.lost;
  EXPECT_EQ(hung.result->status, proto::Status::kHung);
  EXPECT_EQ(hung.result->detail, -1);
  ASSERT_TRUE(again.result) << again.lost;
  EXPECT_EQ(again.life->index, 0);
  unsetenv("FAKE_QEMU_EXECUTOR");
}

}  // namespace
}  // namespace svmfuzz
