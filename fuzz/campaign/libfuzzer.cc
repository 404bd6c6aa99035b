// svmfuzz-guest-fuzz for libFuzzer. The harness itself is not instrumented:
// its only coverage is the guest's, which goes to libFuzzer through extra
// counters (a section libFuzzer finds by its name and clears before each
// input).
#include <cstddef>
#include <cstdint>

#include "campaign/harness.h"

namespace {

// Guest PCs hashed into 64 Ki counters: a campaign reaches tens of thousands.
constexpr size_t kCounters = 1 << 16;
__attribute__((section("__libfuzzer_extra_counters"), used)) uint8_t guest_counters[kCounters];

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  svmfuzz::campaign::RunInput(data, size, guest_counters, kCounters, "libfuzzer");
  return 0;
}
