// One QEMU process running the guest: svmdev devices, the kernel and
// initramfs the build made, a console log, the executor's virtio-serial port
// and each device's control channel, all on unix sockets in a private
// directory. Destroying a Vm kills QEMU: it never outlives its owner.
#ifndef SVMFUZZ_RUNNER_VM_H_
#define SVMFUZZ_RUNNER_VM_H_

#include <sys/types.h>

#include <filesystem>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "runner/devctl.h"
#include "runner/executor_link.h"

namespace svmfuzz {

struct VmConfig {
  std::filesystem::path qemu;       // qemu-system-x86_64
  std::filesystem::path kernel;     // the kernel artifact directory (bzImage, ...)
  std::filesystem::path initramfs;  // initramfs.cpio
  std::filesystem::path workdir;    // console and QEMU logs
  std::string name = "vm0";
  std::string accel = "tcg";
  int cpus = 2;
  std::string memory = "2G";
  int devices = 1;
  // Each device's VRAM (QEMU's size syntax, e.g. "64M"); empty: the device's
  // default. A small one makes migrations evict under pressure.
  std::string vram;
  std::string run = "executor";  // what the guest's init runs
  bool interactive = false;      // the console on this terminal
  std::vector<std::string> extra_append;
  // A qcow2 image that holds the VM's snapshots (savevm); none if empty.
  std::filesystem::path snapshot_disk;
};

class Vm {
 public:
  explicit Vm(VmConfig cfg);
  ~Vm();
  Vm(const Vm&) = delete;
  Vm& operator=(const Vm&) = delete;

  const VmConfig& config() const { return cfg_; }
  std::vector<std::string> Argv() const;
  const std::filesystem::path& console_log() const { return console_log_; }
  const std::filesystem::path& stderr_log() const { return stderr_log_; }
  const std::filesystem::path& socket_dir() const { return sockdir_; }
  std::filesystem::path exec_socket() const { return sockdir_ / "exec.sock"; }
  std::filesystem::path qmp_socket() const { return sockdir_ / "qmp.sock"; }
  std::filesystem::path ctl_socket(int index) const;
  pid_t pid() const { return pid_; }

  bool Start(std::string* error);
  bool Alive();
  // QEMU's exit status (negative: the signal that killed it) once it has
  // exited, waiting at most `timeout` seconds (negative: for ever).
  std::optional<int> WaitExit(double timeout);
  void Kill();
  double Elapsed() const;

  // Each fails with `error` naming this VM and saying what became of it.
  bool WaitReady(double timeout, std::string* error);
  const proto::Ready& ready() const { return ready_; }
  LinkStatus Ping(double* seconds, std::string* error);
  LinkStatus Execute(const proto::ExecRequest& request, double timeout, DeviceHandler* devices,
                     Executed* out, std::string* error);
  // Asks the guest to power off and waits for QEMU to exit.
  bool PowerOff(double timeout, std::string* error);

  // Snapshots, through QEMU's monitor. The guest does not run between Pause
  // and Resume; SaveSnapshot and LoadSnapshot leave it as they found it.
  bool Pause(double timeout, std::string* error);
  bool Resume(double timeout, std::string* error);
  bool SaveSnapshot(const std::string& tag, double timeout, std::string* error);
  // Back to snapshot `tag` (of a paused VM) as VM `name`: the console goes on
  // in that name's log, what either side of the executor port and of the
  // control channels had not read yet is dropped, and the channels are
  // connected again on their next use.
  bool LoadSnapshot(const std::string& tag, const std::string& name, double timeout,
                    std::string* error);
  // After a LoadSnapshot: the executor answers a PING of its own, whatever
  // the port held before.
  LinkStatus Resync(double timeout, std::string* error);
  // A connected client of device `index`'s control channel (svm<index>), the
  // same one on every call: the channel takes one client at a time.
  std::shared_ptr<DevCtl> ControlChannel(int index, double timeout, std::string* error);

  // Why QEMU, alive, does not run the guest: it is stopped (SIGSTOP, a
  // debugger), its monitor (QMP) does not answer within `timeout` seconds,
  // or says the VM is not running. Empty when the monitor says "running":
  // then whatever went quiet is inside the guest.
  std::string Frozen(double timeout);

  // What to tell of a guest that went away `what` ("and closed the executor
  // port"): QEMU's exit status, what it wrote on stderr and the console's tail.
  std::string Died(const std::string& what);
  std::string ConsoleTail(size_t lines) const;

 private:
  ExecutorLink* Link(Clock::time_point deadline, std::string* error);
  // Runs QMP commands (JSON objects) in one monitor session; `returns` gets
  // each one's "return" value as JSON text.
  bool Monitor(const std::vector<std::string>& commands, double timeout,
               std::vector<std::string>* returns, std::string* error);
  // An HMP command whose output, if any, is an error.
  bool Hmp(const std::string& command, double timeout, std::string* error);
  LinkStatus Explain(LinkStatus status, std::string* error);
  void Reap(int status);

  VmConfig cfg_;
  std::filesystem::path console_log_;
  std::filesystem::path stderr_log_;
  std::filesystem::path sockdir_;
  pid_t pid_ = -1;
  std::optional<int> exit_status_;
  Clock::time_point started_;
  std::unique_ptr<ExecutorLink> link_;
  std::map<int, std::shared_ptr<DevCtl>> ctls_;
  proto::Ready ready_;
};

// QEMU processes whose command line names `vm_workdir` are killed: a process
// killed outright (AFL++ ends its persistent child with SIGKILL) leaves its
// VM behind. Returns how many there were.
int KillStrayVms(const std::filesystem::path& vm_workdir);

}  // namespace svmfuzz

#endif  // SVMFUZZ_RUNNER_VM_H_
