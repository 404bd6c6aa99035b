// The validator: every invariant a program must hold before it is run.
//
// Parse() and Decode() only ever hand out programs it accepts; the tests and
// the fuzz target hold them to that.
#ifndef SVMFUZZ_PROGRAM_VALIDATE_H_
#define SVMFUZZ_PROGRAM_VALIDATE_H_

#include <cstddef>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "program/program.h"

namespace svmfuzz {

struct ValidationError {
  // Indices from the top-level op down through fork bodies to the bad op.
  std::vector<size_t> path;
  // The offending argument, or -1 for the op itself (its name or thread tag).
  int arg = -1;
  std::string message;
};

std::optional<ValidationError> Validate(const Program& program);

// Checks one op against the scope it runs in: argument kinds and ranges, buffer
// and thread references, the thread it runs on. Not the body of a fork.
// Returns the offending argument (-1: the op) and a message, or nullopt.
std::optional<std::pair<int, std::string>> CheckOp(const Op& op, const Scope& scope);

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_VALIDATE_H_
