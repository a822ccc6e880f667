// <linux/kvm.h> made safe for C++: the Linux 6.1 UAPI headers Debian 12 ships declare flexible
// arrays with __DECLARE_FLEX_ARRAY, whose C form adds an empty struct that is one byte in C++.
// That moves `entries` in kvm_cpuid2/kvm_msrs and changes the size encoded in ioctl numbers
// (KVM_GET_SUPPORTED_CPUID then fails with EINVAL). Later kernels define the macro as a
// zero-length array for C++; this header does the same and checks the resulting ABI. Include
// this instead of <linux/kvm.h>.
#pragma once

#include <linux/stddef.h>

#undef __DECLARE_FLEX_ARRAY
#define __DECLARE_FLEX_ARRAY(TYPE, NAME) TYPE NAME[0]

#include <linux/kvm.h>

#include <cstddef>

static_assert(sizeof(kvm_cpuid2) == 8 && offsetof(kvm_cpuid2, entries) == 8,
              "kvm_cpuid2 layout differs from the kernel ABI");
static_assert(sizeof(kvm_msrs) == 8 && offsetof(kvm_msrs, entries) == 8,
              "kvm_msrs layout differs from the kernel ABI");
static_assert(sizeof(kvm_irq_routing) == 8 && offsetof(kvm_irq_routing, entries) == 8,
              "kvm_irq_routing layout differs from the kernel ABI");
static_assert(sizeof(kvm_msr_list) == 4 && offsetof(kvm_msr_list, indices) == 4,
              "kvm_msr_list layout differs from the kernel ABI");
static_assert(sizeof(kvm_xsave) == 4096 && offsetof(kvm_xsave, extra) == 4096,
              "kvm_xsave layout differs from the kernel ABI");
