// The devices of one VM life acting as a program asks (docs/executor-protocol.md, "Device
// actions"): each DEVICE request is performed through the device's control
// channel and answered with the device's status. What a program sets up
// (held, dropped or early acknowledgements, failing DMA) ends with it.
#ifndef SVMFUZZ_RUNNER_DEVICE_ACTIONS_H_
#define SVMFUZZ_RUNNER_DEVICE_ACTIONS_H_

#include <map>
#include <memory>
#include <set>
#include <string>
#include <vector>

#include "runner/devctl.h"
#include "runner/executor_link.h"

namespace svmfuzz {

// Events the devices stream: the stale-access oracle's, and the end of a
// stalled access. The device blocks while its channel is full, so nothing
// that arrives by the thousand (faults, invalidations) is asked for.
inline constexpr uint32_t kRunnerEvents = SVMDEV_EVT_STALE | SVMDEV_EVT_ACCESS_DONE;
// delay_acks holds every invalidation of its window (the device holds at most
// 64 at a time and performs the rest at once).
inline constexpr uint32_t kAllInvalidations = 0xffffffff;

class DeviceActions : public DeviceHandler {
 public:
  // `access_timeout`: how long a stalled access is waited for.
  DeviceActions(std::vector<std::shared_ptr<DevCtl>> ctls, double access_timeout, Log log);

  // Asks every device for the events above; false with `error` if one fails.
  bool Start(std::string* error);
  proto::DeviceReply Perform(const proto::DeviceRequest& request) override;
  double Poll() override;
  // After a program: ends what it set up on the devices and hands over the
  // stale accesses they reported while it ran.
  bool Finish(std::vector<CtlEvent>* stale, std::string* error);

 private:
  bool DevAccess(DevCtl* ctl, const proto::DeviceRequest& request, CtlResult* out);
  bool EndDelay(size_t device);

  std::vector<std::shared_ptr<DevCtl>> ctls_;
  double access_timeout_;
  Log log_;
  std::set<size_t> armed_;                       // devices with an injection of this program
  std::map<size_t, Clock::time_point> release_;  // device: when its delay_acks ends
  std::set<size_t> delaying_;                    // devices whose mode delay_acks set
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_RUNNER_DEVICE_ACTIONS_H_
