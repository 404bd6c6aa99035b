#include "runner/runner.h"

#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <thread>

extern char** environ;

namespace svmfuzz {
namespace {

// How long a dying kernel gets to finish printing before its VM is killed.
constexpr double kConsoleCatchUp = 0.2;
constexpr double kControlChannelTimeout = 10;
constexpr double kPowerOffTimeout = 30;

constexpr char kSnapshotTag[] = "svmfuzz-ready";
// savevm writes the guest's RAM, loadvm reads it back.
constexpr double kSnapshotTimeout = 120;
// A restored executor answers at once; a slow one is not as good as fresh.
constexpr double kResyncTimeout = 10;

namespace fs = std::filesystem;

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

fs::path SnapshotDisk(const VmConfig& vm) { return vm.workdir / (vm.name + ".snapshots.qcow2"); }

// An empty qcow2 image for savevm (qemu-img, from QEMU's tools).
bool CreateDisk(const fs::path& path, std::string* error) {
  std::error_code ec;
  fs::create_directories(path.parent_path(), ec);
  fs::remove(path, ec);
  const std::string file = path.string();
  const char* argv[] = {"qemu-img", "create", "-q", "-f", "qcow2", file.c_str(), "16M", nullptr};
  posix_spawn_file_actions_t files;
  posix_spawn_file_actions_init(&files);
  posix_spawn_file_actions_addopen(&files, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&files, 1, "/dev/null", O_WRONLY, 0);
  pid_t pid;
  const int rc =
      posix_spawnp(&pid, argv[0], &files, nullptr, const_cast<char**>(argv), environ);
  posix_spawn_file_actions_destroy(&files);
  if (rc != 0) {
    *error = std::string("cannot run qemu-img (install qemu-utils): ") + std::strerror(rc);
    return false;
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0 || !fs::is_regular_file(path)) {
    *error = "qemu-img could not create " + file;
    return false;
  }
  return true;
}

std::string Format(const char* format, double value) {
  char s[64];
  std::snprintf(s, sizeof(s), format, value);
  return s;
}

}  // namespace

Runner::Runner(RunnerConfig cfg, Log log) : cfg_(std::move(cfg)), log_(std::move(log)) {}

Runner::~Runner() { Close(); }

bool Runner::Boot(std::string* error) {
  snapshot_ = false;  // the VM goes: nothing to keep it paused for
  EndLife(ending_ ? lives_.back()->end : "replaced");
  kept_ = false;
  vm_.reset();
  const int index = cfg_.first_life + static_cast<int>(lives_.size());
  VmConfig vm_cfg = cfg_.vm;
  vm_cfg.name = LifeName(index);
  bool snapshots = cfg_.reset == Reset::kSnapshot;
  if (snapshots) {
    std::string why;
    vm_cfg.snapshot_disk = SnapshotDisk(cfg_.vm);
    if (!CreateDisk(vm_cfg.snapshot_disk, &why)) {
      if (log_) log_("runner: no snapshots, every life boots: " + why);
      vm_cfg.snapshot_disk.clear();
      snapshots = false;
    }
  }
  vm_ = std::make_unique<Vm>(vm_cfg);
  auto life = std::make_shared<Life>();
  life->index = index;
  life->console_log = vm_->console_log();
  lives_.push_back(life);
  console_seen_ = 0;
  if (!vm_->Start(error) || !vm_->WaitReady(cfg_.boot_timeout, error)) {
    EndLife("boot failed: " + FirstLine(*error));
    return false;
  }
  life->boot_seconds = vm_->Elapsed();
  std::vector<std::shared_ptr<DevCtl>> ctls;
  const bool connected = ConnectDevices(&ctls, error);
  devices_ = std::make_unique<DeviceActions>(ctls, AccessTimeout(), log_);
  if (!connected || !devices_->Start(error)) {
    *error = vm_cfg.name + ": device control channel: " + *error;
    EndLife("device control channel: " + FirstLine(*error));
    return false;
  }
  if (log_) {
    char features[16];
    std::snprintf(features, sizeof(features), "%#x", vm_->ready().features);
    log_("runner: life " + std::to_string(index) + " ready in " +
         Format("%.1f", life->boot_seconds) + " s (features " + features + "); console " +
         life->console_log.string());
  }
  if (snapshots && !TakeSnapshot(error)) {
    EndLife("snapshot: " + FirstLine(*error));
    return false;
  }
  return true;
}

bool Runner::TakeSnapshot(std::string* error) {
  const Clock::time_point start = Clock::now();
  std::vector<std::shared_ptr<DevCtl>> ctls;
  std::string why;
  // The device state is read with the guest paused, right where the snapshot is.
  const bool paused = vm_->Pause(kMonitorTimeout, &why);
  const bool saved = paused && ConnectDevices(&ctls, &why) &&
                     DeviceState(ctls, &snapshot_state_, &why) &&
                     vm_->SaveSnapshot(kSnapshotTag, kSnapshotTimeout, &why);
  if (paused && !vm_->Resume(kMonitorTimeout, error)) return false;
  snapshot_ = saved;
  if (log_) {
    log_(saved ? "runner: snapshot taken in " + Format("%.1f", SecondsSince(start)) + " s"
               : "runner: no snapshot, every life boots: " + FirstLine(why));
  }
  return true;
}

bool Runner::Restore(std::string* error) {
  kept_ = false;
  const Clock::time_point start = Clock::now();
  const int index = cfg_.first_life + static_cast<int>(lives_.size());
  const std::string name = LifeName(index);
  std::vector<std::shared_ptr<DevCtl>> ctls;
  std::string state;
  bool ok = vm_ && snapshot_;
  if (!ok) *error = name + ": no snapshot to restore";
  ok = ok && vm_->LoadSnapshot(kSnapshotTag, name, kSnapshotTimeout, error) &&
       ConnectDevices(&ctls, error) && DeviceState(ctls, &state, error);
  if (ok && state != snapshot_state_) {
    *error = name + ": the devices' counters or TLB differ from the snapshot's after the restore";
    ok = false;
  }
  ok = ok && vm_->Resume(kMonitorTimeout, error) &&
       vm_->Resync(kResyncTimeout, error) == LinkStatus::kOk;
  if (ok) {
    devices_ = std::make_unique<DeviceActions>(ctls, AccessTimeout(), log_);
    ok = devices_->Start(error);
  }
  if (!ok) {
    devices_.reset();
    vm_.reset();
    snapshot_ = false;
    return false;
  }
  auto life = std::make_shared<Life>();
  life->index = index;
  life->console_log = vm_->console_log();
  life->restored = true;
  life->boot_seconds = SecondsSince(start);
  lives_.push_back(life);
  console_seen_ = 0;
  if (log_) {
    log_("runner: life " + std::to_string(index) + " restored in " +
         Format("%.2f", life->boot_seconds) + " s; console " + life->console_log.string());
  }
  return true;
}

std::string Runner::LifeName(int index) const {
  char name[32];
  std::snprintf(name, sizeof(name), "-life%03d", index);
  return cfg_.vm.name + name;
}

double Runner::AccessTimeout() const {
  // A stalled access waits no longer than an op may take.
  return (cfg_.op_timeout_ms ? cfg_.op_timeout_ms : cfg_.program_timeout_ms) / 1000.0;
}

bool Runner::ConnectDevices(std::vector<std::shared_ptr<DevCtl>>* ctls, std::string* error) {
  ctls->clear();
  for (int i = 0; i < vm_->config().devices; i++) {
    std::shared_ptr<DevCtl> ctl = vm_->ControlChannel(i, kControlChannelTimeout, error);
    if (!ctl) return false;
    ctls->push_back(std::move(ctl));
  }
  return true;
}

bool Runner::DeviceState(const std::vector<std::shared_ptr<DevCtl>>& ctls, std::string* state,
                         std::string* error) {
  state->clear();
  for (size_t i = 0; i < ctls.size(); i++) {
    std::vector<uint64_t> counters;
    std::vector<CtlTlbEntry> tlb;
    if (!ctls[i]->Counters(&counters) || !ctls[i]->Tlb(&tlb)) {
      *error = "svm" + std::to_string(i) + ": " + ctls[i]->error();
      return false;
    }
    state->append(reinterpret_cast<const char*>(counters.data()), counters.size() * 8);
    state->append(reinterpret_cast<const char*>(tlb.data()), tlb.size() * sizeof(CtlTlbEntry));
  }
  return true;
}

bool Runner::EnsureLife(std::string* error) {
  if (ending_) EndLife(lives_.back()->end);
  if (kept_) {
    std::string why;
    if (Restore(&why)) return true;
    if (log_) log_("runner: restore failed, booting instead: " + FirstLine(why));
  }
  return vm_ || Boot(error);
}

bool Runner::Run(const std::vector<uint8_t>& program, const std::vector<uint64_t>& knobs,
                 Outcome* out, std::string* error) {
  if (!EnsureLife(error)) return false;
  const Clock::time_point start = Clock::now();
  std::shared_ptr<Life> life = lives_.back();
  proto::ExecRequest request;
  request.id = next_id_++;
  request.flags = (cfg_.cover ? proto::kExecCover : 0) |
                  (cfg_.fresh_process ? proto::kExecFreshProcess : 0);
  request.op_timeout_ms = cfg_.op_timeout_ms;
  request.program_timeout_ms = cfg_.program_timeout_ms;
  request.cover_cap = cfg_.cover_cap;
  request.knobs = knobs;
  request.program = program;
  const double timeout = cfg_.program_timeout_ms / 1000.0 + kExecutorKillGrace + cfg_.result_slack;

  *out = Outcome();
  out->id = request.id;
  out->life = life;
  out->console_offset = console_seen_;
  Executed executed;
  std::string why;
  const LinkStatus status = vm_->Execute(request, timeout, devices_.get(), &executed, &why);
  if (status == LinkStatus::kOk) {
    out->result = std::move(executed.result);
    out->result_payload = std::move(executed.payload);
    if (!devices_->Finish(&out->stale, &why)) {
      out->lost = vm_->config().name + ": device control channel: " + FirstLine(why);
    }
  } else if (status == LinkStatus::kTimeout) {
    out->lost = Format("no result within %.0f s", timeout);
    out->lost_kind = Lost::kNoOutput;
  } else {
    out->lost = FirstLine(why);
  }
  if (!out->lost.empty()) {
    // Silence or a closed port from a QEMU that still lives: its monitor
    // tells a frozen QEMU from an executor (or kernel) that went quiet.
    const std::string frozen = vm_->Alive() ? vm_->Frozen(kMonitorTimeout) : "";
    if (!frozen.empty()) {
      out->lost = vm_->config().name + ": " + frozen + "; " + out->lost;
      out->lost_kind = Lost::kVmFrozen;
      discard_ = true;
    } else if (out->lost_kind == Lost::kNone) {
      out->lost_kind = vm_->Alive() ? Lost::kExecutorLost : Lost::kVmLost;
    }
  }
  life->programs++;
  if (!out->lost.empty()) {
    EndLife(out->lost);
  } else if (out->result->status == proto::Status::kStuck) {
    // The VM goes before the next program; the caller may still name the end.
    life->end = "program " + std::to_string(request.id) + " left a task in state " +
                static_cast<char>(out->result->detail);
    ending_ = true;
  }
  out->console = ReadConsole(*life, out->console_offset, !vm_ || kept_);
  // The guest powered off because the executor had gone.
  if (!out->lost.empty() && out->console.find(proto::kExecutorExited) != std::string::npos) {
    out->lost_kind = Lost::kExecutorLost;
  }
  out->seconds = SecondsSince(start);
  return true;
}

bool Runner::Ping(double* seconds, std::string* error) {
  return EnsureLife(error) && vm_->Ping(seconds, error) == LinkStatus::kOk;
}

std::shared_ptr<DevCtl> Runner::ControlChannel(int index, std::string* error) {
  if (!vm_ || ending_ || kept_) {
    *error = "no VM is running";
    return nullptr;
  }
  return vm_->ControlChannel(index, kControlChannelTimeout, error);
}

void Runner::EndLife(const std::string& why) {
  ending_ = false;
  if (!vm_ || kept_) return;
  // Let the console catch up with what the kernel printed while dying.
  if (!why.empty() && vm_->Alive()) {
    std::this_thread::sleep_for(std::chrono::duration<double>(kConsoleCatchUp));
  }
  devices_.reset();
  // Paused, the guest prints no more: the life's console is whole.
  std::string pause_error;
  kept_ = snapshot_ && !discard_ && !why.empty() && vm_->Alive() &&
          vm_->Pause(kMonitorTimeout, &pause_error);
  discard_ = false;
  if (!kept_) vm_.reset();
  Life& life = *lives_.back();
  life.end = why;
  if (!why.empty() && log_) {
    log_("runner: life " + std::to_string(life.index) + " ended after " +
         std::to_string(life.programs) + " program(s): " + why);
  }
}

std::string Runner::EndLifeAfterReport(const Outcome& outcome, const std::string& title) {
  EndLife("kernel: " + title);
  return ConsoleWindow(outcome);
}

std::string Runner::ConsoleWindow(const Outcome& outcome) {
  if (!outcome.life) return "";
  const bool goes_on = outcome.life == life() && vm_ && !ending_ && !kept_;
  return ReadConsole(*outcome.life, outcome.console_offset, !goes_on);
}

std::string Runner::ReadConsole(const Life& life, uint64_t start, bool whole) {
  std::ifstream f(life.console_log, std::ios::binary);
  if (!f) return "";
  f.seekg(static_cast<std::streamoff>(start));
  std::string text((std::istreambuf_iterator<char>(f)), std::istreambuf_iterator<char>());
  const size_t cut = whole ? text.size() : text.rfind('\n') + 1;  // npos + 1 == 0
  text.resize(cut);
  if (&life == lives_.back().get()) console_seen_ = start + cut;
  return text;
}

void Runner::Close() {
  if (vm_ && !ending_ && !kept_ && vm_->Alive()) {
    std::string error;
    vm_->PowerOff(kPowerOffTimeout, &error);
  }
  EndLife(ending_ ? lives_.back()->end : "");
  kept_ = false;
  snapshot_ = false;
  vm_.reset();
  if (cfg_.reset == Reset::kSnapshot) {
    std::error_code ec;
    fs::remove(SnapshotDisk(cfg_.vm), ec);
  }
}

}  // namespace svmfuzz
