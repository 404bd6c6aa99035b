// A program as a standalone C reproducer: one .c file that builds with
// `gcc -static -pthread` and does in the guest what the executor would do
// with the program, without the executor, so that a kernel developer can run
// and read it. Each op is printed as a comment of its text form above its C.
//
// Two targets: the svmdev driver (SVMDEV_IOC_* on /dev/svmdevN), and the
// kernel's own test_hmm (HMM_DMIRROR_* on /dev/hmm_dmirrorN), which runs on
// any kernel with CONFIG_TEST_HMM for the programs that need nothing more.
// Device actions are the host's doing (the device's control channel): the
// svmdev reproducer leaves them as comments and says so at run time.
#ifndef SVMFUZZ_PROGRAM_CSOURCE_H_
#define SVMFUZZ_PROGRAM_CSOURCE_H_

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "program/program.h"

namespace svmfuzz {

enum class CTarget { kSvmdev, kTestHmm };

struct CSourceOptions {
  CTarget target = CTarget::kSvmdev;
  // struct svmdev_knobs fields in order, set on every driver file once it
  // is bound, as the executor sets ExecRequest.knobs; empty: none.
  std::vector<uint64_t> knobs;
  // Runs of the program, each in a fresh process; 0: until killed.
  uint64_t repeat = 1;
  // A run still going after this long is killed with its forks.
  uint64_t program_timeout_ms = 20000;
};

// The fields of struct svmdev_knobs, in order.
const std::vector<std::string>& KnobNames();
// Parses "name=value" into `knobs` (grown to hold it); false and `*error` if
// the name is not a knob or the value not a number.
bool ParseKnob(std::string_view item, std::vector<uint64_t>* knobs, std::string* error);

// The C source of `program` (which must be valid), or nullopt and `*error`
// naming the first op the target cannot express.
std::optional<std::string> GenerateC(const Program& program, const CSourceOptions& options,
                                     std::string* error);

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_CSOURCE_H_
