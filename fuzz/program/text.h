// The text form of programs, for people: one op per line.
//
//   # comment
//   mmap buf=0 pages=16 kind=anon prot=rw
//   thread_create tid=1
//   @1 write buf=0 off=0 pages=4 seed=7
//   fork wait=yes {
//     touch buf=0 off=0 pages=16
//   }
//   thread_join tid=1
//
// An op line is an optional `@tid` (the thread it runs on), the op name and
// every argument as name=value in any order; enums are written by name,
// integers in decimal or 0x hex. A driver op may also take `file=N`, the
// driver file it goes through (default 0; others opened by open_dev). Only
// fork takes a `{ ... }` block, opened at the end of its line and closed by a
// `}` line. `#` starts a comment.
//
// Print() writes the canonical form: arguments in table order (then file=N if
// it is not 0), two spaces of indent per block, no comments.
// Parse(Print(p)) == p for every valid p.
#ifndef SVMFUZZ_PROGRAM_TEXT_H_
#define SVMFUZZ_PROGRAM_TEXT_H_

#include <optional>
#include <string>
#include <string_view>

#include "program/program.h"

namespace svmfuzz {

struct ParseError {
  int line = 0;  // 1-based
  int col = 0;   // 1-based, in bytes
  std::string message;

  std::string ToString() const;  // "line:col: message"
};

std::string Print(const Program& program);

// One op's line as Print() writes it, without indent, block or newline.
std::string PrintOp(const Op& op);

// Parses and validates `text`. On failure fills `*error` and returns nullopt.
std::optional<Program> Parse(std::string_view text, ParseError* error);

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_TEXT_H_
