#include "runner/runner.h"

#include <cstdio>
#include <fstream>
#include <thread>

namespace svmfuzz {
namespace {

// How long a dying kernel gets to finish printing before its VM is killed.
constexpr double kConsoleCatchUp = 0.2;
constexpr double kControlChannelTimeout = 10;
constexpr double kPowerOffTimeout = 30;

std::string FirstLine(const std::string& text) { return text.substr(0, text.find('\n')); }

std::string Format(const char* format, double value) {
  char s[64];
  std::snprintf(s, sizeof(s), format, value);
  return s;
}

}  // namespace

Runner::Runner(RunnerConfig cfg, Log log) : cfg_(std::move(cfg)), log_(std::move(log)) {}

Runner::~Runner() { Close(); }

bool Runner::Boot(std::string* error) {
  EndLife(ending_ ? lives_.back()->end : "replaced");
  const int index = cfg_.first_life + static_cast<int>(lives_.size());
  VmConfig vm_cfg = cfg_.vm;
  char name[32];
  std::snprintf(name, sizeof(name), "-life%03d", index);
  vm_cfg.name += name;
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
  for (int i = 0; i < vm_cfg.devices; i++) {
    std::shared_ptr<DevCtl> ctl = vm_->ControlChannel(i, kControlChannelTimeout, error);
    if (!ctl) break;
    ctls.push_back(std::move(ctl));
  }
  // A stalled access waits no longer than an op may take.
  const double access_timeout =
      (cfg_.op_timeout_ms ? cfg_.op_timeout_ms : cfg_.program_timeout_ms) / 1000.0;
  devices_ = std::make_unique<DeviceActions>(ctls, access_timeout, log_);
  if (static_cast<int>(ctls.size()) != vm_cfg.devices || !devices_->Start(error)) {
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
  return true;
}

bool Runner::EnsureLife(std::string* error) {
  if (ending_) EndLife(lives_.back()->end);
  return vm_ || Boot(error);
}

bool Runner::Run(const std::vector<uint8_t>& program, const std::vector<uint64_t>& knobs,
                 Outcome* out, std::string* error) {
  if (!EnsureLife(error)) return false;
  const Clock::time_point start = Clock::now();
  std::shared_ptr<Life> life = lives_.back();
  proto::ExecRequest request;
  request.id = next_id_++;
  request.flags = cfg_.cover ? proto::kExecCover : 0;
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
  out->console = ReadConsole(*life, out->console_offset, !vm_);
  // The guest powered off because the executor had gone.
  if (!out->lost.empty() && out->console.find(kExecutorExited) != std::string::npos) {
    out->lost_kind = Lost::kExecutorLost;
  }
  out->seconds = SecondsSince(start);
  return true;
}

bool Runner::Ping(double* seconds, std::string* error) {
  return EnsureLife(error) && vm_->Ping(seconds, error) == LinkStatus::kOk;
}

std::shared_ptr<DevCtl> Runner::ControlChannel(int index, std::string* error) {
  if (!vm_ || ending_) {
    *error = "no VM is running";
    return nullptr;
  }
  return vm_->ControlChannel(index, kControlChannelTimeout, error);
}

void Runner::EndLife(const std::string& why) {
  ending_ = false;
  if (!vm_) return;
  // Let the console catch up with what the kernel printed while dying.
  if (!why.empty() && vm_->Alive()) {
    std::this_thread::sleep_for(std::chrono::duration<double>(kConsoleCatchUp));
  }
  devices_.reset();
  vm_.reset();
  Life& life = *lives_.back();
  life.end = why;
  if (!why.empty() && log_) {
    log_("runner: life " + std::to_string(life.index) + " ended after " +
         std::to_string(life.programs) + " program(s): " + why);
  }
}

std::string Runner::ConsoleWindow(const Outcome& outcome) {
  if (!outcome.life) return "";
  const bool goes_on = outcome.life == life() && vm_ && !ending_;
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
  if (vm_ && !ending_ && vm_->Alive()) {
    std::string error;
    vm_->PowerOff(kPowerOffTimeout, &error);
  }
  EndLife(ending_ ? lives_.back()->end : "");
}

}  // namespace svmfuzz
