// libFuzzer target for the program codecs: any input decodes to a valid
// program whose text and binary forms both round-trip, and the text parser
// survives the same bytes read as text.
#include <cstdio>
#include <cstdlib>

#include "program/binary.h"
#include "program/text.h"
#include "program/validate.h"

namespace {

[[noreturn]] void Die(const char* what, const std::string& detail) {
  fprintf(stderr, "program_fuzz: %s\n%s\n", what, detail.c_str());
  abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const svmfuzz::Program program = svmfuzz::Decode(data, size);
  const std::string text = svmfuzz::Print(program);
  if (auto e = svmfuzz::Validate(program))
    Die("decoded program is invalid", e->message + "\n" + text);

  svmfuzz::ParseError error;
  const auto parsed = svmfuzz::Parse(text, &error);
  if (!parsed) Die("printed program does not parse", error.ToString() + "\n" + text);
  if (*parsed != program) Die("text round trip changed the program", text);
  if (svmfuzz::Print(*parsed) != text) Die("printing is not canonical", text);

  if (svmfuzz::Decode(svmfuzz::Encode(program)) != program)
    Die("binary round trip changed the program", text);

  const std::string_view raw(reinterpret_cast<const char*>(data), size);
  if (const auto p = svmfuzz::Parse(raw, &error)) {
    if (auto e = svmfuzz::Validate(*p)) Die("parsed program is invalid", e->message);
    const auto again = svmfuzz::Parse(svmfuzz::Print(*p), &error);
    if (!again || *again != *p)
      Die("text round trip of parsed input changed it", svmfuzz::Print(*p));
  }
  return 0;
}
