// Small pieces of host I/O the runner's parts share: deadlines, waits on a
// descriptor, whole writes, unix socket connections.
#ifndef SVMFUZZ_RUNNER_IO_H_
#define SVMFUZZ_RUNNER_IO_H_

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <string>

namespace svmfuzz {

using Clock = std::chrono::steady_clock;
// Where the runner's parts report what they did (one line, no newline).
using Log = std::function<void(const std::string&)>;

Clock::time_point After(double seconds);
// Seconds until `deadline`; negative once it has passed.
double SecondsLeft(Clock::time_point deadline);
double SecondsSince(Clock::time_point start);

// Waits until `fd` has input (or its peer hung up), at most until `deadline`
// and at most `max_ms` (negative: no such bound). False when the time is up.
bool WaitReadable(int fd, Clock::time_point deadline, int max_ms = -1);
// Writes all of it; false on an error, the peer gone included (no SIGPIPE).
bool WriteAll(int fd, const uint8_t* data, size_t size);
// A connected unix stream socket (close-on-exec), or -1 with errno set.
int ConnectUnix(const std::string& path);

// The whole file; empty if it cannot be read.
std::string ReadFile(const std::string& path);
// Without the whitespace around it.
std::string Trim(const std::string& s);
// `s` as a JSON string literal, quotes included.
std::string JsonString(const std::string& s);

}  // namespace svmfuzz

#endif  // SVMFUZZ_RUNNER_IO_H_
