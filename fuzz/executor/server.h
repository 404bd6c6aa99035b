// The executor's request loop: protocol frames (docs/executor-protocol.md) in, frames out.
#ifndef SVMFUZZ_EXECUTOR_SERVER_H_
#define SVMFUZZ_EXECUTOR_SERVER_H_

#include <string>

#include "executor/supervisor.h"

namespace svmfuzz {

// Sends READY, then answers requests on `fd` until the host asks to power
// off (returns true, after BYE) or the stream fails (false). A virtio port
// reads end of stream while no host is connected: with `wait_for_host` that
// means waiting, else it is the end.
bool Serve(int fd, Supervisor* supervisor, const std::string& kernel, bool wait_for_host);

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_SERVER_H_
