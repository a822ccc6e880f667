// libFuzzer target for split virtqueues (src/virtio/queue.h): the fuzzer input is the whole
// guest (ring addresses, queue size, features, descriptors, indirect tables, indices) plus a
// script of device operations. Queue code must never crash, read outside guest memory or return
// a chain that breaks its documented invariants.
#include <fuzzer/FuzzedDataProvider.h>

#include <cstdint>
#include <cstring>
#include <vector>

#include "base/guest_memory.h"
#include "virtio/queue.h"

namespace tern::virtio {
namespace {

constexpr uint64_t kRamSize = 64 * 1024;  // region 0 at guest address 0: the fuzzer's image
constexpr uint64_t kHighBase = 0x100000;  // region 1, after a hole
constexpr uint64_t kHighSize = 4096;
constexpr uint16_t kMaxQueueSize = 256;

const GuestMemory& Memory() {
  static const GuestMemory* memory = [] {
    RegionSpec specs[] = {{0, kRamSize}, {kHighBase, kHighSize}};
    Result<GuestMemory> created = GuestMemory::Create(specs);
    if (!created.ok()) __builtin_trap();
    return new GuestMemory(std::move(created).value());
  }();
  return *memory;
}

void Check(bool condition) {
  if (!condition) __builtin_trap();
}

// The invariants Pop() promises for a chain it returns.
void CheckChain(const GuestMemory& memory, const Queue& queue, const DescriptorChain& chain) {
  Check(chain.head < queue.size());
  uint64_t readable = 0;
  uint64_t writable = 0;
  bool seen_writable = false;
  for (const Buffer& buffer : chain.buffers) {
    Check(memory.Slice(buffer.addr, buffer.len).ok());
    Check(buffer.write_only || !seen_writable);
    seen_writable |= buffer.write_only;
    (buffer.write_only ? writable : readable) += buffer.len;
  }
  Check(readable == chain.readable_bytes && writable == chain.writable_bytes);
  Check(readable + writable <= UINT32_MAX);
  Check(chain.buffers.size() <= queue.size() + Queue::kMaxSize);
  Check(ReadableIovecs(memory, chain).ok() && WritableIovecs(memory, chain).ok());
}

// A guest address for a ring: usually inside region 0, sometimes anywhere.
uint64_t RingAddress(FuzzedDataProvider& input) {
  return input.ConsumeBool() ? input.ConsumeIntegral<uint64_t>()
                             : input.ConsumeIntegralInRange<uint64_t>(0, kRamSize);
}

void Configure(FuzzedDataProvider& input, Queue& queue) {
  queue.set_size(input.ConsumeBool() ? input.ConsumeIntegral<uint16_t>()
                                     : 1 << input.ConsumeIntegralInRange(0, 8));
  queue.set_desc_table(RingAddress(input));
  queue.set_avail_ring(RingAddress(input));
  queue.set_used_ring(RingAddress(input));
  queue.set_ready(input.ConsumeIntegralInRange(0, 15) != 0);
  queue.set_indirect(input.ConsumeBool());
  queue.set_event_idx(input.ConsumeBool());
}

enum class Op { kPop, kAddUsed, kNeedsNotification, kEnableNotification, kPoke, kProcess, kReset };

}  // namespace
}  // namespace tern::virtio

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tern::virtio;
  const tern::GuestMemory& memory = Memory();
  FuzzedDataProvider input(data, size);
  Queue queue(kMaxQueueSize);
  Configure(input, queue);
  // The operations come from the end of the input, the guest RAM image from the start.
  std::vector<Op> ops(input.ConsumeIntegralInRange(1, 64));
  for (Op& op : ops) op = static_cast<Op>(input.ConsumeIntegralInRange(0, 6));
  std::vector<uint16_t> args(ops.size());
  for (uint16_t& arg : args) arg = input.ConsumeIntegral<uint16_t>();
  std::vector<uint8_t> image = input.ConsumeRemainingBytes<uint8_t>();
  image.resize(kRamSize);
  (void)memory.Write(0, image);
  std::vector<uint8_t> zeros(kHighSize);
  (void)memory.Write(kHighBase, zeros);

  bool valid = queue.Validate(memory).ok();
  for (size_t i = 0; i < ops.size(); ++i) {
    switch (ops[i]) {
      case Op::kPop: {
        auto chain = queue.Pop(memory);
        if (chain.ok() && chain->has_value()) {
          Check(valid && queue.ready());
          CheckChain(memory, queue, **chain);
          Check(queue.AddUsed(memory, (*chain)->head, args[i]).ok());
        }
        break;
      }
      case Op::kAddUsed:
        Check(queue.AddUsed(memory, args[i], args[i]).ok() ==
              (valid && queue.ready() && args[i] < queue.size()));
        break;
      case Op::kNeedsNotification:
        Check(queue.NeedsNotification(memory).ok() == (valid && queue.ready()));
        break;
      case Op::kEnableNotification:
        Check(queue.EnableNotification(memory).ok() == (valid && queue.ready()));
        break;
      case Op::kPoke:  // the driver writes a byte of guest RAM meanwhile (e.g. avail idx)
        (void)memory.WriteObj<uint8_t>(args[i] % kRamSize, static_cast<uint8_t>(args[i] >> 8));
        break;
      case Op::kProcess: {
        auto used = ProcessAvailable(queue, memory, [&](const DescriptorChain& chain) {
          CheckChain(memory, queue, chain);
          return tern::Result<uint32_t>(static_cast<uint32_t>(chain.writable_bytes));
        });
        if (used.ok()) Check(valid && queue.ready());
        break;
      }
      case Op::kReset:
        queue.Reset();
        valid = false;
        break;
    }
  }
  return 0;
}
