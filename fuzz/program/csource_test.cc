#include "program/csource.h"

#include <gtest/gtest.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <vector>

#include "program/must_parse.h"
#include "program/text.h"

namespace svmfuzz {
namespace {

namespace fs = std::filesystem;

std::vector<fs::path> CorpusPrograms() {
  std::vector<fs::path> out;
  for (const auto& e : fs::directory_iterator(SVMFUZZ_CORPUS_DIR))
    if (e.path().extension() == ".svmp") out.push_back(e.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::string ReadAll(const fs::path& path) {
  std::ifstream in(path);
  std::stringstream s;
  s << in.rdbuf();
  return s.str();
}

// Every op, fork bodies included, with its index in program order.
void Flatten(const std::vector<Op>& ops, std::vector<const Op*>* out) {
  for (const Op& op : ops) {
    out->push_back(&op);
    Flatten(op.body, out);
  }
}

bool HaveStaticGcc() {
  return std::system("command -v gcc >/dev/null 2>&1") == 0 &&
         fs::exists("/usr/lib/x86_64-linux-gnu/libc.a");
}

// gcc's output, or "" when the source built.
std::string Compile(const std::string& source, const fs::path& dir, const std::string& name) {
  const fs::path c = dir / (name + ".c"), bin = dir / name, log = dir / (name + ".log");
  std::ofstream(c) << source;
  const std::string cmd = "gcc -static -pthread -O1 -Wall -Werror -o " + bin.string() + " " +
                          c.string() + " >" + log.string() + " 2>&1";
  if (std::system(cmd.c_str()) == 0 && fs::exists(bin)) return "";
  const std::string out = ReadAll(log);
  return out.empty() ? "gcc failed" : out;
}

class CSourceCorpus : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() / ("csource_test." + std::to_string(getpid()));
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  fs::path dir_;
};

TEST_F(CSourceCorpus, EveryProgramBuildsAndShowsEachOpAboveItsCode) {
  if (!HaveStaticGcc()) GTEST_SKIP() << "no gcc with a static libc";
  const std::vector<fs::path> programs = CorpusPrograms();
  ASSERT_FALSE(programs.empty());
  int hmm_built = 0;
  for (const fs::path& path : programs) {
    SCOPED_TRACE(path.filename().string());
    const Program program = MustParse(ReadAll(path));
    std::string error;
    const auto source = GenerateC(program, {}, &error);
    ASSERT_TRUE(source.has_value()) << error;
    std::vector<const Op*> ops;
    Flatten(program.ops, &ops);
    for (size_t i = 0; i < ops.size(); i++) {
      const std::string comment = "/* " + std::to_string(i) + ": " + PrintOp(*ops[i]) + " */\n";
      EXPECT_NE(source->find(comment), std::string::npos) << comment;
    }
    EXPECT_EQ(Compile(*source, dir_, path.stem().string()), "");
    CSourceOptions hmm;
    hmm.target = CTarget::kTestHmm;
    if (const auto h = GenerateC(program, hmm, &error)) {
      EXPECT_NE(h->find("HMM_DMIRROR_"), std::string::npos);
      EXPECT_EQ(Compile(*h, dir_, path.stem().string() + "-test_hmm"), "");
      hmm_built++;
    } else {
      EXPECT_NE(error.find("test_hmm cannot express it"), std::string::npos) << error;
    }
  }
  EXPECT_GT(hmm_built, 0);
}

TEST(CSource, KnobsComeFromTheDriversHeaderAndGoIntoTheSource) {
  const std::vector<std::string>& names = KnobNames();
  ASSERT_EQ(names.size(), 8u);
  EXPECT_EQ(names.front(), "fail_vram_alloc");
  EXPECT_EQ(names[6], "break_imbalance");
  EXPECT_EQ(names.back(), "break_fence_wait");
  std::vector<uint64_t> knobs;
  std::string error;
  ASSERT_TRUE(ParseKnob("break_imbalance=1", &knobs, &error)) << error;
  EXPECT_EQ(knobs, (std::vector<uint64_t>{0, 0, 0, 0, 0, 0, 1, 0}));
  for (const char* bad : {"break_everything=1", "break_imbalance", "break_imbalance=x",
                          "break_imbalance=-1", "break_imbalance="}) {
    EXPECT_FALSE(ParseKnob(bad, &knobs, &error)) << bad;
    EXPECT_NE(error.find("want name=number"), std::string::npos) << error;
  }
  CSourceOptions options;
  options.knobs = knobs;
  options.repeat = 5;
  const auto source = GenerateC(MustParse("mmap buf=0 pages=1 kind=anon prot=rw\n"), options,
                                &error);
  ASSERT_TRUE(source.has_value()) << error;
  EXPECT_NE(source->find("initial_knobs[] = {0, 0, 0, 0, 0, 0, 1, 0};"), std::string::npos);
  EXPECT_NE(source->find("#define HAVE_KNOBS 1"), std::string::npos);
  EXPECT_NE(source->find("#define DEFAULT_RUNS 5L"), std::string::npos);
  EXPECT_NE(source->find("// Driver knobs set on every file once it is bound (SVMDEV_IOC_KNOBS): "
                         "break_imbalance=1"),
            std::string::npos);
  // The markers of the run-time part are gone.
  EXPECT_EQ(source->find("svmprog: "), std::string::npos);
}

TEST(CSource, TestHmmNamesTheFirstOpItCannotExpress) {
  const Program program = MustParse(
      "mmap buf=0 pages=4 kind=anon prot=rw\n"
      "fork wait=yes {\n"
      "  migrate_to_dev buf=0 off=0 pages=4\n"
      "  map_present buf=0 off=0 pages=4\n"
      "}\n"
      "dev_atomic buf=0 off=0 pages=1\n");
  CSourceOptions options;
  options.target = CTarget::kTestHmm;
  std::string error;
  EXPECT_FALSE(GenerateC(program, options, &error).has_value());
  EXPECT_EQ(error,
            "op 3 (map_present buf=0 off=0 pages=4): test_hmm cannot express it: test_hmm has no "
            "mirror of what the CPU maps without faulting");
  EXPECT_FALSE(GenerateC(MustParse("open_dev file=1 dev=0 personality=slow\n"), options, &error));
  EXPECT_NE(error.find("op 0 (open_dev file=1 dev=0 personality=slow)"), std::string::npos);
  EXPECT_FALSE(GenerateC(MustParse("drop_acks count=1\n"), options, &error));
  EXPECT_NE(error.find("a device action"), std::string::npos) << error;
  options.knobs = {0, 0, 0, 0, 0, 0, 1, 0};
  EXPECT_FALSE(GenerateC(MustParse("yield\n"), options, &error));
  EXPECT_NE(error.find("test_hmm has no driver knobs"), std::string::npos) << error;
}

TEST(CSource, DeviceActionsAreCommentsAndAnArmedFailNthWrapsTheNextOp) {
  std::string error;
  const auto source = GenerateC(MustParse("mmap buf=0 pages=4 kind=anon prot=rw\n"
                                          "delay_acks us=100\n"
                                          "fail_nth nth=3\n"
                                          "migrate_to_dev buf=0 off=0 pages=4\n"),
                                {}, &error);
  ASSERT_TRUE(source.has_value()) << error;
  EXPECT_NE(source->find("/* NOT REPRODUCED: a device action"), std::string::npos);
  EXPECT_NE(source->find("done(1, host_only(1));"), std::string::npos);
  EXPECT_NE(source->find("fail_nth_arm(3);\n\t\terr = svm_range(0, 0, 0, 4, SVMDEV_IOC_MIGRATE, 0);"
                         "\n\t\tfail_nth_disarm();\n\t\tdone(3, err);"),
            std::string::npos);
}

}  // namespace
}  // namespace svmfuzz
