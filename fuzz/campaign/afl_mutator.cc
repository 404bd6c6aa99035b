// AFL++'s custom mutator for svmfuzz-guest-fuzz-afl (libsvmfuzz-afl-mutator.so,
// loaded through AFL_CUSTOM_MUTATOR_LIBRARY): the structured mutator of
// program/mutate.h on the binary form, with the queue entry AFL++ offers
// for splicing as the second parent of crossovers.
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <vector>

#include "program/mutate.h"

namespace {

struct State {
  explicit State(unsigned int seed) : mutator(seed) {}
  svmfuzz::Mutator mutator;
  std::vector<uint8_t> out;  // AFL++ reads the result from here until the next call
  svmfuzz::Mutation last = svmfuzz::Mutation::kInsert;
};

}  // namespace

extern "C" {

// The AFL++ state is not needed: the seed makes the mutator deterministic.
void* afl_custom_init(void* /*afl*/, unsigned int seed) { return new State(seed); }

size_t afl_custom_fuzz(void* data, uint8_t* buf, size_t buf_size, uint8_t** out_buf,
                       uint8_t* add_buf, size_t add_buf_size, size_t max_size) {
  State* s = static_cast<State*>(data);
  s->out = s->mutator.MutateBytes(buf, buf_size, add_buf, add_buf_size, max_size, &s->last);
  *out_buf = s->out.data();
  return s->out.size();
}

// Names the queue entries it made after their last mutation.
const char* afl_custom_describe(void* data, size_t max_description_len) {
  const char* name = svmfuzz::MutationName(static_cast<State*>(data)->last);
  return std::strlen(name) <= max_description_len ? name : "";
}

void afl_custom_deinit(void* data) { delete static_cast<State*>(data); }

}  // extern "C"
