// The binary form of programs, for fuzzers: every byte string is a program.
//
// A program is a run of records. A record is an opcode byte (the OpCode value),
// a thread byte (for an op that uses a driver file, the thread in its low 4
// bits and the file in the 2 above), then each argument in table order,
// little-endian, in the fewest of 1, 2, 4 or 8 bytes that hold the argument's
// maximum. A fork's record is followed by its child's records and an end byte
// (kEndOfBlock).
//
// Decoding never rejects. Each value is reduced into what is valid at that
// point of the program: an in-range value is kept as is, anything else is
// folded into range modulo its size, and a reference to a buffer or thread
// that does not exist picks one that does (a driver file that is not open is
// file 0); an op with nothing valid to refer to is dropped. Unknown opcode
// bytes are skipped one byte at a time, a short record at the end is ignored,
// an unmatched end byte is ignored, forks nested too deep lose their fork
// (their ops stay in the parent), and decoding stops after kMaxOps ops.
// Because valid values are kept, Decode(Encode(p)) == p for every valid p, and
// small mutations of the bytes make small changes to the program.
#ifndef SVMFUZZ_PROGRAM_BINARY_H_
#define SVMFUZZ_PROGRAM_BINARY_H_

#include <cstddef>
#include <cstdint>
#include <vector>

#include "program/program.h"

namespace svmfuzz {

inline constexpr uint8_t kEndOfBlock = 0xff;

// Bytes the argument takes in a record.
size_t ArgWidth(const ArgDesc& arg);

// `program` must be valid, or at least hold known opcodes, threads below
// kMaxThreads, files below kMaxFiles (0 for ops that use none) and 0 in the
// unused argument slots: Decode() then reduces what is not valid, which is
// how the mutator repairs a program a change broke.
std::vector<uint8_t> Encode(const Program& program);

// Always returns a program that Validate() accepts.
Program Decode(const uint8_t* data, size_t size);
inline Program Decode(const std::vector<uint8_t>& bytes) {
  return Decode(bytes.data(), bytes.size());
}

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_BINARY_H_
