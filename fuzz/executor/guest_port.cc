#include "guest_port.h"

#include <dirent.h>

#include <fstream>

namespace svmfuzz {

std::string FindVirtioPort(const std::string& sysfs_root, const std::string& name) {
  const std::string dir = sysfs_root + "/class/virtio-ports";
  DIR* d = opendir(dir.c_str());
  if (d == nullptr) return "";
  std::string found;
  while (dirent* e = readdir(d)) {
    if (e->d_name[0] == '.') continue;
    std::ifstream f(dir + "/" + e->d_name + "/name");
    std::string port_name;
    if (std::getline(f, port_name) && port_name == name) {
      found = std::string("/dev/") + e->d_name;
      break;
    }
  }
  closedir(d);
  return found;
}

}  // namespace svmfuzz
