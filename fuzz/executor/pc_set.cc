#include "executor/pc_set.h"

#include <sys/mman.h>

#include <cstring>

namespace svmfuzz {
namespace {

size_t Bytes(size_t slots) { return slots * sizeof(uint64_t) + slots / 2 * sizeof(uint32_t); }

size_t Hash(uint64_t pc) { return static_cast<size_t>((pc * 0x9e3779b97f4a7c15ull) >> 32); }

}  // namespace

PcSet::~PcSet() {
  if (table_ != nullptr) munmap(table_, Bytes(slots()));
}

bool PcSet::Resize(size_t slots) {
  void* p = mmap(nullptr, Bytes(slots), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) return false;
  madvise(p, Bytes(slots), MADV_DONTFORK);
  uint64_t* old_table = table_;
  uint32_t* old_used = used_;
  const size_t old_slots = table_ != nullptr ? this->slots() : 0;
  const size_t old_count = count_;
  table_ = static_cast<uint64_t*>(p);
  used_ = reinterpret_cast<uint32_t*>(table_ + slots);
  mask_ = slots - 1;
  count_ = 0;
  for (size_t i = 0; i < old_count; i++) Insert(old_table[old_used[i]]);
  if (old_table != nullptr) munmap(old_table, Bytes(old_slots));
  return true;
}

bool PcSet::Insert(uint64_t pc) {
  if (table_ == nullptr && !Resize(kInitialSlots)) return false;
  if (count_ + 1 > slots() / 2 && !Resize(slots() * 2)) return false;
  size_t h = Hash(pc) & mask_;
  while (table_[h] != 0) {
    if (table_[h] == pc) return false;
    h = (h + 1) & mask_;
  }
  table_[h] = pc;
  used_[count_++] = static_cast<uint32_t>(h);
  return true;
}

void PcSet::Clear() {
  for (size_t i = 0; i < count_; i++) table_[used_[i]] = 0;
  count_ = 0;
}

}  // namespace svmfuzz
