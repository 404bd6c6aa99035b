// The structure-aware mutator the fuzzing engines use on the binary form.
//
// Byte-level mutation of the binary form always decodes to a valid program,
// but most flips land on a reference the decoder folds back onto what already
// existed, or shift every later record. This mutator works on Program values
// instead: it inserts, removes and reorders whole ops, changes one argument
// within its range, moves ops between threads and driver files, wraps ops in
// forks and splices programs. Arguments of new ops are drawn from the Scope at
// their position, so they name live buffers, running threads and open files.
//
// Every program it returns is valid. A structural change can make later ops
// invalid (a moved mmap, a deleted thread_create); Repair() reduces those the
// way Decode() reduces raw bytes, keeping every value that is still valid.
#ifndef SVMFUZZ_PROGRAM_MUTATE_H_
#define SVMFUZZ_PROGRAM_MUTATE_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "program/program.h"

namespace svmfuzz {

enum class Mutation : uint8_t {
  kInsert,       // a new random op
  kDelete,       // an op, with its body
  kDuplicate,    // an op copied next to itself
  kSwap,         // two ops of one block
  kMove,         // an op to another position, possibly another block
  kArg,          // one argument, within its kind and range
  kRetagThread,  // an op onto another running thread (or the main one)
  kRetagFile,    // a driver op onto another usable driver file
  kWrap,         // a run of ops into the body of a new fork
  kUnwrap,       // a fork replaced by its body
  kSplice,       // crossover: a prefix of one program and a suffix of the other
  kInsertSlice,  // crossover: a run of the other program's ops inserted
};
inline constexpr size_t kNumMutations = static_cast<size_t>(Mutation::kInsertSlice) + 1;

const char* MutationName(Mutation m);

// Turns `program` into a valid one: each value still valid where it stands is
// kept, others are reduced as Decode() reduces them, ops with nothing valid to
// refer to are dropped, forks nested too deep give their ops to the parent,
// and ops past kMaxOps are cut. A valid program is returned unchanged.
Program Repair(const Program& program);

// Drops ops from the end (prefixes of valid programs are valid) until the
// binary form takes at most `max_size` bytes.
void FitSize(Program* program, size_t max_size);

// The longest sleep or delay a campaign runs, in microseconds: a fuzzer's
// bytes ask for up to a second, which would spend the campaign waiting. A
// program's text form may still ask for more (svmfuzz run, the corpus).
inline constexpr uint64_t kFuzzMaxDelayUs = 20000;
// Caps every sleep and delay of `program`, forks included, at
// kFuzzMaxDelayUs; true if one changed. A valid program stays valid.
bool CapDelays(Program* program);

class Mutator {
 public:
  // The same seed gives the same sequence of mutations on the same inputs.
  explicit Mutator(uint64_t seed);

  // Applies one mutation picked at random to the valid `*program` (with
  // `other` the second parent for crossovers, or null) and returns it. The
  // result is valid, changed where the program allowed any change, and its
  // binary form fits `max_size`.
  Mutation Mutate(Program* program, const Program* other = nullptr,
                  size_t max_size = SIZE_MAX);

  // Applies `kind` to the valid `*program`. Returns false, leaving it
  // unchanged, if the mutation does not apply (nothing to delete, no second
  // running thread, no room left). On true `*program` is valid.
  bool Apply(Mutation kind, Program* program, const Program* other = nullptr);

  // The binary form: decodes `data` (any bytes decode; Validate() is checked
  // again, and a program that fails it is replaced by an empty one), applies
  // one to four mutations, with `other` as the second parent when it is not
  // null, and encodes the result within `max_size`. `*last`, if given, is the
  // last mutation applied.
  std::vector<uint8_t> MutateBytes(const uint8_t* data, size_t size, const uint8_t* other,
                                   size_t other_size, size_t max_size,
                                   Mutation* last = nullptr);

  // Pseudo-random numbers in [0, n), n > 0; for callers that share the stream.
  uint64_t Below(uint64_t n);

 private:
  uint64_t Next();

  uint64_t state_;
};

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_MUTATE_H_
