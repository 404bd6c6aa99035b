#include "program/must_parse.h"
#include "program/text.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>

#include "program/validate.h"

namespace svmfuzz {
namespace {

constexpr const char* kCanonical =
    "mmap buf=0 pages=16 kind=anon prot=rw\n"
    "mmap buf=3 pages=512 kind=hugetlb prot=r\n"
    "thread_create tid=1\n"
    "@1 write buf=0 off=0 pages=4 seed=3735928559\n"
    "migrate_to_dev buf=0 off=0 pages=16\n"
    "fork wait=yes {\n"
    "  touch buf=0 off=2 pages=3\n"
    "  fork wait=no {\n"
    "    dev_access buf=3 page=511 word=7 access=atomic\n"
    "  }\n"
    "  oom_kill\n"
    "}\n"
    "fork wait=no {\n"
    "}\n"
    "thread_join tid=1\n"
    "failslab percent=10 times=5\n"
    "yield\n";

TEST(Text, CanonicalTextRoundTrips) {
  const Program p = MustParse(kCanonical);
  EXPECT_EQ(p.ops.size(), 10u);
  EXPECT_EQ(p.ops[3].thread, 1u);
  EXPECT_EQ(p.ops[3].arg("seed"), 0xdeadbeefu);
  EXPECT_EQ(Print(p), kCanonical);
  EXPECT_EQ(MustParse(Print(p)), p);
}

TEST(Text, AcceptsFreeLayoutAndPrintsItCanonically) {
  const char* messy =
      "# set up\n"
      "\n"
      "  mmap prot=rw kind=anon   buf=0x0\tpages=0x10   # sixteen pages\n"
      "mmap buf=3 pages=512 kind=hugetlb prot=r\n"
      "thread_create tid=1\n"
      "@1   write seed=0xDEADBEEF buf=0 off=0 pages=4\n"
      "migrate_to_dev buf=0 off=0 pages=16\r\n"
      "fork wait=yes{ # child\n"
      "touch buf=0 off=2 pages=3\n"
      "        fork wait=no {\n"
      "dev_access access=atomic word=7 page=511 buf=3\n"
      "}\n"
      "  oom_kill\n"
      "} # end of child\n"
      "fork wait=no {\n"
      "}\n"
      "thread_join tid=1\n"
      "failslab times=5 percent=10\n"
      "yield";
  EXPECT_EQ(Print(MustParse(messy)), kCanonical);
}

TEST(Text, DriverFileIsWrittenAfterTheArgumentsUnlessItIs0) {
  const Program p = MustParse(
      "mmap buf=0 pages=2 kind=anon prot=rw\n"
      "open_dev personality=refuse_nonblock dev=1 file=2\n"
      "mirror file=2 buf=0 off=0 pages=2 write=no\n"
      "dev_read buf=0 off=0 pages=1 file=0\n");
  EXPECT_EQ(p.ops[2].file, 2u);
  EXPECT_EQ(Print(p),
            "mmap buf=0 pages=2 kind=anon prot=rw\n"
            "open_dev file=2 dev=1 personality=refuse_nonblock\n"
            "mirror buf=0 off=0 pages=2 write=no file=2\n"
            "dev_read buf=0 off=0 pages=1\n");
}

TEST(Text, EmptyProgram) {
  EXPECT_EQ(MustParse("# nothing\n\n"), Program{});
  EXPECT_EQ(Print(Program{}), "");
}

struct Malformed {
  const char* text;
  int line;
  int col;
  const char* message;
};

void PrintTo(const Malformed& m, std::ostream* os) { *os << ::testing::PrintToString(m.text); }

class TextErrors : public ::testing::TestWithParam<Malformed> {};

TEST_P(TextErrors, NameLineColumnAndWhatWasExpected) {
  const Malformed& m = GetParam();
  ParseError error;
  EXPECT_FALSE(Parse(m.text, &error).has_value());
  EXPECT_EQ(error.line, m.line) << error.ToString();
  EXPECT_EQ(error.col, m.col) << error.ToString();
  EXPECT_NE(error.message.find(m.message), std::string::npos) << error.ToString();
}

INSTANTIATE_TEST_SUITE_P(
    Program, TextErrors,
    ::testing::Values(
        Malformed{"mmap buf=0 pages=16 kind=anon\n", 1, 30, "expected argument 'prot' of mmap"},
        Malformed{"yield\nfrob x=1\n", 2, 1, "unknown op 'frob'"},
        Malformed{"prefetch buf=0 off=0 pages=1\n", 1, 1, "is now 'map_present'"},
        Malformed{"mmap buf=0 pages=0 kind=anon prot=rw", 1, 18, "pages=0 is not in [1, 1024]"},
        Malformed{"mmap buf=0 pages=16 kind=anonymous prot=rw", 1, 26,
                  "kind=anonymous: expected one of anon, shared, file, file_shared, huge, hugetlb"},
        Malformed{"mmap buf=0 pages=16 kind=anon prot=rw color=red", 1, 39,
                  "mmap has no argument 'color'; it takes buf, pages, kind, prot"},
        Malformed{"yield now=1", 1, 7, "yield has no argument 'now'; it takes none"},
        Malformed{"release now=1", 1, 9, "release has no argument 'now'; it takes optional file"},
        Malformed{"release file=1 file=1", 1, 16, "argument 'file' given twice"},
        Malformed{"release file=4", 1, 14, "file=4 is not in [0, 3]"},
        Malformed{"yield file=1", 1, 7, "yield has no argument 'file'"},
        Malformed{"release file=1", 1, 1, "file 1 is not open"},
        Malformed{"kill_child child=0", 1, 18, "child 0 names no earlier fork"},
        Malformed{"sleep us=5 us=6", 1, 12, "argument 'us' given twice"},
        Malformed{"mmap buf 0", 1, 9, "expected '=' after 'buf', found ' '"},
        Malformed{"mmap buf=", 1, 10, "expected a value for 'buf', found the end of the text"},
        Malformed{"mmap buf=x pages=1 kind=anon prot=r", 1, 10, "expected a number for 'buf'"},
        Malformed{"sleep us=99999999999999999999999", 1, 10, "expected a number for 'us'"},
        Malformed{"mmap,buf=0", 1, 5, "expected a space, found ','"},
        Malformed{"= yield", 1, 1, "expected an op name, found '='"},
        Malformed{"@x yield", 1, 2, "expected a thread id after '@'"},
        Malformed{"@1\n", 1, 3, "expected a space after the thread id"},
        Malformed{"fork wait=yes {\n  yield\n", 3, 1,
                  "expected '}' to close the block opened at 1:15"},
        Malformed{"yield\n}\n", 2, 1, "unexpected '}' outside a block"},
        Malformed{"yield {\n}\n", 1, 7, "yield takes no block"},
        Malformed{"fork wait=yes\nyield\n", 1, 14, "expected '{' to open the fork block"},
        Malformed{"fork wait=yes { yield }\n", 1, 17, "expected the end of the line, found 'y'"},
        Malformed{"yield }\n", 1, 7, "expected an argument name, found '}'"},
        // Syntax is fine; the validator's complaint points at the argument or op.
        Malformed{"touch buf=0 off=0 pages=1", 1, 11, "buffer 0 is not mapped"},
        Malformed{"# header\nmmap buf=0 pages=16 kind=anon prot=rw\nmunmap buf=0 off=4 pages=13\n",
                  3, 26, "13 pages from offset 4 do not fit buffer 0 of 16 pages"},
        Malformed{"@1 yield", 1, 1, "thread 1 is not running"},
        Malformed{"thread_create tid=1\n@1 thread_join tid=1\n", 2, 1,
                  "thread_join runs on the main thread only"},
        Malformed{"fork wait=no {\n  fork wait=no {\n    fork wait=no {\n    }\n  }\n}\n", 3, 5,
                  "forks nest deeper than 2"}));

std::string ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(Corpus, ExampleProgramsParseValidateAndRoundTrip) {
  int files = 0;
  for (const auto& entry : std::filesystem::directory_iterator(SVMFUZZ_CORPUS_DIR)) {
    if (entry.path().extension() != ".svmp") continue;
    SCOPED_TRACE(entry.path().filename().string());
    files++;
    const Program p = MustParse(ReadFile(entry.path()));
    EXPECT_FALSE(p.ops.empty());
    EXPECT_FALSE(Validate(p).has_value());
    EXPECT_EQ(MustParse(Print(p)), p);
  }
  EXPECT_GE(files, 5);
}

}  // namespace
}  // namespace svmfuzz
