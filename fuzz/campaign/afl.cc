// svmfuzz-guest-fuzz for AFL++, through its libAFLDriver. The harness is not
// instrumented: its only coverage is the guest's, written into AFL's map.
//
// The VM must outlive single inputs: booting takes half a minute, an input a
// fraction of a second. The driver runs in persistent mode (the fork server
// forks one child that runs inputs in a loop, INT_MAX of them by default)
// and calls LLVMFuzzerTestOneInput for the first time after the fork, so the
// campaign starts, and boots the VM, in that child; a fork server that forked
// a VM-owning process per input would reboot for every input. AFL++ clears
// the map between the loop's inputs itself.
#include <cstddef>
#include <cstdint>

#include "campaign/harness.h"

extern "C" {
extern uint8_t* __afl_area_ptr;
extern uint32_t __afl_map_size;
extern uint32_t __afl_final_loc;
}

namespace {

// Guest PCs hashed into 256 KiB of map; svmfuzz fuzz sets AFL_MAP_SIZE to it.
constexpr uint32_t kMapSize = 1 << 18;

// With no instrumented code the runtime would offer AFL++ its default map;
// it sizes the map after the last instrumented location, which this sets
// before the runtime's own constructors (priorities from 2) read it.
__attribute__((constructor(1))) void ReserveGuestMap() {
  if (__afl_final_loc < kMapSize - 1) __afl_final_loc = kMapSize - 1;
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  svmfuzz::campaign::RunInput(data, size, __afl_area_ptr, __afl_map_size, "afl");
  return 0;
}
