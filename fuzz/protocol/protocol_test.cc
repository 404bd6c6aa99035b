#include "protocol/protocol.h"

#include <gtest/gtest.h>

#include <string>

namespace svmfuzz::proto {
namespace {

ExecResult SampleResult() {
  ExecResult r;
  r.id = 0x1122334455667788ull;
  r.status = Status::kHung;
  r.detail = -1;
  r.duration_us = 1234;
  r.ops = {{0, 0, kOpStarted | kOpDone, 0, 0, 10},
           {12, 3, kOpStarted | kOpDone | kOpUnsupported, 95, -1, 2},
           {10, 1, kOpStarted | kOpTimedOut, 0, 0, 0}};
  r.mismatches = {{2, 5, 4095, 1023, 0xab, 0xcd}, {Mismatch::kEndOfProcess, 0, 0, 0, 0, 1}};
  r.counters = {1, 2, 3};
  r.watchdog_deltas = {0, 9};
  r.cover = {0xffffffff81000000ull, 0xffffffff81000010ull};
  r.remote_cover = {0xffffffffa0000000ull};
  r.message = "why";
  return r;
}

TEST(Protocol, FrameLayout) {
  // Pinned: pyharness/svmfuzz/protocol_test.py checks the same bytes.
  EXPECT_EQ(EncodeFrame(MsgType::kPing, {0xaa}),
            (std::vector<uint8_t>{'S', 'V', 'M', 'F', 2, 0, 0, 0, 1, 0, 0, 0, 0xaa}));
}

TEST(Protocol, ReadyRoundTrips) {
  Ready in{kVersion, kFeatureKcov | kFeatureFailNth, "6.12.0-svmfuzz"};
  Ready out;
  ASSERT_TRUE(Decode(Encode(in), &out));
  EXPECT_EQ(out, in);
  EXPECT_FALSE(Decode(std::vector<uint8_t>{2, 0, 0}, &out));
}

TEST(Protocol, ExecRequestRoundTripsAndLayout) {
  ExecRequest in{7, kExecCover, 1000, 5000, 4096, {}, {1, 2, 3}};
  std::vector<uint8_t> bytes = Encode(in);
  ASSERT_EQ(bytes.size(), 8u + 4 * 4 + 4 + 3);
  EXPECT_EQ(bytes[0], 7);
  EXPECT_EQ(bytes[8], 1);  // flags
  ExecRequest out;
  ASSERT_TRUE(Decode(bytes, &out));
  EXPECT_EQ(out, in);
  EXPECT_FALSE(Decode(std::vector<uint8_t>(20, 0), &out));
  EXPECT_FALSE(Decode(std::vector<uint8_t>(27, 0), &out));  // no knob count
}

TEST(Protocol, ExecRequestKnobsLayout) {
  // Pinned: pyharness/svmfuzz/protocol_test.py checks the same bytes.
  const ExecRequest in{5, 0, 0, 0, 0, {0, 0, 0, 0, 1, 0, 0, 0}, {0x22}};  // break_livelock
  const std::string hex =
      "05000000000000000000000000000000000000000000000008000000000000000000000000000000"
      "00000000000000000000000000000000000000000100000000000000000000000000000000000000"
      "00000000000000000000000022";
  std::vector<uint8_t> want;
  for (size_t i = 0; i < hex.size(); i += 2)
    want.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  EXPECT_EQ(Encode(in), want);
  ExecRequest out;
  ASSERT_TRUE(Decode(want, &out));
  EXPECT_EQ(out, in);
  // More knobs than struct svmdev_knobs has fields is a bad request.
  ExecRequest too_many = in;
  too_many.knobs.assign(kMaxKnobs + 1, 0);
  EXPECT_FALSE(Decode(Encode(too_many), &out));
}

TEST(Protocol, ExecResultRoundTrips) {
  const ExecResult in = SampleResult();
  ExecResult out;
  ASSERT_TRUE(Decode(Encode(in), &out));
  EXPECT_EQ(out, in);
}

TEST(Protocol, ExecResultLayout) {
  // Pinned: pyharness/svmfuzz/protocol_test.py encodes the same result to the same bytes.
  const std::string hex =
      "887766554433221102000000ffffffffd20400000300000000000300000000000000000000000000"
      "0a0000000c030b005f000000ffffffffffffffff020000000a010500000000000000000000000000"
      "0000000002000000020000000500ff0fff030000abcdffffffff0000000000000000000103000000"
      "01000000000000000200000000000000030000000000000002000000000000000000000009000000"
      "000000000200000000000081ffffffff10000081ffffffff01000000000000a0ffffffff03000000"
      "776879";
  std::vector<uint8_t> want;
  for (size_t i = 0; i < hex.size(); i += 2)
    want.push_back(static_cast<uint8_t>(std::stoi(hex.substr(i, 2), nullptr, 16)));
  EXPECT_EQ(Encode(SampleResult()), want);
}

TEST(Protocol, ExecResultRejectsEveryTruncationAndTrailingBytes) {
  const std::vector<uint8_t> bytes = Encode(SampleResult());
  for (size_t n = 0; n < bytes.size(); n++) {
    ExecResult out;
    EXPECT_FALSE(Decode(std::vector<uint8_t>(bytes.begin(), bytes.begin() + n), &out)) << n;
  }
  std::vector<uint8_t> longer = bytes;
  longer.push_back(0);
  ExecResult out;
  EXPECT_FALSE(Decode(longer, &out));
}

TEST(Protocol, DeviceMessagesLayout) {
  // Pinned: pyharness/svmfuzz/protocol_test.py checks the same bytes.
  const DeviceRequest req{0x01020304, 22, 1, 0x0506, 0x100000001008ull, 2, 0x0a};
  const std::string req_hex =
      "0403020116010605081000000010000002000000000000000a00000000000000";
  const DeviceReply reply{0x01020304, 13, 0xfffffffffffffffeull};
  const std::string reply_hex = "040302010d000000feffffffffffffff";
  for (const auto& [hex, bytes] : {std::pair{req_hex, Encode(req)}, std::pair{reply_hex, Encode(reply)}}) {
    std::string got;
    for (uint8_t b : bytes) {
      static const char* kDigits = "0123456789abcdef";
      got += kDigits[b >> 4];
      got += kDigits[b & 15];
    }
    EXPECT_EQ(got, hex);
  }
  DeviceRequest req_out;
  ASSERT_TRUE(Decode(Encode(req), &req_out));
  EXPECT_EQ(req_out, req);
  DeviceReply reply_out;
  ASSERT_TRUE(Decode(Encode(reply), &reply_out));
  EXPECT_EQ(reply_out, reply);
  std::vector<uint8_t> longer = Encode(reply);
  longer.push_back(0);
  EXPECT_FALSE(Decode(longer, &reply_out));
  EXPECT_FALSE(Decode(std::vector<uint8_t>(31, 0), &req_out));
}

TEST(Protocol, HugeCountsAreRejectedNotAllocated) {
  std::vector<uint8_t> bytes(20, 0);
  bytes.insert(bytes.end(), {0xff, 0xff, 0xff, 0xff});  // ops count
  ExecResult out;
  EXPECT_FALSE(Decode(bytes, &out));
  EXPECT_TRUE(out.ops.empty());
}

TEST(FrameReader, SplitsAStreamFedByteByByte) {
  std::vector<uint8_t> stream = EncodeFrame(MsgType::kPing, {1, 2, 3});
  const std::vector<uint8_t> second = EncodeFrame(MsgType::kPowerOff, {});
  stream.insert(stream.end(), second.begin(), second.end());
  FrameReader r;
  std::vector<Frame> frames;
  for (uint8_t b : stream) {
    r.Feed(&b, 1);
    Frame f;
    while (r.Next(&f) == FrameReader::Status::kFrame) frames.push_back(f);
  }
  ASSERT_EQ(frames.size(), 2u);
  EXPECT_EQ(frames[0].type, MsgType::kPing);
  EXPECT_EQ(frames[0].payload, (std::vector<uint8_t>{1, 2, 3}));
  EXPECT_EQ(frames[1].type, MsgType::kPowerOff);
  EXPECT_TRUE(frames[1].payload.empty());
}

TEST(FrameReader, ResynchronisesAfterGarbage) {
  std::vector<uint8_t> stream = {'x', 'y', 'S', 'V', 'z', 0, 0, 0, 0, 0, 0, 0, 0};
  const std::vector<uint8_t> good = EncodeFrame(MsgType::kPing, {9});
  stream.insert(stream.end(), good.begin(), good.end());
  FrameReader r;
  r.Feed(stream.data(), stream.size());
  Frame f;
  EXPECT_EQ(r.Next(&f), FrameReader::Status::kBad);
  ASSERT_EQ(r.Next(&f), FrameReader::Status::kFrame);
  EXPECT_EQ(f.payload, (std::vector<uint8_t>{9}));
  EXPECT_EQ(r.Next(&f), FrameReader::Status::kNeedMore);
}

TEST(FrameReader, OversizedLengthIsBad) {
  std::vector<uint8_t> stream = EncodeFrame(MsgType::kExec, {});
  stream[8] = 0xff;
  stream[9] = 0xff;
  stream[10] = 0xff;
  stream[11] = 0x7f;
  FrameReader r;
  r.Feed(stream.data(), stream.size());
  Frame f;
  EXPECT_EQ(r.Next(&f), FrameReader::Status::kBad);
  EXPECT_EQ(r.Next(&f), FrameReader::Status::kNeedMore);
}

}  // namespace
}  // namespace svmfuzz::proto
