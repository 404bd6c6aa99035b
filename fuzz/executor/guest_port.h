// Finding the executor's virtio-serial port in a guest that runs no udev.
#ifndef SVMFUZZ_EXECUTOR_GUEST_PORT_H_
#define SVMFUZZ_EXECUTOR_GUEST_PORT_H_

#include <string>

namespace svmfuzz {

// Returns the /dev path of the virtio port called `name`, looking it up under
// `sysfs_root`/class/virtio-ports/*/name, or "" if there is none.
std::string FindVirtioPort(const std::string& sysfs_root, const std::string& name);

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_GUEST_PORT_H_
