#include "program/binary.h"

#include <gtest/gtest.h>

#include <random>
#include <string>

#include "program/must_parse.h"
#include "program/text.h"
#include "program/validate.h"

namespace svmfuzz {
namespace {

uint8_t Byte(OpCode code) { return static_cast<uint8_t>(code); }

Program Decoded(std::initializer_list<uint8_t> bytes) {
  return Decode(std::vector<uint8_t>(bytes));
}

TEST(Binary, RoundTrips) {
  const Program p = MustParse(
      "mmap buf=5 pages=1000 kind=file_shared prot=rwx\n"
      "thread_create tid=7\n"
      "@7 verify buf=5 off=999 pages=1 seed=4294967295\n"
      "fork wait=yes {\n"
      "  fork wait=no {\n"
      "    mremap buf=5 pages=3 move=yes\n"
      "  }\n"
      "  @0 dev_access buf=5 page=3 word=511 access=write\n"
      "}\n"
      "fault_storm buf=5 off=1 pages=2 count=4096\n"
      "delay_acks us=1000000\n"
      "open_dev file=3 dev=1 personality=block_shared\n"
      "@7 mirror buf=5 off=0 pages=2 write=yes file=3\n"
      "madvise buf=5 off=0 pages=512 advice=collapse\n"
      "kill_child child=0\n"
      "mrelease child=0\n"
      "drop_acks count=1 file=3\n"
      "oom_kill\n");
  const std::vector<uint8_t> bytes = Encode(p);
  EXPECT_EQ(Decode(bytes), p);
  EXPECT_EQ(Encode(Decode(bytes)), bytes);
}

TEST(Binary, RecordLayout) {
  // mmap: opcode, thread, buf (1 byte), pages (2 bytes LE), kind, prot.
  const Program p = MustParse("mmap buf=2 pages=258 kind=huge prot=r\n");
  EXPECT_EQ(Encode(p), (std::vector<uint8_t>{Byte(OpCode::kMmap), 0, 2, 2, 1, 4, 1}));
  const Program fork = MustParse("fork wait=yes {\n  yield\n}\n");
  EXPECT_EQ(Encode(fork), (std::vector<uint8_t>{Byte(OpCode::kFork), 0, 1, Byte(OpCode::kYield), 0,
                                                kEndOfBlock}));
}

TEST(Binary, DriverFileSharesTheThreadByte) {
  const Program p = MustParse(
      "mmap buf=0 pages=1 kind=anon prot=rw\n"
      "thread_create tid=2\n"
      "open_dev file=3 dev=0 personality=slow\n"
      "@2 map_present buf=0 off=0 pages=1 file=3\n");
  const std::vector<uint8_t> bytes = Encode(p);
  const std::vector<uint8_t> tail(bytes.end() - 7, bytes.end());
  EXPECT_EQ(tail, (std::vector<uint8_t>{Byte(OpCode::kMapPresent), 0x32, 0, 0, 0, 1, 0}));
  const uint8_t mmap_1[] = {Byte(OpCode::kMmap), 0, 0, 1, 0, 0, 3};
  const uint8_t t = Byte(OpCode::kThreadCreate), y = Byte(OpCode::kYield);
  const auto with_threads = [&](std::initializer_list<uint8_t> rest) {
    std::vector<uint8_t> b(std::begin(mmap_1), std::end(mmap_1));
    b.insert(b.end(), {t, 0, 1, t, 0, 2});
    b.insert(b.end(), rest);
    return Print(Decode(b));
  };
  const std::string head =
      "mmap buf=0 pages=1 kind=anon prot=rw\nthread_create tid=1\n"
      "thread_create tid=2\n";
  // A record of before files: its thread byte names file 0, as its ops always used.
  EXPECT_EQ(with_threads({Byte(OpCode::kMapPresent), 1, 0, 0, 0, 1, 0}),
            head + "@1 map_present buf=0 off=0 pages=1\n");
  // File 1 is not open: file 0, on thread 1 (the low nibble).
  EXPECT_EQ(with_threads({Byte(OpCode::kMapPresent), 0x11, 0, 0, 0, 1, 0}),
            head + "@1 map_present buf=0 off=0 pages=1\n");
  // An op without a file reduces the whole byte, as before: {main, 1, 2}[17 % 3].
  EXPECT_EQ(with_threads({y, 0x11}), head + "@2 yield\n");
}

TEST(Binary, ChildrenAreReducedToEarlierForks) {
  const uint8_t f = Byte(OpCode::kFork), e = kEndOfBlock, k = Byte(OpCode::kKillChild);
  EXPECT_EQ(Print(Decoded({k, 0, 0, f, 0, 0, e, f, 0, 0, e, k, 0, 7})),
            "fork wait=no {\n}\nfork wait=no {\n}\nkill_child child=1\n");
}

TEST(Binary, EmptyAndJunkInputsDecodeToEmptyPrograms) {
  EXPECT_EQ(Decoded({}), Program{});
  EXPECT_EQ(Decoded({kEndOfBlock, kEndOfBlock, 200, 254}), Program{});
}

TEST(Binary, UnknownBytesAreSkippedOneAtATime) {
  EXPECT_EQ(Print(Decoded({200, Byte(OpCode::kYield), 0, 201, Byte(OpCode::kYield), 0})),
            "yield\nyield\n");
}

TEST(Binary, ShortRecordAtTheEndIsIgnored) {
  EXPECT_EQ(Print(Decoded({Byte(OpCode::kYield), 0, Byte(OpCode::kMmap), 0, 1, 2})), "yield\n");
}

TEST(Binary, ValuesAreFoldedIntoRange) {
  // pages=0 -> 1 + 0 % 1024, kind=9 -> 9 % 6, prot=8 -> 0.
  EXPECT_EQ(Print(Decoded({Byte(OpCode::kMmap), 0, 40, 0, 0, 9, 8})),
            "mmap buf=8 pages=1 kind=file_shared prot=none\n");
  // off=10 in a 4-page buffer -> 2; pages=7 with 2 left -> 1 + 7 % 2.
  EXPECT_EQ(Print(Decoded(
                {Byte(OpCode::kMmap), 0, 0, 4, 0, 0, 3, Byte(OpCode::kTouch), 0, 0, 10, 0, 7, 0})),
            "mmap buf=0 pages=4 kind=anon prot=rw\ntouch buf=0 off=2 pages=2\n");
}

TEST(Binary, DanglingReferencesAreRemappedOrDropped) {
  // clang-format off
  const std::vector<uint8_t> bytes = {
      Byte(OpCode::kTouch), 0, 0, 0, 0, 1, 0,  // nothing mapped: dropped
      Byte(OpCode::kMmap), 0, 4, 1, 0, 0, 3,
      Byte(OpCode::kTouch), 0, 9, 0, 0, 1, 0,  // 9 unmapped: mapped[9 % 1] = 4
      Byte(OpCode::kMmap), 0, 4, 1, 0, 0, 3,   // 4 taken: free[4 % 15] = 5
      Byte(OpCode::kThreadJoin), 0, 1,         // nothing running: dropped
      Byte(OpCode::kThreadCreate), 0, 0,       // 0 is no tid: free[0 % 7] = 1
      Byte(OpCode::kYield), 9,                 // not running: {main, 1}[9 % 2] = 1
      Byte(OpCode::kThreadCreate), 3, 1,       // main only; 1 runs: free[1 % 6] = 3
  };
  // clang-format on
  EXPECT_EQ(Print(Decode(bytes)),
            "mmap buf=4 pages=1 kind=anon prot=rw\n"
            "touch buf=4 off=0 pages=1\n"
            "mmap buf=5 pages=1 kind=anon prot=rw\n"
            "thread_create tid=1\n"
            "@1 yield\n"
            "thread_create tid=3\n");
}

TEST(Binary, DeepForksAreFlattenedAndStrayEndsIgnored) {
  const uint8_t f = Byte(OpCode::kFork), y = Byte(OpCode::kYield), e = kEndOfBlock;
  EXPECT_EQ(Print(Decoded({e, f, 0, 1, f, 0, 0, f, 0, 1, y, 0, e, y, 0, e, e, y, 0, e})),
            "fork wait=yes {\n"
            "  fork wait=no {\n"
            "    yield\n"
            "    yield\n"
            "  }\n"
            "}\n"
            "yield\n");
  // An unterminated block ends with the input.
  EXPECT_EQ(Print(Decoded({f, 0, 1, y, 0})), "fork wait=yes {\n  yield\n}\n");
}

TEST(Binary, OpCountIsBounded) {
  std::vector<uint8_t> bytes;
  for (size_t i = 0; i < 2 * kMaxOps; i++) {
    bytes.push_back(Byte(OpCode::kYield));
    bytes.push_back(0);
  }
  EXPECT_EQ(Decode(bytes).ops.size(), kMaxOps);
}

// Random inputs, half of them shaped like records so that programs get long
// and use every op: each must decode to a valid program with both forms
// round-tripping.
TEST(Binary, EveryByteStringDecodesToAValidProgram) {
  std::mt19937_64 rng(0x5eed);
  size_t ops = 0, forks = 0, threaded = 0, filed = 0, kills = 0;
  for (int iter = 0; iter < 20000; iter++) {
    std::vector<uint8_t> bytes(rng() % 600);
    const bool shaped = iter % 2;
    for (size_t i = 0; i < bytes.size(); i++) {
      const uint64_t r = rng();
      bytes[i] = static_cast<uint8_t>(r);
      if (shaped && r % 5 == 0) bytes[i] = static_cast<uint8_t>((r >> 8) % (kNumOps + 1));
      if (shaped && r % 23 == 0) bytes[i] = kEndOfBlock;
    }
    const Program p = Decode(bytes);
    const std::string text = Print(p);
    SCOPED_TRACE(text);
    const auto invalid = Validate(p);
    ASSERT_FALSE(invalid.has_value()) << invalid->message;
    ParseError error;
    const auto parsed = Parse(text, &error);
    ASSERT_TRUE(parsed.has_value()) << error.ToString();
    ASSERT_EQ(*parsed, p);
    ASSERT_EQ(Decode(Encode(p)), p);
    ops += CountOps(p.ops);
    for (const Op& op : p.ops) {
      forks += op.code == OpCode::kFork;
      threaded += op.thread != 0;
      filed += op.file != 0;
      kills += op.code == OpCode::kKillChild || op.code == OpCode::kMrelease;
    }
  }
  EXPECT_GT(ops, 100000u);
  EXPECT_GT(forks, 1000u);
  EXPECT_GT(threaded, 1000u);
  EXPECT_GT(filed, 1000u);
  EXPECT_GT(kills, 1000u);
}

}  // namespace
}  // namespace svmfuzz
