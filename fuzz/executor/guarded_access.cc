#include "executor/guarded_access.h"

#include <signal.h>

#include <cstring>

namespace svmfuzz {
namespace internal {
thread_local sigjmp_buf* tls_fault_jmp = nullptr;
}

namespace {

void OnFault(int sig, siginfo_t*, void*) {
  if (internal::tls_fault_jmp != nullptr) siglongjmp(*internal::tls_fault_jmp, sig);
  // Not inside a guarded access: die of it, as without the handler (raise
  // also covers a signal someone sent, which returning would not repeat).
  signal(sig, SIG_DFL);
  raise(sig);
}

}  // namespace

void InstallFaultHandlers() {
  struct sigaction sa;
  std::memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = OnFault;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigaction(SIGSEGV, &sa, nullptr);
  sigaction(SIGBUS, &sa, nullptr);
}

}  // namespace svmfuzz
