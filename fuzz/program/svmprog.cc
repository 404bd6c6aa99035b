// svmprog: converts programs between their text and binary forms.
//
//   svmprog ops                      list the ops and their arguments
//   svmprog fmt FILE.svmp            print the canonical text
//   svmprog decode FILE              print the program a fuzzer input decodes to
//   svmprog encode -o DIR FILE.svmp...  write DIR/NAME.bin for each text program
//   svmprog prog2c [--target svmdev|test_hmm] [--knob NAME=VALUE]... [--repeat N]
//                  [--timeout-ms MS] [-o FILE.c] PROGRAM
//                                    a standalone C reproducer of PROGRAM (text if
//                                    it ends in .svmp, else a fuzzer input)
#include <filesystem>
#include <fstream>
#include <iostream>
#include <iterator>
#include <optional>
#include <string>

#include "program/binary.h"
#include "program/csource.h"
#include "program/text.h"

namespace {

bool ReadFile(const std::string& path, std::string* out) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return false;
  out->assign(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
  return true;
}

bool ParseFile(const std::string& path, svmfuzz::Program* program) {
  std::string text;
  if (!ReadFile(path, &text)) {
    std::cerr << path << ": cannot read\n";
    return false;
  }
  svmfuzz::ParseError error;
  auto parsed = svmfuzz::Parse(text, &error);
  if (!parsed) {
    std::cerr << path << ":" << error.ToString() << "\n";
    return false;
  }
  *program = std::move(*parsed);
  return true;
}

std::string Stem(const std::string& path) {
  const size_t slash = path.find_last_of('/');
  std::string name = slash == std::string::npos ? path : path.substr(slash + 1);
  const size_t dot = name.find_last_of('.');
  return dot == std::string::npos ? name : name.substr(0, dot);
}

void ListOps() {
  for (size_t i = 0; i < svmfuzz::kNumOps; i++) {
    const svmfuzz::OpDesc& d = svmfuzz::Describe(static_cast<svmfuzz::OpCode>(i));
    std::cout << d.name;
    for (int j = 0; j < d.num_args; j++) {
      const svmfuzz::ArgDesc& a = d.args[j];
      std::cout << " " << a.name << "=";
      if (a.kind == svmfuzz::ArgKind::kEnum) {
        for (uint64_t v = 0; v <= a.max; v++) std::cout << (v ? "|" : "") << a.values[v];
      } else {
        std::cout << "[" << a.min << "," << a.max << "]";
      }
    }
    std::cout << (d.has_body ? " { ... }" : "") << "\n    " << d.doc << "\n";
  }
}

int Usage() {
  std::cerr << "usage: svmprog ops\n"
               "       svmprog fmt FILE.svmp\n"
               "       svmprog decode FILE\n"
               "       svmprog encode -o DIR FILE.svmp...\n"
               "       svmprog prog2c [--target svmdev|test_hmm] [--knob NAME=VALUE]... "
               "[--repeat N] [--timeout-ms MS] [-o FILE.c] PROGRAM\n";
  return 2;
}

bool ParseCount(const std::string& s, uint64_t* out) {
  if (s.empty() || s.find_first_not_of("0123456789") != std::string::npos) return false;
  *out = std::stoull(s);
  return true;
}

int Prog2c(int argc, char** argv) {
  svmfuzz::CSourceOptions options;
  std::string out_path, path;
  for (int i = 2; i < argc; i++) {
    const std::string arg = argv[i];
    const bool has_value = i + 1 < argc;
    if (arg == "--target" && has_value) {
      const std::string t = argv[++i];
      if (t != "svmdev" && t != "test_hmm") {
        std::cerr << "svmprog prog2c: --target is svmdev or test_hmm, not '" << t << "'\n";
        return 2;
      }
      options.target = t == "svmdev" ? svmfuzz::CTarget::kSvmdev : svmfuzz::CTarget::kTestHmm;
    } else if (arg == "--knob" && has_value) {
      std::string error;
      if (!svmfuzz::ParseKnob(argv[++i], &options.knobs, &error)) {
        std::cerr << "svmprog prog2c: " << error << "\n";
        return 2;
      }
    } else if ((arg == "--repeat" || arg == "--timeout-ms") && has_value) {
      uint64_t v;
      if (!ParseCount(argv[++i], &v)) {
        std::cerr << "svmprog prog2c: " << arg << " wants a number, not '" << argv[i] << "'\n";
        return 2;
      }
      (arg == "--repeat" ? options.repeat : options.program_timeout_ms) = v;
    } else if (arg == "-o" && has_value) {
      out_path = argv[++i];
    } else if (path.empty() && !arg.empty() && arg[0] != '-') {
      path = arg;
    } else {
      return Usage();
    }
  }
  if (path.empty()) return Usage();
  svmfuzz::Program program;
  const bool text = path.size() > 5 && path.compare(path.size() - 5, 5, ".svmp") == 0;
  if (text) {
    if (!ParseFile(path, &program)) return 1;
  } else {
    std::string bytes;
    if (!ReadFile(path, &bytes)) {
      std::cerr << path << ": cannot read\n";
      return 1;
    }
    program = svmfuzz::Decode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }
  if (program.ops.empty()) {
    std::cerr << path << ": " << (text ? "the program has no op" : "it decodes to no op")
              << ": nothing to reproduce\n";
    return 1;
  }
  std::string error;
  const std::optional<std::string> source = svmfuzz::GenerateC(program, options, &error);
  if (!source) {
    std::cerr << path << ": " << error << "\n";
    return 1;
  }
  if (out_path.empty()) {
    std::cout << *source;
    return 0;
  }
  std::ofstream f(out_path, std::ios::binary);
  f << *source;
  f.close();
  if (!f) {
    std::cerr << out_path << ": cannot write\n";
    return 1;
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  const std::string cmd = argv[1];
  if (cmd == "ops" && argc == 2) {
    ListOps();
    return 0;
  }
  if (cmd == "fmt" && argc == 3) {
    svmfuzz::Program program;
    if (!ParseFile(argv[2], &program)) return 1;
    std::cout << svmfuzz::Print(program);
    return 0;
  }
  if (cmd == "decode" && argc == 3) {
    std::string bytes;
    if (!ReadFile(argv[2], &bytes)) {
      std::cerr << argv[2] << ": cannot read\n";
      return 1;
    }
    std::cout << svmfuzz::Print(
        svmfuzz::Decode(reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size()));
    return 0;
  }
  if (cmd == "prog2c") return Prog2c(argc, argv);
  if (cmd == "encode" && argc >= 5 && std::string(argv[2]) == "-o") {
    const std::string dir = argv[3];
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    for (int i = 4; i < argc; i++) {
      svmfuzz::Program program;
      if (!ParseFile(argv[i], &program)) return 1;
      const std::vector<uint8_t> bytes = svmfuzz::Encode(program);
      const std::string out = dir + "/" + Stem(argv[i]) + ".bin";
      std::ofstream f(out, std::ios::binary);
      f.write(reinterpret_cast<const char*>(bytes.data()), bytes.size());
      if (!f) {
        std::cerr << out << ": cannot write\n";
        return 1;
      }
    }
    return 0;
  }
  return Usage();
}
