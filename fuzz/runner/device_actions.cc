#include "runner/device_actions.h"

#include <algorithm>

#include "program/program.h"

namespace svmfuzz {
namespace {

// How often a wait for a stalled access looks at the time (delay_acks releases).
constexpr double kTick = 0.05;
constexpr double kNothingDue = 3600;
constexpr uint64_t kPageSize = 4096;

}  // namespace

DeviceActions::DeviceActions(std::vector<std::shared_ptr<DevCtl>> ctls, double access_timeout,
                             Log log)
    : ctls_(std::move(ctls)), access_timeout_(access_timeout), log_(std::move(log)) {}

bool DeviceActions::Start(std::string* error) {
  for (size_t i = 0; i < ctls_.size(); i++) {
    CtlResult r;
    if (!ctls_[i]->SetEvents(kRunnerEvents, &r)) {
      *error = "svm" + std::to_string(i) + ": " + ctls_[i]->error();
      return false;
    }
  }
  return true;
}

proto::DeviceReply DeviceActions::Perform(const proto::DeviceRequest& req) {
  const proto::DeviceReply unavailable{req.seq, proto::kDeviceUnavailable, 0};
  if (req.device >= ctls_.size()) return unavailable;
  DevCtl* ctl = ctls_[req.device].get();
  CtlResult r{};
  bool ok = false;
  const char* name = "";
  switch (static_cast<OpCode>(req.op)) {
    case OpCode::kDeviceAccess:
      name = "dev_access";
      ok = DevAccess(ctl, req, &r);
      break;
    case OpCode::kFaultStorm: {
      name = "fault_storm";
      // `arg1` accesses spread evenly over `arg0` pages.
      const uint64_t stride =
          std::max<uint64_t>(req.arg0 * kPageSize / std::max<uint64_t>(req.arg1, 1), 1);
      ok = ctl->FaultStorm(req.ctx, req.va, stride,
                           static_cast<uint16_t>(std::min<uint64_t>(req.arg1, 0xffff)),
                           SVMDEV_ACC_READ, &r);
      break;
    }
    case OpCode::kDelayAcks: {
      name = "delay_acks";
      armed_.insert(req.device);
      delaying_.insert(req.device);
      ok = ctl->InvalMode(SVMDEV_INVAL_DELAY, kAllInvalidations, 0, &r);
      const Clock::time_point until = After(static_cast<double>(req.arg0) / 1e6);
      auto it = release_.find(req.device);
      if (it == release_.end() || it->second < until) release_[req.device] = until;
      break;
    }
    case OpCode::kDropAcks:
      name = "drop_acks";
      armed_.insert(req.device);
      delaying_.erase(req.device);
      ok = ctl->InvalMode(SVMDEV_INVAL_DROP, static_cast<uint32_t>(req.arg0), 0, &r);
      break;
    case OpCode::kFailDma:
      name = "fail_dma";
      armed_.insert(req.device);
      ok = ctl->FailDma(0, static_cast<uint32_t>(req.arg0), &r);
      break;
    default:
      return unavailable;
  }
  if (!ok) {
    if (log_) {
      log_(std::string("runner: ") + name + " on svm" + std::to_string(req.device) + ": " +
           ctl->error());
    }
    return unavailable;
  }
  return proto::DeviceReply{req.seq, r.status, r.value};
}

// A word access; one that stalls is waited for until the driver replays or
// cancels it, or the access timeout passes (then the reply says STALLED).
bool DeviceActions::DevAccess(DevCtl* ctl, const proto::DeviceRequest& req, CtlResult* out) {
  const uint8_t kind = static_cast<uint8_t>(req.arg0);
  if (!ctl->Access(req.ctx, req.va, kind, 8, kind == SVMDEV_ACC_READ ? 0 : 1, out)) return false;
  if (out->status != SVMDEV_STATUS_STALLED) return true;
  const uint32_t tag = ctl->tag();
  const Clock::time_point deadline = After(access_timeout_);
  for (;;) {
    auto& events = ctl->events();
    for (auto it = events.begin(); it != events.end(); ++it) {
      if (it->kind == SVMDEV_EVT_ACCESS_DONE && it->tag == tag) {
        *out = CtlResult{it->arg, it->code, 0};
        events.erase(it);
        return true;
      }
    }
    const double left = SecondsLeft(deadline);
    if (left <= 0) return true;
    Poll();
    if (!ctl->PollEvents(std::min(left, kTick))) return false;
  }
}

double DeviceActions::Poll() {
  const Clock::time_point now = Clock::now();
  for (auto it = release_.begin(); it != release_.end();) {
    if (it->second <= now) {
      const size_t device = it->first;
      it = release_.erase(it);
      if (!EndDelay(device) && log_) {
        log_("runner: delay_acks on svm" + std::to_string(device) + ": " + ctls_[device]->error());
      }
    } else {
      ++it;
    }
  }
  double next = kNothingDue;
  for (const auto& [device, until] : release_) next = std::min(next, SecondsLeft(until));
  return std::max(next, 0.0);
}

bool DeviceActions::EndDelay(size_t device) {
  DevCtl* ctl = ctls_[device].get();
  CtlResult r;
  if (delaying_.count(device)) {  // not since replaced by drop_acks
    delaying_.erase(device);
    if (!ctl->InvalMode(SVMDEV_INVAL_NORMAL, 0, 0, &r)) return false;
  }
  return ctl->Release(&r);
}

bool DeviceActions::Finish(std::vector<CtlEvent>* stale, std::string* error) {
  release_.clear();
  delaying_.clear();
  stale->clear();
  bool ok = true;
  for (size_t i = 0; i < ctls_.size() && ok; i++) {
    DevCtl* ctl = ctls_[i].get();
    CtlResult r;
    if (armed_.count(i)) {
      ok = ctl->InvalMode(SVMDEV_INVAL_NORMAL, 0, 0, &r) && ctl->FailDma(0, 0, &r) &&
           ctl->Release(&r);
    } else {
      uint32_t version, status;
      ok = ctl->Ping(&version, &status);  // after every event the device sent before now
    }
    if (!ok) *error = "svm" + std::to_string(i) + ": " + ctl->error();
    for (const CtlEvent& e : ctl->events()) {
      if (e.kind == SVMDEV_EVT_STALE) stale->push_back(e);
    }
    ctl->events().clear();
  }
  armed_.clear();
  return ok;
}

}  // namespace svmfuzz
