// libFuzzer target for virtio-blk request handling: the input lays out descriptor chains and
// the guest bytes they point to (headers, discard ranges, data), and the device processes them
// against a small in-memory image with the synchronous backend. Finds crashes, sanitizer
// reports and accesses outside guest memory in chain walking, request parsing and validation.
#include <fuzzer/FuzzedDataProvider.h>
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "base/guest_memory.h"
#include "fuzz_util.h"
#include "virtio/block.h"

namespace tern::virtio {
namespace {

constexpr uint64_t kMemorySize = 1 << 20;
constexpr uint16_t kQueueSize = 16;
constexpr uint64_t kDescTable = 0;
constexpr uint64_t kAvailRing = kDescTable + 16 * kQueueSize;
constexpr uint64_t kUsedRing = 0x1000;
constexpr uint64_t kDataArea = 0x10000;  // fuzz bytes are copied here; buffers point near it
constexpr uint64_t kDataSize = 0x10000;

struct Fixture {
  Fixture() {
    fuzzing::SilenceLogs();
    RegionSpec spec{0, kMemorySize};
    memory = std::make_unique<GuestMemory>(std::move(GuestMemory::Create({&spec, 1})).value());
    int image = ::memfd_create("tern-fuzz-image", MFD_CLOEXEC);
    fuzzing::Check(image >= 0 && ::ftruncate(image, 64 * kSectorSize) == 0);
    BlockOptions options;
    options.path = "/proc/self/fd/" + std::to_string(image);
    options.serial = "fuzz";
    options.allow_io_uring = false;
    block = std::move(Block::Create(options)).value();
    events.push_back(std::move(EventFd::Create()).value());
  }

  std::unique_ptr<GuestMemory> memory;
  std::unique_ptr<Block> block;
  fuzzing::ManualLoop loop;
  fuzzing::RecordingInterrupt interrupt;
  std::vector<EventFd> events;
};

// A buffer length: often what requests have (a header, a status byte, sectors), else any.
uint32_t Length(FuzzedDataProvider& input) {
  switch (input.ConsumeIntegralInRange(0, 3)) {
    case 0:
      return input.ConsumeIntegralInRange(0, 32);
    case 1:
      return kSectorSize * input.ConsumeIntegralInRange(0, 8);
    case 2:
      return 1;
    default:
      return input.ConsumeIntegral<uint16_t>();
  }
}

template <typename T>
void Put(const GuestMemory& memory, uint64_t gpa, T value) {
  (void)memory.WriteObj(gpa, value);
}

}  // namespace
}  // namespace tern::virtio

// Input: the chains (count; per chain: indirect or not, buffer count; per buffer: offset from
// the data area, length, device-writable, outside guest memory), then the data area's bytes.
extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace tern::virtio;
  static Fixture* fixture = new Fixture;
  const tern::GuestMemory& memory = *fixture->memory;
  std::vector<uint8_t> zeros(kDataArea + kDataSize);
  (void)memory.Write(0, zeros);

  FuzzedDataProvider input(data, size);
  unsigned chains = input.ConsumeIntegralInRange(1, 8);
  uint16_t next_desc = 0;
  // Well-formed headers and discard ranges, written over the data area at the chains' first
  // buffers: random bytes would rarely name a known type and a sector in range.
  std::vector<std::pair<uint64_t, VirtioBlockHeader>> headers;
  std::vector<std::pair<uint64_t, VirtioBlockDiscardWriteZeroes>> ranges;
  for (unsigned c = 0; c < chains; ++c) {
    bool indirect = input.ConsumeBool();
    unsigned buffers = input.ConsumeIntegralInRange(1, 8);
    uint64_t table = indirect ? kDataArea + kDataSize + 0x100 * c : kDescTable;
    for (unsigned b = 0; b < buffers; ++b) {
      uint64_t addr = kDataArea + input.ConsumeIntegral<uint16_t>();
      uint32_t len = Length(input);
      bool writable = input.ConsumeBool();
      if (input.ConsumeIntegralInRange(0, 63) == 0) addr = kMemorySize - 8;  // leaves RAM
      if (b == 0 && input.ConsumeBool()) {
        uint32_t type = input.ConsumeIntegralInRange(0, 15);
        headers.push_back({addr, {type, 0, input.ConsumeIntegralInRange<uint64_t>(0, 80)}});
        uint64_t sectors = input.ConsumeIntegralInRange(0, 16);
        uint32_t range_flags = input.ConsumeIntegralInRange(0, 2);
        ranges.push_back({addr + sizeof(VirtioBlockHeader),
                          {input.ConsumeIntegralInRange<uint64_t>(0, 80),
                           static_cast<uint32_t>(sectors), range_flags}});
      }
      uint16_t index = indirect ? b : (next_desc + b) % kQueueSize;
      uint16_t next = indirect ? b + 1 : (index + 1) % kQueueSize;
      uint16_t flags = (b + 1 < buffers ? 1 : 0) | (writable ? 2 : 0);  // NEXT, WRITE
      Put<uint64_t>(memory, table + 16 * index, addr);
      Put<uint32_t>(memory, table + 16 * index + 8, len);
      Put<uint16_t>(memory, table + 16 * index + 12, flags);
      Put<uint16_t>(memory, table + 16 * index + 14, next);
    }
    uint16_t head = next_desc;
    if (indirect) {
      Put<uint64_t>(memory, kDescTable + 16 * head, table);
      Put<uint32_t>(memory, kDescTable + 16 * head + 8, 16 * buffers);
      Put<uint16_t>(memory, kDescTable + 16 * head + 12, 4);  // INDIRECT
      next_desc = (next_desc + 1) % kQueueSize;
    } else {
      next_desc = (next_desc + buffers) % kQueueSize;
    }
    Put<uint16_t>(memory, kAvailRing + 4 + 2 * c, head);
  }
  Put<uint16_t>(memory, kAvailRing + 2, chains);
  std::vector<uint8_t> area = input.ConsumeRemainingBytes<uint8_t>();
  area.resize(kDataSize);
  (void)memory.Write(kDataArea, area);
  for (const auto& [gpa, header] : headers) Put(memory, gpa, header);
  for (const auto& [gpa, range] : ranges) Put(memory, gpa, range);

  std::vector<Queue> queues;
  queues.emplace_back(kQueueSize);
  queues[0].set_size(kQueueSize);
  queues[0].set_desc_table(kDescTable);
  queues[0].set_avail_ring(kAvailRing);
  queues[0].set_used_ring(kUsedRing);
  queues[0].set_ready(true);
  queues[0].set_indirect(true);
  ActivateContext context;
  context.memory = &memory;
  context.driver_features = fixture->block->device_features();
  context.queues = &queues;
  context.queue_events = fixture->events;
  context.interrupt = &fixture->interrupt;
  context.loop = &fixture->loop;
  fuzzing::Check(fixture->block->Activate(context).ok());
  fixture->loop.Dispatch(fixture->events[0].fd());
  // The synchronous backend finishes every request it starts; none is used twice.
  tern::Result<uint16_t> used = memory.ReadObj<uint16_t>(kUsedRing + 2);
  fuzzing::Check(used.ok() && *used <= chains);
  fixture->block->Reset();
  fuzzing::Check(!fixture->loop.watched(fixture->events[0].fd()));
  return 0;
}
