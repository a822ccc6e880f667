// For tests that need real KVM state: a fresh VM with the in-kernel irqchip and PIT and one
// vCPU (where /dev/kvm is usable), and the rule for skipping where this host's KVM lacks an
// ioctl.
#pragma once

#include <gtest/gtest.h>

#include <optional>
#include <utility>

#include "kvm/kvm.h"

namespace tern::kvm {

struct TestVm {
  Kvm kvm;
  Vm vm;
  Vcpu vcpu;
};

// A VM (KVM_CREATE_IRQCHIP, KVM_CREATE_PIT2) with vCPU `vcpu_id`, or nullopt where /dev/kvm is
// absent or unusable.
inline std::optional<TestVm> MakeTestVm(uint32_t vcpu_id = 0) {
  auto kvm = Kvm::Open();
  if (!kvm.ok()) return std::nullopt;
  auto mmap_size = kvm->GetVcpuMmapSize();
  auto vm = kvm->CreateVm();
  if (!mmap_size.ok() || !vm.ok() || !vm->CreateIrqchip().ok() || !vm->CreatePit2().ok()) {
    return std::nullopt;
  }
  auto vcpu = vm->CreateVcpu(vcpu_id, *mmap_size);
  if (!vcpu.ok()) return std::nullopt;
  return TestVm{std::move(kvm).value(), std::move(vm).value(), std::move(vcpu).value()};
}

// Whether `error` says this host's KVM lacks an ioctl (ENOTTY) or refuses it (EINVAL): what a
// PVM or old host may do, where a test skips rather than fails.
inline bool Unsupported(const Error& error) {
  return error.errno_value() == ENOTTY || error.errno_value() == EINVAL;
}

}  // namespace tern::kvm

// Skips the current test if `result` (a Result) failed because the host's KVM lacks the ioctl.
#define TERN_SKIP_IF_UNSUPPORTED(result)                                  \
  do {                                                                    \
    if (!(result).ok() && ::tern::kvm::Unsupported((result).error())) {   \
      GTEST_SKIP() << "this host's KVM: " << (result).error().ToString(); \
    }                                                                     \
  } while (0)
