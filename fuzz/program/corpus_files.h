// The example programs (corpus/programs/*.svmp) for tests and benchmarks.
#ifndef SVMFUZZ_PROGRAM_CORPUS_FILES_H_
#define SVMFUZZ_PROGRAM_CORPUS_FILES_H_

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "program/text.h"

namespace svmfuzz {

// Every .svmp file of `dir` that parses; `*errors`, if given, gets
// "file: line:col: message" for each one that does not.
inline std::vector<Program> ReadCorpus(const std::filesystem::path& dir,
                                       std::vector<std::string>* errors = nullptr) {
  std::vector<Program> programs;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) {
    if (entry.path().extension() != ".svmp") continue;
    std::ifstream in(entry.path(), std::ios::binary);
    const std::string text((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    ParseError error;
    if (auto p = Parse(text, &error)) {
      programs.push_back(std::move(*p));
    } else if (errors) {
      errors->push_back(entry.path().filename().string() + ": " + error.ToString());
    }
  }
  return programs;
}

}  // namespace svmfuzz

#endif  // SVMFUZZ_PROGRAM_CORPUS_FILES_H_
