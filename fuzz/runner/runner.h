// Runs programs in the guest, VM life after VM life.
//
// A Runner owns one VM at a time. It sends each program to the executor,
// performs the program's device actions meanwhile, and returns what came back
// with the console the kernel printed while it ran. When the guest is lost
// (QEMU exits, the executor stops answering or closes its port) or can no
// longer be trusted (a program left a task the kernel cannot kill, or the
// caller saw trouble: EndLife), it ends that life and boots the next one
// before the next program. Every life keeps its own console log, named after
// the life, so the console of a crash is never overwritten by the reboot
// that follows it.
#ifndef SVMFUZZ_RUNNER_RUNNER_H_
#define SVMFUZZ_RUNNER_RUNNER_H_

#include <cstdint>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runner/device_actions.h"
#include "runner/vm.h"

namespace svmfuzz {

// How long QEMU's monitor gets to answer when the guest went quiet.
inline constexpr double kMonitorTimeout = 5.0;
// A killed program may take this long to die before the executor gives up on
// it (Supervisor::kKillGraceMs), and answering takes a little more.
inline constexpr double kExecutorKillGrace = 5.0;

// How a life that ended gives way to the next: a new boot, or the snapshot
// the first boot took once its executor was ready (a reboot only if the
// restore fails).
enum class Reset { kReboot, kSnapshot };

struct RunnerConfig {
  VmConfig vm;
  double boot_timeout = 300;
  uint32_t op_timeout_ms = 5000;
  uint32_t program_timeout_ms = 20000;
  bool cover = true;
  uint32_t cover_cap = 65536;
  // Seconds past the program's own deadline (and the executor's grace for a
  // killed program, and for a killed child still exiting: Supervisor::
  // kKilledExitMs) before the guest counts as hung.
  double result_slack = 30;
  // The index of the first life (its console log's name): a resumed campaign
  // keeps the logs of its earlier sessions.
  int first_life = 0;
  Reset reset = Reset::kReboot;
  // Each program's process forked when the program comes, not ahead of it:
  // the benchmark's baseline.
  bool fresh_process = false;
};

// One boot of the VM.
struct Life {
  int index = 0;
  std::filesystem::path console_log;
  double boot_seconds = 0;  // to a ready executor: a boot's, or a restore's
  bool restored = false;    // from the snapshot rather than booted
  int programs = 0;
  std::string end;  // why it ended; empty while it runs or if it was shut down cleanly
};

// How the guest was lost while a program ran.
enum class Lost {
  kNone,
  kNoOutput,      // no answer in time
  kExecutorLost,  // the executor went away, QEMU did not
  kVmLost,        // QEMU exited
  kVmFrozen,      // QEMU lives but does not run the guest (Vm::Frozen)
};

struct Outcome {
  uint64_t id = 0;
  std::optional<proto::ExecResult> result;  // none: the guest was lost before it answered
  std::vector<uint8_t> result_payload;      // the RESULT as it came
  std::shared_ptr<Life> life;
  std::string lost;  // why the guest was lost, if it was
  Lost lost_kind = Lost::kNone;
  // The console while the program ran: whole lines while the life goes on
  // (a line still being printed is the next program's), all of it once the
  // life has ended. It starts at console_offset of the life's log.
  std::string console;
  uint64_t console_offset = 0;
  std::vector<CtlEvent> stale;  // EVT_STALE reports of the devices meanwhile
  double seconds = 0;
};

class Runner {
 public:
  Runner(RunnerConfig cfg, Log log);
  ~Runner();
  Runner(const Runner&) = delete;
  Runner& operator=(const Runner&) = delete;

  // Changes apply from the next program (timeouts) or the next life (VM).
  RunnerConfig& config() { return cfg_; }
  const std::vector<std::shared_ptr<Life>>& lives() const { return lives_; }
  std::shared_ptr<Life> life() const { return lives_.empty() ? nullptr : lives_.back(); }
  // The running VM, if any.
  Vm* vm() { return vm_.get(); }

  // Starts the next VM life and waits for its executor and its devices.
  bool Boot(std::string* error);
  // Starts the next life from the snapshot, in the VM the last life left
  // paused (Reset::kSnapshot); false, with that VM gone, when it cannot.
  bool Restore(std::string* error);
  // Runs one program (its binary form), booting a VM first if there is none;
  // false only when that boot failed. `knobs`: test-only driver knobs.
  bool Run(const std::vector<uint8_t>& program, const std::vector<uint64_t>& knobs, Outcome* out,
           std::string* error);
  bool Ping(double* seconds, std::string* error);
  // Ends the current life now, saying why. It may also name why the last
  // program's life ended when that program left a task stuck: the caller may
  // know more (a kernel report).
  void EndLife(const std::string& why);
  // The console of `outcome`'s program as it is now: all of it once its
  // life has ended (a report the kernel was still printing belongs to it).
  std::string ConsoleWindow(const Outcome& outcome);
  // After a program whose judge found a kernel report, titled `title`:
  // ends the life (Lockdep and KASAN report once, a WARN may leave state
  // behind) and returns the program's whole console, the rest of the report
  // included, for the judge to judge again. Both front ends go through it.
  std::string EndLifeAfterReport(const Outcome& outcome, const std::string& title);
  // Device `index`'s control channel in the current life.
  std::shared_ptr<DevCtl> ControlChannel(int index, std::string* error);
  // Powers the guest off (or kills it if it does not answer).
  void Close();

 private:
  bool EnsureLife(std::string* error);
  std::string ReadConsole(const Life& life, uint64_t start, bool whole);
  std::string LifeName(int index) const;
  double AccessTimeout() const;
  bool ConnectDevices(std::vector<std::shared_ptr<DevCtl>>* ctls, std::string* error);
  // The device state a restore must bring back, read with the guest paused.
  bool DeviceState(const std::vector<std::shared_ptr<DevCtl>>& ctls, std::string* state,
                   std::string* error);
  bool TakeSnapshot(std::string* error);

  RunnerConfig cfg_;
  Log log_;
  std::vector<std::shared_ptr<Life>> lives_;
  std::unique_ptr<Vm> vm_;
  std::unique_ptr<DeviceActions> devices_;
  uint64_t next_id_ = 1;
  uint64_t console_seen_ = 0;
  // The last program left a task stuck: its life is over (its end says so),
  // the VM goes before anything else runs.
  bool ending_ = false;
  // The running QEMU holds the snapshot, and the device state it holds.
  bool snapshot_ = false;
  std::string snapshot_state_;
  // The last life ended with its VM paused, to be restored.
  bool kept_ = false;
  // The VM cannot be trusted to restore (its QEMU froze).
  bool discard_ = false;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_RUNNER_RUNNER_H_
