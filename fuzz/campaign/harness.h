// What the libFuzzer and AFL++ builds of svmfuzz-guest-fuzz share: one
// campaign per process, configured by the file $SVMFUZZ_CAMPAIGN names and
// started on the first input, so that under AFL++ the VM is booted in the
// persistent child the fork server made, never in the fork server itself.
#ifndef SVMFUZZ_CAMPAIGN_HARNESS_H_
#define SVMFUZZ_CAMPAIGN_HARNESS_H_

#include <cstddef>
#include <cstdint>

namespace svmfuzz::campaign {

// Runs one input, adding its guest PCs to `map`. Exits the process when the
// configuration is wrong or the guest cannot be booted.
void RunInput(const uint8_t* data, size_t size, uint8_t* map, size_t map_size,
              const char* engine);

}  // namespace svmfuzz::campaign

#endif  // SVMFUZZ_CAMPAIGN_HARNESS_H_
