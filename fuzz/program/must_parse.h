// Tests of the program model: a program from its text form, or a test failure.
#ifndef SVMFUZZ_PROGRAM_MUST_PARSE_H_
#define SVMFUZZ_PROGRAM_MUST_PARSE_H_

#include <gtest/gtest.h>

#include <string_view>

#include "program/text.h"

namespace svmfuzz {

inline Program MustParse(std::string_view text) {
  ParseError error;
  auto p = Parse(text, &error);
  EXPECT_TRUE(p.has_value()) << error.ToString() << "\n" << text;
  return p.value_or(Program{});
}

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_MUST_PARSE_H_
