// Unit tests for split virtqueues: ring validation, chain walking (direct and indirect), the
// ways a hostile driver can malform a chain, the used ring and notification suppression.
#include "virtio/queue.h"

#include <gtest/gtest.h>

#include <vector>

#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using testing::MakeGuestMemory;
using testing::RingBuilder;

constexpr uint16_t kSize = 16;
constexpr uint64_t kData = 0x10000;      // buffers go here
constexpr uint64_t kIndirect = 0x20000;  // indirect tables go here
constexpr uint64_t kMemorySize = 1 << 20;

class QueueTest : public ::testing::Test {
 protected:
  QueueTest() : memory_(MakeGuestMemory(kMemorySize)), ring_(memory_, kSize), queue_(kSize) {
    ring_.Configure(queue_);
  }

  // Pops one chain, expecting success and a chain.
  DescriptorChain PopChain() {
    auto chain = queue_.Pop(memory_);
    EXPECT_TRUE(chain.ok()) << chain.error().message();
    if (!chain.ok() || !chain->has_value()) {
      ADD_FAILURE() << "no chain";
      return {};
    }
    return **chain;
  }

  // Pops, expecting an error; returns its errno value.
  int PopError() {
    auto chain = queue_.Pop(memory_);
    EXPECT_FALSE(chain.ok());
    return chain.ok() ? 0 : chain.error().errno_value();
  }

  GuestMemory memory_;
  RingBuilder ring_;
  Queue queue_;
};

TEST_F(QueueTest, ValidateAcceptsGoodRings) { EXPECT_TRUE(queue_.Validate(memory_).ok()); }

TEST_F(QueueTest, ValidateRejectsBadSizes) {
  for (uint16_t size : {0, 3, 12, 32}) {  // 32 > max_size
    queue_.set_size(size);
    EXPECT_EQ(queue_.Validate(memory_).error().errno_value(), EINVAL) << size;
  }
}

TEST_F(QueueTest, ValidateRejectsMisalignedRings) {
  queue_.set_desc_table(8);
  EXPECT_FALSE(queue_.Validate(memory_).ok());
  ring_.Configure(queue_);
  queue_.set_avail_ring(ring_.avail_ring() + 1);
  EXPECT_FALSE(queue_.Validate(memory_).ok());
  ring_.Configure(queue_);
  queue_.set_used_ring(ring_.used_ring() + 2);
  EXPECT_FALSE(queue_.Validate(memory_).ok());
}

TEST_F(QueueTest, ValidateRejectsRingsOutsideMemory) {
  queue_.set_used_ring(kMemorySize - 8);  // the ring runs past the end
  EXPECT_EQ(queue_.Validate(memory_).error().errno_value(), EFAULT);
  ring_.Configure(queue_);
  queue_.set_desc_table(1ull << 40);
  EXPECT_EQ(queue_.Validate(memory_).error().errno_value(), EFAULT);
}

TEST_F(QueueTest, PopNotReadyFails) {
  queue_.set_ready(false);
  EXPECT_FALSE(queue_.Pop(memory_).ok());
}

TEST_F(QueueTest, PopEmptyReturnsNothing) {
  auto chain = queue_.Pop(memory_);
  ASSERT_TRUE(chain.ok());
  EXPECT_FALSE(chain->has_value());
}

TEST_F(QueueTest, PopsSimpleChain) {
  std::vector<Buffer> buffers = {{kData, 16, false},
                                 {kData + 16, 100, false},
                                 {kData + 200, 512, true},
                                 {kData + 800, 1, true}};
  uint16_t head = ring_.AddChain(buffers);
  DescriptorChain chain = PopChain();
  EXPECT_EQ(chain.head, head);
  ASSERT_EQ(chain.buffers.size(), 4u);
  for (size_t i = 0; i < buffers.size(); ++i) {
    EXPECT_EQ(chain.buffers[i].addr, buffers[i].addr);
    EXPECT_EQ(chain.buffers[i].len, buffers[i].len);
    EXPECT_EQ(chain.buffers[i].write_only, buffers[i].write_only);
  }
  EXPECT_EQ(chain.readable_bytes, 116u);
  EXPECT_EQ(chain.writable_bytes, 513u);
  EXPECT_FALSE(queue_.Pop(memory_)->has_value());
}

TEST_F(QueueTest, PopsChainsInAvailOrder) {
  ring_.SetDesc(5, kData, 1, 0, 0);
  ring_.SetDesc(2, kData, 2, 0, 0);
  ring_.MakeAvailable(5);
  ring_.MakeAvailable(2);
  EXPECT_EQ(PopChain().head, 5);
  EXPECT_EQ(PopChain().head, 2);
}

TEST_F(QueueTest, FollowsNextAcrossTable) {
  ring_.SetDesc(7, kData, 1, kDescFNext, 3);
  ring_.SetDesc(3, kData, 2, kDescFNext, 15);
  ring_.SetDesc(15, kData, 4, kDescFWrite, 0);
  ring_.MakeAvailable(7);
  DescriptorChain chain = PopChain();
  ASSERT_EQ(chain.buffers.size(), 3u);
  EXPECT_EQ(chain.readable_bytes, 3u);
  EXPECT_EQ(chain.writable_bytes, 4u);
}

TEST_F(QueueTest, PopsIndirectChain) {
  queue_.set_indirect(true);
  std::vector<Buffer> buffers = {
      {kData, 16, false}, {kData + 16, 4096, true}, {kData + 8192, 1, true}};
  uint16_t head = ring_.AddIndirectChain(kIndirect, buffers);
  DescriptorChain chain = PopChain();
  EXPECT_EQ(chain.head, head);
  ASSERT_EQ(chain.buffers.size(), 3u);
  EXPECT_EQ(chain.buffers[1].addr, kData + 16);
  EXPECT_TRUE(chain.buffers[2].write_only);
  EXPECT_EQ(chain.readable_bytes, 16u);
  EXPECT_EQ(chain.writable_bytes, 4097u);
}

TEST_F(QueueTest, DirectDescriptorsThenIndirectTable) {
  queue_.set_indirect(true);
  ring_.SetDesc(0, kData, 8, kDescFNext, 1);
  ring_.SetDesc(1, kIndirect, 32, kDescFIndirect, 0);
  ring_.SetDesc(0, kData + 8, 8, kDescFNext, 1, kIndirect);
  ring_.SetDesc(1, kData + 16, 8, kDescFWrite, 0, kIndirect);
  ring_.MakeAvailable(0);
  DescriptorChain chain = PopChain();
  ASSERT_EQ(chain.buffers.size(), 3u);
  EXPECT_EQ(chain.readable_bytes, 16u);
  EXPECT_EQ(chain.writable_bytes, 8u);
}

TEST_F(QueueTest, IndirectTableLongerThanQueue) {
  queue_.set_indirect(true);
  std::vector<Buffer> buffers(100, Buffer{kData, 4, true});
  ring_.AddIndirectChain(kIndirect, buffers);
  EXPECT_EQ(PopChain().buffers.size(), 100u);
}

TEST_F(QueueTest, RejectsIndirectWithoutFeature) {
  std::vector<Buffer> buffers = {{kData, 16, false}};
  ring_.AddIndirectChain(kIndirect, buffers);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsNestedIndirect) {
  queue_.set_indirect(true);
  ring_.SetDesc(0, kIndirect, 16, kDescFIndirect, 0);
  ring_.SetDesc(0, kIndirect + 0x100, 16, kDescFIndirect, 0, kIndirect);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsIndirectWithNext) {
  queue_.set_indirect(true);
  ring_.SetDesc(0, kIndirect, 16, kDescFIndirect | kDescFNext, 1);
  ring_.SetDesc(1, kData, 16, 0, 0);
  ring_.SetDesc(0, kData, 16, 0, 0, kIndirect);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsBadIndirectTableLengths) {
  queue_.set_indirect(true);
  for (uint32_t len : {0u, 8u, 24u, 16u * (Queue::kMaxSize + 1)}) {
    Queue queue(kSize);
    ring_.Configure(queue);
    queue.set_indirect(true);
    ring_.SetDesc(0, kIndirect, len, kDescFIndirect, 0);
    ring_.set_avail_idx(0);
    ring_.MakeAvailable(0);
    EXPECT_FALSE(queue.Pop(memory_).ok()) << len;
  }
}

TEST_F(QueueTest, RejectsIndirectTableOutsideMemory) {
  queue_.set_indirect(true);
  ring_.SetDesc(0, kMemorySize - 16, 32, kDescFIndirect, 0);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsIndirectLoop) {
  queue_.set_indirect(true);
  ring_.SetDesc(0, kIndirect, 32, kDescFIndirect, 0);
  ring_.SetDesc(0, kData, 1, kDescFNext, 1, kIndirect);
  ring_.SetDesc(1, kData, 1, kDescFNext, 0, kIndirect);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsIndirectNextOutOfTable) {
  queue_.set_indirect(true);
  ring_.SetDesc(0, kIndirect, 32, kDescFIndirect, 0);
  ring_.SetDesc(0, kData, 1, kDescFNext, 2, kIndirect);  // the table has 2 entries
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsReadableAfterWritable) {
  std::vector<Buffer> buffers = {{kData, 16, true}, {kData + 16, 16, false}};
  ring_.AddChain(buffers);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsSelfLoop) {
  ring_.SetDesc(4, kData, 1, kDescFNext, 4);
  ring_.MakeAvailable(4);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsLongLoop) {
  for (uint16_t i = 0; i < kSize; ++i) ring_.SetDesc(i, kData, 1, kDescFNext, (i + 1) % kSize);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, AcceptsChainUsingWholeTable) {
  for (uint16_t i = 0; i < kSize; ++i) {
    ring_.SetDesc(i, kData, 1, i + 1 < kSize ? kDescFNext : 0, i + 1);
  }
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopChain().buffers.size(), kSize);
}

TEST_F(QueueTest, RejectsHeadOutOfRange) {
  ring_.MakeAvailable(kSize);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsNextOutOfRange) {
  ring_.SetDesc(0, kData, 1, kDescFNext, 0xffff);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsBufferOutsideMemory) {
  ring_.SetDesc(0, kMemorySize, 1, 0, 0);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsBufferStraddlingEndOfMemory) {
  ring_.SetDesc(0, kMemorySize - 4, 8, 0, 0);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsWrappingAddress) {
  ring_.SetDesc(0, UINT64_MAX - 4, 16, 0, 0);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsHugeLength) {
  ring_.SetDesc(0, kData, UINT32_MAX, kDescFWrite, 0);
  ring_.MakeAvailable(0);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, RejectsTotalLengthOver4GiB) {
  // Three 2 GiB buffers in a 6 GiB guest: each is RAM, their sum does not fit 32 bits.
  RegionSpec spec{0, 6ull << 30};
  auto big = GuestMemory::Create(std::span(&spec, 1));
  ASSERT_TRUE(big.ok());
  RingBuilder ring(*big, kSize);
  Queue queue(kSize);
  ring.Configure(queue);
  std::vector<Buffer> buffers = {
      {1ull << 30, 1u << 31, false}, {1ull << 30, 1u << 31, true}, {1ull << 30, 1u << 31, true}};
  ring.AddChain(buffers);
  auto chain = queue.Pop(*big);
  ASSERT_FALSE(chain.ok());
  EXPECT_NE(chain.error().message().find("4 GiB"), std::string::npos);
}

TEST_F(QueueTest, RejectsAvailIdxJump) {
  ring_.SetDesc(0, kData, 1, 0, 0);
  ring_.set_avail_idx(kSize + 1);
  EXPECT_EQ(PopError(), EINVAL);
}

TEST_F(QueueTest, AcceptsAvailIdxExactlySizeAhead) {
  ring_.SetDesc(0, kData, 1, 0, 0);
  for (uint16_t i = 0; i < kSize; ++i) ring_.MakeAvailable(0);
  for (uint16_t i = 0; i < kSize; ++i) EXPECT_EQ(PopChain().head, 0);
  EXPECT_FALSE(queue_.Pop(memory_)->has_value());
}

TEST_F(QueueTest, AcceptsZeroLengthBuffer) {
  ring_.SetDesc(0, kData, 0, 0, 0);
  ring_.MakeAvailable(0);
  DescriptorChain chain = PopChain();
  ASSERT_EQ(chain.buffers.size(), 1u);
  EXPECT_EQ(chain.buffers[0].len, 0u);
}

TEST_F(QueueTest, AddUsedPublishesEntries) {
  ASSERT_TRUE(queue_.AddUsed(memory_, 3, 100).ok());
  ASSERT_TRUE(queue_.AddUsed(memory_, 7, 0).ok());
  EXPECT_EQ(ring_.used_idx(), 2);
  EXPECT_EQ(ring_.used(0).id, 3u);
  EXPECT_EQ(ring_.used(0).len, 100u);
  EXPECT_EQ(ring_.used(1).id, 7u);
  EXPECT_EQ(ring_.used(1).len, 0u);
}

TEST_F(QueueTest, AddUsedRejectsBadHead) {
  EXPECT_EQ(queue_.AddUsed(memory_, kSize, 0).error().errno_value(), EINVAL);
  EXPECT_EQ(ring_.used_idx(), 0);
}

TEST_F(QueueTest, RingsWrapAroundAfter65536Entries) {
  ring_.SetDesc(0, kData, 1, kDescFWrite, 0);
  for (uint32_t i = 0; i < 65536 + 3 * kSize; ++i) {
    ring_.MakeAvailable(0);
    DescriptorChain chain = PopChain();
    ASSERT_EQ(chain.head, 0);
    ASSERT_TRUE(queue_.AddUsed(memory_, chain.head, i).ok());
    ASSERT_EQ(ring_.used_idx(), static_cast<uint16_t>(i + 1));
    ASSERT_EQ(ring_.used(i).len, i);
  }
  EXPECT_EQ(ring_.used_idx(), 3 * kSize);
  EXPECT_FALSE(queue_.Pop(memory_)->has_value());
}

TEST_F(QueueTest, NotifiesUnlessNoInterrupt) {
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));
  ring_.set_avail_flags(kAvailFNoInterrupt);
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));
}

TEST_F(QueueTest, EventIdxNotifiesWhenUsedEventCrossed) {
  queue_.set_event_idx(true);
  ring_.set_avail_flags(kAvailFNoInterrupt);  // ignored with EVENT_IDX
  ring_.set_used_event(0);
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // used idx 0 -> 1 crosses used_event 0
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 1 -> 2: used_event 0 already passed
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));
  ring_.set_used_event(4);  // the driver wants a notification once entry 4 is used
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 2 -> 3
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 3 -> 4
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 4 -> 5: entry 4 used
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));  // nothing new since
}

TEST_F(QueueTest, EventIdxBatchCrossingNotifiesOnce) {
  queue_.set_event_idx(true);
  ring_.set_used_event(0);
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));
  ring_.set_used_event(2);
  for (int i = 0; i < 5; ++i) ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 1 -> 6
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));
}

TEST_F(QueueTest, EventIdxAcrossIndexWrap) {
  queue_.set_event_idx(true);
  ring_.SetDesc(0, kData, 1, kDescFWrite, 0);
  for (uint32_t i = 0; i < 65535; ++i) {
    ring_.MakeAvailable(0);
    ASSERT_EQ(PopChain().head, 0);
    ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());
  }
  ring_.set_used_event(65534);
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));  // first call: always
  ring_.set_used_event(1);
  ring_.MakeAvailable(0);
  ASSERT_TRUE(queue_.Pop(memory_).ok());
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 65535 -> 0
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));
  ring_.MakeAvailable(0);
  ASSERT_TRUE(queue_.Pop(memory_).ok());
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 0 -> 1
  EXPECT_FALSE(*queue_.NeedsNotification(memory_));
  ring_.MakeAvailable(0);
  ASSERT_TRUE(queue_.Pop(memory_).ok());
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());  // 1 -> 2: entry 1 used
  EXPECT_TRUE(*queue_.NeedsNotification(memory_));
}

TEST_F(QueueTest, EnableNotificationWritesAvailEvent) {
  queue_.set_event_idx(true);
  ring_.SetDesc(0, kData, 1, 0, 0);
  ring_.MakeAvailable(0);
  ring_.MakeAvailable(0);
  EXPECT_TRUE(*queue_.EnableNotification(memory_));  // two chains are waiting
  EXPECT_EQ(ring_.avail_event(), 0);
  PopChain();
  PopChain();
  EXPECT_FALSE(*queue_.EnableNotification(memory_));
  EXPECT_EQ(ring_.avail_event(), 2);
}

TEST_F(QueueTest, EnableNotificationWithoutEventIdxLeavesRingAlone) {
  ring_.SetDesc(0, kData, 1, 0, 0);
  EXPECT_FALSE(*queue_.EnableNotification(memory_));
  ring_.MakeAvailable(0);
  EXPECT_TRUE(*queue_.EnableNotification(memory_));
  EXPECT_EQ(ring_.avail_event(), 0);
  EXPECT_EQ(ring_.used_flags(), 0);
}

TEST_F(QueueTest, ResetRestoresInitialState) {
  ring_.SetDesc(0, kData, 1, 0, 0);
  ring_.MakeAvailable(0);
  PopChain();
  ASSERT_TRUE(queue_.AddUsed(memory_, 0, 0).ok());
  queue_.set_size(8);
  queue_.Reset();
  EXPECT_EQ(queue_.size(), kSize);
  EXPECT_EQ(queue_.desc_table(), 0u);
  EXPECT_EQ(queue_.avail_ring(), 0u);
  EXPECT_EQ(queue_.used_ring(), 0u);
  EXPECT_FALSE(queue_.ready());
  // The indices restart at 0: the same avail entry pops again.
  ring_.Configure(queue_);
  EXPECT_EQ(PopChain().head, 0);
}

TEST_F(QueueTest, ProcessAvailableUsesEveryChain) {
  queue_.set_event_idx(true);
  ring_.SetDesc(0, kData, 8, kDescFWrite, 0);
  for (int i = 0; i < 5; ++i) ring_.MakeAvailable(0);
  int calls = 0;
  auto processed = ProcessAvailable(queue_, memory_, [&](const DescriptorChain& chain) {
    ++calls;
    return Result<uint32_t>(static_cast<uint32_t>(chain.writable_bytes));
  });
  ASSERT_TRUE(processed.ok());
  EXPECT_TRUE(processed->used);
  EXPECT_FALSE(processed->more);
  EXPECT_EQ(calls, 5);
  EXPECT_EQ(ring_.used_idx(), 5);
  EXPECT_EQ(ring_.used(4).len, 8u);
  EXPECT_EQ(ring_.avail_event(), 5);  // notifications re-enabled
}

TEST_F(QueueTest, ProcessAvailableIsBoundedAgainstARacingDriver) {
  ring_.SetDesc(0, kData, 8, 0, 0);
  ring_.MakeAvailable(0);
  int calls = 0;
  auto processed = ProcessAvailable(queue_, memory_, [&](const DescriptorChain&) {
    ++calls;
    ring_.MakeAvailable(0);  // the driver adds one for every one used
    return Result<uint32_t>(0u);
  });
  ASSERT_TRUE(processed.ok());
  EXPECT_TRUE(processed->more);
  EXPECT_LE(calls, 2 * kSize + 1);
}

TEST_F(QueueTest, ProcessAvailableStopsAtProcessError) {
  ring_.SetDesc(0, kData, 8, 0, 0);
  ring_.MakeAvailable(0);
  ring_.MakeAvailable(0);
  auto processed = ProcessAvailable(queue_, memory_, [&](const DescriptorChain&) {
    return Result<uint32_t>(Error("bad request", EIO));
  });
  ASSERT_FALSE(processed.ok());
  EXPECT_EQ(processed.error().errno_value(), EIO);
  EXPECT_EQ(ring_.used_idx(), 0);
}

TEST_F(QueueTest, ProcessAvailableReportsQueueErrors) {
  ring_.MakeAvailable(kSize);
  auto processed = ProcessAvailable(queue_, memory_,
                                    [](const DescriptorChain&) { return Result<uint32_t>(0u); });
  EXPECT_FALSE(processed.ok());
}

TEST_F(QueueTest, IovecsSplitReadableAndWritable) {
  std::vector<Buffer> buffers = {
      {kData, 16, false}, {kData + 64, 32, true}, {kData + 128, 8, true}};
  ring_.AddChain(buffers);
  DescriptorChain chain = PopChain();
  auto readable = ReadableIovecs(memory_, chain);
  auto writable = WritableIovecs(memory_, chain);
  ASSERT_TRUE(readable.ok());
  ASSERT_TRUE(writable.ok());
  ASSERT_EQ(readable->size(), 1u);
  ASSERT_EQ(writable->size(), 2u);
  EXPECT_EQ((*readable)[0].iov_len, 16u);
  EXPECT_EQ((*writable)[1].iov_len, 8u);
  EXPECT_EQ(static_cast<uint8_t*>((*writable)[0].iov_base), memory_.Slice(kData + 64, 32)->data());
}

TEST(IovecRangeTest, SlicesAndCopiesAcrossBuffers) {
  uint8_t a[3] = {1, 2, 3};
  uint8_t b[1] = {4};
  uint8_t c[4] = {5, 6, 7, 8};
  const iovec iovecs[] = {{a, 3}, {nullptr, 0}, {b, 1}, {c, 4}};
  std::vector<iovec> slice;
  ASSERT_TRUE(SliceIovecs(iovecs, 2, 4, slice));  // bytes 3, 4, 5, 6
  ASSERT_EQ(slice.size(), 3u);
  EXPECT_EQ(slice[0].iov_base, a + 2);
  EXPECT_EQ(slice[0].iov_len, 1u);
  EXPECT_EQ(slice[1].iov_base, b);
  EXPECT_EQ(slice[2].iov_base, c);
  EXPECT_EQ(slice[2].iov_len, 2u);
  slice.clear();
  EXPECT_TRUE(SliceIovecs(iovecs, 8, 0, slice));
  EXPECT_FALSE(SliceIovecs(iovecs, 7, 2, slice));  // one byte past the end
  EXPECT_FALSE(SliceIovecs(iovecs, UINT64_MAX, 1, slice));

  uint8_t out[4] = {};
  ASSERT_TRUE(CopyFromIovecs(iovecs, 1, out));
  EXPECT_EQ(std::vector<uint8_t>(out, out + 4), (std::vector<uint8_t>{2, 3, 4, 5}));
  const uint8_t in[3] = {0xa, 0xb, 0xc};
  ASSERT_TRUE(CopyToIovecs(iovecs, 3, in));
  EXPECT_EQ(b[0], 0xa);
  EXPECT_EQ(c[0], 0xb);
  EXPECT_EQ(c[1], 0xc);
  // Past the end: only what exists is copied.
  EXPECT_FALSE(CopyToIovecs(iovecs, 6, in));
  EXPECT_EQ(c[2], 0xa);
  EXPECT_EQ(c[3], 0xb);
  EXPECT_FALSE(CopyFromIovecs(iovecs, 8, std::span(out, 1)));
}

// A queue's state moves to a new queue of the same size, which then continues where the
// first stopped; states no driver could set are refused.
TEST_F(QueueTest, StateRoundTripsAndContinues) {
  const Buffer buffer{0x8000, 16, false};
  ring_.AddChain(std::span(&buffer, 1));
  DescriptorChain chain = PopChain();
  ASSERT_TRUE(queue_.AddUsed(memory_, chain.head, 0).ok());
  nlohmann::json state = queue_.SaveState();
  Queue restored(kSize);
  ASSERT_TRUE(restored.RestoreState(state, memory_).ok());
  EXPECT_EQ(restored.SaveState(), state);
  ring_.AddChain(std::span(&buffer, 1));
  auto next = restored.Pop(memory_);
  ASSERT_TRUE(next.ok() && next->has_value());
  auto again = restored.Pop(memory_);
  ASSERT_TRUE(again.ok());
  EXPECT_FALSE(again->has_value());  // the first chain is not popped twice

  for (auto [key, value] :
       std::vector<std::pair<std::string, nlohmann::json>>{{"size", 3},
                                                           {"size", 2 * kSize},
                                                           {"size", 0},
                                                           {"desc_table", kMemorySize},
                                                           {"next_avail", -1},
                                                           {"ready", "yes"}}) {
    nlohmann::json bad = state;
    bad[key] = value;
    Queue target(kSize);
    EXPECT_FALSE(target.RestoreState(bad, memory_).ok()) << key << "=" << value;
  }
  nlohmann::json extra = state;
  extra["bogus"] = 1;
  EXPECT_FALSE(restored.RestoreState(extra, memory_).ok());
}

}  // namespace
}  // namespace tern::virtio
