// CPU accesses to program buffers that may fault: a program is free to touch
// pages it made PROT_NONE or grew past a shared object's end. Such a fault
// ends the access with the signal as its result; a fault anywhere else still
// kills the process, so real crashes stay crashes.
#ifndef SVMFUZZ_EXECUTOR_GUARDED_ACCESS_H_
#define SVMFUZZ_EXECUTOR_GUARDED_ACCESS_H_

#include <setjmp.h>

namespace svmfuzz {

// Installs the SIGSEGV/SIGBUS handler for the calling process (forks inherit it).
void InstallFaultHandlers();

namespace internal {
extern thread_local sigjmp_buf* tls_fault_jmp;
}

// Runs fn(); returns 0 if it completed, else the signal that cut it short.
// fn must not hold locks or allocate: it may be abandoned half way.
template <typename F>
int Guarded(F&& fn) {
  sigjmp_buf jmp;
  sigjmp_buf* const outer = internal::tls_fault_jmp;
  if (const int sig = sigsetjmp(jmp, 1); sig != 0) {
    internal::tls_fault_jmp = outer;
    return sig;
  }
  internal::tls_fault_jmp = &jmp;
  fn();
  internal::tls_fault_jmp = outer;
  return 0;
}

}  // namespace svmfuzz

#endif  // SVMFUZZ_EXECUTOR_GUARDED_ACCESS_H_
