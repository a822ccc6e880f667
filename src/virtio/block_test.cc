// Unit tests for virtio-blk: every request type against a temporary raw image, on a real event
// loop thread, with the io_uring backend and with the synchronous one; malformed and hostile
// requests; request merging; read-only mode; several disks; reset with I/O in flight.
#include "virtio/block.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstring>
#include <map>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "base/event_loop.h"
#include "virtio/test_util.h"

namespace tern::virtio {
namespace {

using testing::FakeInterrupt;
using testing::MakeGuestMemory;
using testing::RingBuilder;

constexpr uint64_t kImageSectors = 8192;  // 4 MiB
constexpr uint64_t kImageTail = 100;      // bytes after the last whole sector: not visible
constexpr uint64_t kMemorySize = 16 << 20;
constexpr uint64_t kDataBase = 0x10000;  // request buffers are allocated from here up

// The initial content of image byte `offset`: differs between neighbouring sectors.
uint8_t Pattern(uint64_t offset) {
  return static_cast<uint8_t>(offset / kSectorSize * 31 + offset % 251);
}

// A request built in guest memory: its buffers, and where its data and status byte are.
struct Request {
  std::vector<Buffer> buffers;
  uint64_t data = 0;
  uint64_t status = 0;
};

// A completed request: its status byte and used length.
struct Done {
  uint8_t status = 0xff;
  uint32_t len = 0;
};

// Param: whether io_uring may be used (false: the synchronous backend).
class BlockTest : public ::testing::TestWithParam<bool> {
 protected:
  BlockTest() : memory_(MakeGuestMemory(kMemorySize)) {}

  void SetUp() override {
    path_ = ::testing::TempDir() + "tern_block_test_XXXXXX";
    int fd = ::mkstemp(path_.data());
    ASSERT_GE(fd, 0);
    std::vector<uint8_t> image(kImageSectors * kSectorSize + kImageTail);
    for (uint64_t i = 0; i < image.size(); ++i) image[i] = Pattern(i);
    ASSERT_EQ(::pwrite(fd, image.data(), image.size(), 0), static_cast<ssize_t>(image.size()));
    ASSERT_EQ(::fsync(fd), 0);
    ::close(fd);
    Result<std::unique_ptr<EventLoop>> loop = EventLoop::Create();
    ASSERT_TRUE(loop.ok());
    loop_ = std::move(loop).value();
    loop_thread_ = std::thread([this] { loop_->Run(); });
    Result<EventFd> event = EventFd::Create();
    ASSERT_TRUE(event.ok());
    queue_events_.push_back(std::move(event).value());
  }

  void TearDown() override {
    block_.reset();  // resets it, while the loop still runs
    loop_->Stop();
    loop_thread_.join();
    ::unlink(path_.c_str());
  }

  BlockOptions Options() const {
    BlockOptions options;
    options.path = path_;
    options.allow_io_uring = GetParam();
    return options;
  }

  // Creates the device from `options` and activates it.
  void Start(const BlockOptions& options) {
    Result<std::unique_ptr<Block>> block = Block::Create(options);
    ASSERT_TRUE(block.ok()) << block.error().ToString();
    block_ = std::move(block).value();
    if (GetParam() && !block_->uses_io_uring()) GTEST_SKIP() << "io_uring is not available";
    ASSERT_EQ(block_->uses_io_uring(), GetParam());
    Activate();
  }
  void Start() { Start(Options()); }

  // What the transport does at DRIVER_OK, with fresh rings.
  void Activate() {
    std::vector<uint8_t> zeros(kDataBase);
    ASSERT_TRUE(memory_.Write(0, zeros).ok());
    ring_.emplace(memory_, Block::kQueueSize);
    queues_.clear();
    queues_.emplace_back(Block::kQueueSize);
    ring_->Configure(queues_[0]);
    queues_[0].set_indirect(true);
    queues_[0].set_event_idx(event_idx_);
    used_ = 0;
    ActivateContext context;
    context.memory = &memory_;
    context.driver_features = block_->device_features();
    context.queues = &queues_;
    context.queue_events = queue_events_;
    context.interrupt = &interrupt_;
    context.loop = loop_.get();
    ASSERT_TRUE(block_->Activate(context).ok());
  }

  uint64_t Alloc(uint64_t size) {
    uint64_t gpa = next_gpa_;
    next_gpa_ = (next_gpa_ + size + 15) & ~15ull;
    EXPECT_LE(next_gpa_, kMemorySize);
    return gpa;
  }

  uint64_t Header(uint32_t type, uint64_t sector) {
    uint64_t gpa = Alloc(sizeof(VirtioBlockHeader));
    EXPECT_TRUE(memory_.WriteObj(gpa, VirtioBlockHeader{type, 0, sector}).ok());
    return gpa;
  }

  uint64_t StatusByte() {
    uint64_t gpa = Alloc(1);
    EXPECT_TRUE(memory_.WriteObj<uint8_t>(gpa, 0xff).ok());
    return gpa;
  }

  // The usual layout: header, data (`data_len` bytes, device-writable if `data_writable`; none
  // if 0), status byte.
  Request Make(uint32_t type, uint64_t sector, uint32_t data_len, bool data_writable) {
    Request request;
    request.buffers.push_back({Header(type, sector), sizeof(VirtioBlockHeader), false});
    if (data_len > 0) {
      request.data = Alloc(data_len);
      request.buffers.push_back({request.data, data_len, data_writable});
    }
    request.status = StatusByte();
    request.buffers.push_back({request.status, 1, true});
    return request;
  }
  Request MakeRead(uint64_t sector, uint32_t sectors) {
    return Make(kBlockTypeIn, sector, sectors * kSectorSize, true);
  }
  Request MakeWrite(uint64_t sector, const std::vector<uint8_t>& data) {
    Request request = Make(kBlockTypeOut, sector, data.size(), false);
    EXPECT_TRUE(memory_.Write(request.data, data).ok());
    return request;
  }
  Request MakeDiscardWriteZeroes(uint32_t type,
                                 const std::vector<VirtioBlockDiscardWriteZeroes>& ranges) {
    Request request;
    request.buffers.push_back({Header(type, 0), sizeof(VirtioBlockHeader), false});
    uint64_t bytes = ranges.size() * sizeof(VirtioBlockDiscardWriteZeroes);
    request.data = Alloc(bytes);
    EXPECT_TRUE(
        memory_.Write(request.data, {reinterpret_cast<const uint8_t*>(ranges.data()), bytes}).ok());
    request.buffers.push_back({request.data, static_cast<uint32_t>(bytes), false});
    request.status = StatusByte();
    request.buffers.push_back({request.status, 1, true});
    return request;
  }

  // Makes `request` available (as an indirect chain if `indirect`) without notifying.
  uint16_t Add(const Request& request, bool indirect = false) {
    if (indirect)
      return ring_->AddIndirectChain(Alloc(16 * request.buffers.size()), request.buffers);
    return ring_->AddChain(request.buffers);
  }
  void Kick() { ASSERT_TRUE(queue_events_[0].Write().ok()); }

  // Waits until `count` more chains are used; returns their used elements by head.
  std::map<uint32_t, uint32_t> WaitUsed(uint16_t count) {
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (static_cast<uint16_t>(ring_->used_idx() - used_) < count &&
           std::chrono::steady_clock::now() < deadline) {
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    EXPECT_EQ(static_cast<uint16_t>(ring_->used_idx() - used_), count);
    std::map<uint32_t, uint32_t> used;
    for (; used_ != ring_->used_idx(); ++used_)
      used[ring_->used(used_).id] = ring_->used(used_).len;
    return used;
  }

  uint8_t StatusOf(const Request& request) {
    Result<uint8_t> status = memory_.ReadObj<uint8_t>(request.status);
    EXPECT_TRUE(status.ok());
    return status.ok() ? *status : 0xff;
  }

  // Submits one request and waits for it.
  Done Run(const Request& request, bool indirect = false) {
    uint16_t head = Add(request, indirect);
    Kick();
    std::map<uint32_t, uint32_t> used = WaitUsed(1);
    if (!used.contains(head)) return {};
    return {StatusOf(request), used[head]};
  }

  std::vector<uint8_t> GuestBytes(uint64_t gpa, uint64_t len) {
    std::vector<uint8_t> bytes(len);
    EXPECT_TRUE(memory_.Read(gpa, bytes).ok());
    return bytes;
  }
  std::vector<uint8_t> FileBytes(uint64_t offset, uint64_t len) {
    std::vector<uint8_t> bytes(len);
    int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
    EXPECT_EQ(::pread(fd, bytes.data(), len, offset), static_cast<ssize_t>(len));
    ::close(fd);
    return bytes;
  }
  static std::vector<uint8_t> Expected(uint64_t offset, uint64_t len) {
    std::vector<uint8_t> bytes(len);
    for (uint64_t i = 0; i < len; ++i) bytes[i] = Pattern(offset + i);
    return bytes;
  }

  GuestMemory memory_;
  std::string path_;
  std::unique_ptr<EventLoop> loop_;
  std::thread loop_thread_;
  std::vector<EventFd> queue_events_;
  FakeInterrupt interrupt_;
  std::vector<Queue> queues_;
  std::optional<RingBuilder> ring_;
  bool event_idx_ = false;
  uint16_t used_ = 0;  // used entries consumed by WaitUsed()
  uint64_t next_gpa_ = kDataBase;
  std::unique_ptr<Block> block_;  // destroyed before the loop
};

INSTANTIATE_TEST_SUITE_P(Backends, BlockTest, ::testing::Values(true, false),
                         [](const auto& info) { return info.param ? "IoUring" : "Sync"; });

TEST_P(BlockTest, FeaturesAndConfig) {
  Start();
  uint64_t features = block_->device_features();
  for (uint64_t bit :
       {kFeatureVersion1, kFeatureIndirectDesc, kFeatureEventIdx, kBlockFeatureSegMax,
        kBlockFeatureBlkSize, kBlockFeatureFlush, kBlockFeatureDiscard, kBlockFeatureWriteZeroes}) {
    EXPECT_NE(features & bit, 0u) << bit;
  }
  EXPECT_EQ(features & kBlockFeatureRo, 0u);
  EXPECT_EQ(block_->device_type(), kDeviceTypeBlock);
  EXPECT_EQ(block_->queue_max_sizes(), std::vector<uint16_t>{Block::kQueueSize});

  // The trailing partial sector is not part of the capacity.
  EXPECT_EQ(block_->capacity(), kImageSectors);
  VirtioBlockConfig config;
  block_->ReadConfig(0, {reinterpret_cast<uint8_t*>(&config), sizeof(config)});
  EXPECT_EQ(config.capacity, kImageSectors);
  EXPECT_EQ(config.blk_size, kSectorSize);
  EXPECT_EQ(config.seg_max, Block::kQueueSize - 2u);
  EXPECT_EQ(config.num_queues, 1);
  EXPECT_EQ(config.max_discard_seg, Block::kMaxDiscardSegments);
  EXPECT_EQ(config.max_write_zeroes_sectors, Block::kMaxDiscardSectors);
  EXPECT_EQ(config.write_zeroes_may_unmap, 1);
  EXPECT_GE(config.discard_sector_alignment, 1u);

  // A read that runs past the structure gets zeros there; writes change nothing.
  std::vector<uint8_t> tail(16, 0xaa);
  block_->ReadConfig(sizeof(VirtioBlockConfig) - 4, tail);
  EXPECT_EQ(tail, std::vector<uint8_t>(16, 0));
  std::vector<uint8_t> capacity(8, 0xff);
  block_->WriteConfig(0, capacity);
  block_->ReadConfig(0, capacity);
  EXPECT_EQ(capacity[0], kImageSectors & 0xff);
  EXPECT_EQ(capacity[1], kImageSectors >> 8);
}

TEST_P(BlockTest, Reads) {
  Start();
  Request request = MakeRead(3, 3);
  Done done = Run(request);
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, 3 * kSectorSize + 1);
  EXPECT_EQ(GuestBytes(request.data, 3 * kSectorSize), Expected(3 * kSectorSize, 3 * kSectorSize));
  // The last sector.
  request = MakeRead(kImageSectors - 1, 1);
  EXPECT_EQ(Run(request).status, kBlockStatusOk);
  EXPECT_EQ(GuestBytes(request.data, kSectorSize),
            Expected((kImageSectors - 1) * kSectorSize, kSectorSize));
  EXPECT_GE(interrupt_.queue_count(0), 2);
}

TEST_P(BlockTest, WriteAndFlushReachTheFile) {
  Start();
  std::vector<uint8_t> data(2 * kSectorSize);
  for (size_t i = 0; i < data.size(); ++i) data[i] = static_cast<uint8_t>(i * 7 + 1);
  Done done = Run(MakeWrite(10, data));
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, 1u);
  done = Run(Make(kBlockTypeFlush, 0, 0, false));
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, 1u);
  EXPECT_EQ(FileBytes(10 * kSectorSize, data.size()), data);
  // Neighbours are untouched.
  EXPECT_EQ(FileBytes(9 * kSectorSize, kSectorSize), Expected(9 * kSectorSize, kSectorSize));
  EXPECT_EQ(FileBytes(12 * kSectorSize, kSectorSize), Expected(12 * kSectorSize, kSectorSize));
  // And the guest reads back what it wrote.
  Request read = MakeRead(10, 2);
  EXPECT_EQ(Run(read).status, kBlockStatusOk);
  EXPECT_EQ(GuestBytes(read.data, data.size()), data);
}

TEST_P(BlockTest, AnyDescriptorLayout) {
  Start();
  // Header split 5 + 11 bytes; data in pieces of 100, 412 and 512 bytes; the status byte at the
  // end of the last data buffer.
  uint64_t header = Header(kBlockTypeIn, 7);
  uint64_t data = Alloc(1025);
  Request request;
  request.buffers = {{header, 5, false},      {header + 5, 11, false}, {data, 100, true},
                     {data + 100, 412, true}, {data + 512, 0, true},   {data + 512, 513, true}};
  request.status = data + 1024;
  ASSERT_TRUE(memory_.WriteObj<uint8_t>(request.status, 0xff).ok());
  Done done = Run(request);
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, 1025u);
  EXPECT_EQ(GuestBytes(data, 1024), Expected(7 * kSectorSize, 1024));
}

TEST_P(BlockTest, IndirectChains) {
  Start();
  Request request = MakeRead(20, 1);
  EXPECT_EQ(Run(request, /*indirect=*/true).status, kBlockStatusOk);
  EXPECT_EQ(GuestBytes(request.data, kSectorSize), Expected(20 * kSectorSize, kSectorSize));
}

TEST_P(BlockTest, GetId) {
  BlockOptions options = Options();
  options.serial = "tern-disk-7";
  Start(options);
  Request request = Make(kBlockTypeGetId, 0, kBlockIdBytes, true);
  ASSERT_TRUE(memory_.Write(request.data, std::vector<uint8_t>(kBlockIdBytes, 0xee)).ok());
  Done done = Run(request);
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, kBlockIdBytes + 1);
  std::vector<uint8_t> expected(kBlockIdBytes, 0);
  std::memcpy(expected.data(), "tern-disk-7", 11);
  EXPECT_EQ(GuestBytes(request.data, kBlockIdBytes), expected);
  // A shorter buffer gets the start of the id.
  request = Make(kBlockTypeGetId, 0, 4, true);
  EXPECT_EQ(Run(request).status, kBlockStatusOk);
  EXPECT_EQ(GuestBytes(request.data, 4), std::vector<uint8_t>({'t', 'e', 'r', 'n'}));
}

TEST_P(BlockTest, DefaultIdNamesTheImage) {
  Start();
  Request request = Make(kBlockTypeGetId, 0, kBlockIdBytes, true);
  EXPECT_EQ(Run(request).status, kBlockStatusOk);
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  char expected[64];
  std::snprintf(expected, sizeof(expected), "%llx-%llx", static_cast<unsigned long long>(st.st_dev),
                static_cast<unsigned long long>(st.st_ino));
  std::vector<uint8_t> id = GuestBytes(request.data, kBlockIdBytes);
  EXPECT_EQ(std::string(id.begin(), id.begin() + std::min<size_t>(std::strlen(expected), 20)),
            std::string(expected).substr(0, 20));
}

TEST_P(BlockTest, SerialTooLongIsRefused) {
  BlockOptions options = Options();
  options.serial = std::string(kBlockIdBytes + 1, 'x');
  Result<std::unique_ptr<Block>> block = Block::Create(options);
  ASSERT_FALSE(block.ok());
  EXPECT_EQ(block.error().errno_value(), EINVAL);
}

TEST_P(BlockTest, DiscardPunchesAHole) {
  Start();
  struct stat before;
  ASSERT_EQ(::stat(path_.c_str(), &before), 0);
  // Sectors 8..23: 8 KiB at a 4 KiB boundary, and one more range in the same request.
  Done done = Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, {{8, 16, 0}, {64, 8, 0}}));
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, 1u);
  struct stat after;
  ASSERT_EQ(::stat(path_.c_str(), &after), 0);
  EXPECT_EQ(after.st_size, before.st_size);
  EXPECT_LE(after.st_blocks, before.st_blocks - 24);
  EXPECT_EQ(FileBytes(8 * kSectorSize, 16 * kSectorSize),
            std::vector<uint8_t>(16 * kSectorSize, 0));
  EXPECT_EQ(FileBytes(24 * kSectorSize, kSectorSize), Expected(24 * kSectorSize, kSectorSize));
}

TEST_P(BlockTest, WriteZeroes) {
  Start();
  // Without UNMAP (FALLOC_FL_ZERO_RANGE), not block-aligned; and with UNMAP.
  Done done = Run(MakeDiscardWriteZeroes(kBlockTypeWriteZeroes, {{3, 2, 0}}));
  if (done.status == kBlockStatusUnsupp) GTEST_SKIP() << "no FALLOC_FL_ZERO_RANGE here";
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(done.len, 1u);
  done = Run(MakeDiscardWriteZeroes(kBlockTypeWriteZeroes, {{100, 9, kBlockWriteZeroesUnmap}}));
  EXPECT_EQ(done.status, kBlockStatusOk);
  EXPECT_EQ(FileBytes(2 * kSectorSize, kSectorSize), Expected(2 * kSectorSize, kSectorSize));
  EXPECT_EQ(FileBytes(3 * kSectorSize, 2 * kSectorSize), std::vector<uint8_t>(2 * kSectorSize, 0));
  EXPECT_EQ(FileBytes(5 * kSectorSize, kSectorSize), Expected(5 * kSectorSize, kSectorSize));
  EXPECT_EQ(FileBytes(100 * kSectorSize, 9 * kSectorSize),
            std::vector<uint8_t>(9 * kSectorSize, 0));
  EXPECT_EQ(FileBytes(109 * kSectorSize, kSectorSize), Expected(109 * kSectorSize, kSectorSize));
}

TEST_P(BlockTest, DiscardAndWriteZeroesValidation) {
  Start();
  // Discard with UNMAP, or any unknown flag: UNSUPP (virtio 1.2 §5.2.6.2).
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, {{0, 8, kBlockWriteZeroesUnmap}})).status,
            kBlockStatusUnsupp);
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeWriteZeroes, {{0, 8, 2}})).status,
            kBlockStatusUnsupp);
  // Out of range, wrapping, too long, too many segments, a partial segment.
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, {{kImageSectors - 1, 2, 0}})).status,
            kBlockStatusIoErr);
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, {{UINT64_MAX - 1, 4, 0}})).status,
            kBlockStatusIoErr);
  EXPECT_EQ(
      Run(MakeDiscardWriteZeroes(kBlockTypeWriteZeroes, {{0, Block::kMaxDiscardSectors + 1, 0}}))
          .status,
      kBlockStatusIoErr);
  std::vector<VirtioBlockDiscardWriteZeroes> many(Block::kMaxDiscardSegments + 1, {0, 1, 0});
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, many)).status, kBlockStatusIoErr);
  Request partial = MakeDiscardWriteZeroes(kBlockTypeDiscard, {{0, 8, 0}});
  partial.buffers[1].len = 12;
  EXPECT_EQ(Run(partial).status, kBlockStatusIoErr);
  // Nothing was discarded by the refused requests (one bad segment fails the whole request).
  std::vector<VirtioBlockDiscardWriteZeroes> mixed = {{0, 8, 0}, {kImageSectors, 1, 0}};
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, mixed)).status, kBlockStatusIoErr);
  EXPECT_EQ(FileBytes(0, 8 * kSectorSize), Expected(0, 8 * kSectorSize));
}

TEST_P(BlockTest, ReadOnly) {
  BlockOptions options = Options();
  options.read_only = true;
  Start(options);
  EXPECT_NE(block_->device_features() & kBlockFeatureRo, 0u);
  EXPECT_EQ(block_->device_features() & (kBlockFeatureDiscard | kBlockFeatureWriteZeroes), 0u);
  EXPECT_EQ(Run(MakeWrite(0, std::vector<uint8_t>(kSectorSize, 0))).status, kBlockStatusIoErr);
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, {{0, 8, 0}})).status, kBlockStatusIoErr);
  EXPECT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeWriteZeroes, {{0, 8, 0}})).status,
            kBlockStatusIoErr);
  EXPECT_EQ(FileBytes(0, 8 * kSectorSize), Expected(0, 8 * kSectorSize));
  Request read = MakeRead(0, 1);
  EXPECT_EQ(Run(read).status, kBlockStatusOk);
  EXPECT_EQ(GuestBytes(read.data, kSectorSize), Expected(0, kSectorSize));
  EXPECT_EQ(Run(Make(kBlockTypeFlush, 0, 0, false)).status, kBlockStatusOk);
}

TEST_P(BlockTest, OutOfRangeSectors) {
  Start();
  EXPECT_EQ(Run(MakeRead(kImageSectors - 1, 2)).status, kBlockStatusIoErr);
  EXPECT_EQ(Run(MakeRead(kImageSectors, 1)).status, kBlockStatusIoErr);
  // sector * 512 and sector + count would wrap.
  EXPECT_EQ(Run(MakeRead(UINT64_MAX, 1)).status, kBlockStatusIoErr);
  EXPECT_EQ(Run(MakeRead(UINT64_MAX / kSectorSize + 1, 1)).status, kBlockStatusIoErr);
  EXPECT_EQ(Run(MakeWrite(kImageSectors, std::vector<uint8_t>(kSectorSize, 1))).status,
            kBlockStatusIoErr);
  // The file did not grow.
  struct stat st;
  ASSERT_EQ(::stat(path_.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), kImageSectors * kSectorSize + kImageTail);
}

TEST_P(BlockTest, MalformedRequests) {
  Start();
  // A header shorter than 16 bytes.
  Request short_header = MakeRead(0, 1);
  short_header.buffers[0].len = 8;
  EXPECT_EQ(Run(short_header).status, kBlockStatusIoErr);
  // No header at all: only writable buffers.
  Request no_header = MakeRead(0, 1);
  no_header.buffers.erase(no_header.buffers.begin());
  EXPECT_EQ(Run(no_header).status, kBlockStatusIoErr);
  // Data that is not a whole number of sectors.
  EXPECT_EQ(Run(Make(kBlockTypeIn, 0, 100, true)).status, kBlockStatusIoErr);
  EXPECT_EQ(Run(Make(kBlockTypeOut, 0, 513, false)).status, kBlockStatusIoErr);
  // Unknown types, including the legacy SCSI command and GET_LIFETIME.
  for (uint32_t type : {2u, 10u, 99u, 0x80000001u}) {
    EXPECT_EQ(Run(Make(type, 0, kSectorSize, true)).status, kBlockStatusUnsupp) << type;
  }
  // The device still works: a bad request is not a bad ring.
  EXPECT_EQ(Run(MakeRead(0, 1)).status, kBlockStatusOk);
  EXPECT_EQ(interrupt_.needs_reset_count(), 0);
}

TEST_P(BlockTest, WrongBufferDirection) {
  Start();
  // IN into device-readable data; OUT from device-writable data.
  Request read = Make(kBlockTypeIn, 0, kSectorSize, false);
  ASSERT_TRUE(memory_.Write(read.data, std::vector<uint8_t>(kSectorSize, 0x5a)).ok());
  EXPECT_EQ(Run(read).status, kBlockStatusIoErr);
  EXPECT_EQ(GuestBytes(read.data, kSectorSize), std::vector<uint8_t>(kSectorSize, 0x5a));
  EXPECT_EQ(Run(Make(kBlockTypeOut, 0, kSectorSize, true)).status, kBlockStatusIoErr);
  EXPECT_EQ(FileBytes(0, kSectorSize), Expected(0, kSectorSize));
}

TEST_P(BlockTest, ChainWithoutStatusByteIsReturnedEmpty) {
  Start();
  Request request = MakeWrite(0, std::vector<uint8_t>(kSectorSize, 0));
  request.buffers.pop_back();  // no writable buffer at all
  uint16_t head = Add(request);
  Kick();
  std::map<uint32_t, uint32_t> used = WaitUsed(1);
  ASSERT_TRUE(used.contains(head));
  EXPECT_EQ(used[head], 0u);
  EXPECT_EQ(FileBytes(0, kSectorSize), Expected(0, kSectorSize));  // and not executed
  EXPECT_EQ(Run(MakeRead(0, 1)).status, kBlockStatusOk);
}

TEST_P(BlockTest, QueueErrorStopsTheDeviceUntilReset) {
  Start();
  Request bad = MakeRead(0, 1);
  bad.buffers[1].addr = kMemorySize;  // not guest RAM: Queue::Pop() fails
  Add(bad);
  Kick();
  Request good = MakeRead(0, 1);
  Add(good);
  Kick();
  EXPECT_TRUE(interrupt_.WaitForNeedsReset());  // DEVICE_NEEDS_RESET, once
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(ring_->used_idx(), 0);
  EXPECT_EQ(StatusOf(good), 0xff);
  EXPECT_EQ(interrupt_.needs_reset_count(), 1);
  block_->Reset();
  Activate();
  EXPECT_EQ(Run(MakeRead(0, 1)).status, kBlockStatusOk);
  EXPECT_EQ(interrupt_.needs_reset_count(), 1);
}

TEST_P(BlockTest, MergesSequentialRequests) {
  Start();
  // Four reads of sectors 40..47 in one batch, then four writes of 48..55.
  std::vector<Request> reads;
  for (uint64_t i = 0; i < 4; ++i) reads.push_back(MakeRead(40 + 2 * i, 2));
  std::vector<Request> writes;
  for (uint64_t i = 0; i < 4; ++i) {
    writes.push_back(MakeWrite(48 + 2 * i, std::vector<uint8_t>(2 * kSectorSize, 0x10 + i)));
  }
  for (const Request& request : reads) Add(request);
  for (const Request& request : writes) Add(request);
  Kick();
  WaitUsed(8);
  BlockCounters counters = block_->Counters();
  EXPECT_EQ(counters.merged_requests, 6u);
  // Merged requests count one by one.
  EXPECT_EQ(counters.read_count, 4u);
  EXPECT_EQ(counters.read_bytes, 8 * kSectorSize);
  EXPECT_EQ(counters.write_count, 4u);
  EXPECT_EQ(counters.write_bytes, 8 * kSectorSize);
  for (uint64_t i = 0; i < 4; ++i) {
    EXPECT_EQ(StatusOf(reads[i]), kBlockStatusOk);
    EXPECT_EQ(GuestBytes(reads[i].data, 2 * kSectorSize),
              Expected((40 + 2 * i) * kSectorSize, 2 * kSectorSize));
    EXPECT_EQ(StatusOf(writes[i]), kBlockStatusOk);
    EXPECT_EQ(FileBytes((48 + 2 * i) * kSectorSize, 2 * kSectorSize),
              std::vector<uint8_t>(2 * kSectorSize, 0x10 + i));
  }
  // Not adjacent, or not the same direction: not merged.
  Add(MakeRead(0, 1));
  Add(MakeRead(2, 1));
  Add(MakeWrite(3, std::vector<uint8_t>(kSectorSize, 1)));
  Kick();
  WaitUsed(3);
  EXPECT_EQ(block_->Counters().merged_requests, 6u);
}

TEST_P(BlockTest, ShortMergedReadFailsOnlyUncoveredRequests) {
  Start();
  // The image shrinks under the device: requests past the new end fail, earlier ones succeed.
  ASSERT_EQ(::truncate(path_.c_str(), 64 * kSectorSize + 100), 0);
  std::vector<Request> reads;
  for (uint64_t i = 0; i < 4; ++i) reads.push_back(MakeRead(62 + i, 1));
  for (const Request& request : reads) Add(request);
  Kick();
  WaitUsed(4);
  BlockCounters counters = block_->Counters();
  EXPECT_EQ(counters.merged_requests, 3u);
  EXPECT_EQ(counters.read_count, 2u);
  EXPECT_EQ(counters.read_bytes, 2 * kSectorSize);
  EXPECT_EQ(counters.execute_fails, 2u);
  EXPECT_EQ(StatusOf(reads[0]), kBlockStatusOk);
  EXPECT_EQ(StatusOf(reads[1]), kBlockStatusOk);
  EXPECT_EQ(StatusOf(reads[2]), kBlockStatusIoErr);
  EXPECT_EQ(StatusOf(reads[3]), kBlockStatusIoErr);
  EXPECT_EQ(GuestBytes(reads[1].data, kSectorSize), Expected(63 * kSectorSize, kSectorSize));
}

TEST_P(BlockTest, MoreRequestsThanOperationsInFlight) {
  Start();
  // 250 requests that cannot be merged (every other sector), more than io_uring may have in
  // flight, in one batch; with EVENT_IDX.
  std::vector<Request> reads;
  for (uint64_t i = 0; i < 250; ++i) reads.push_back(MakeRead(2 * i, 1));
  for (const Request& request : reads) Add(request, /*indirect=*/true);
  Kick();
  WaitUsed(250);
  for (uint64_t i = 0; i < reads.size(); ++i) {
    ASSERT_EQ(StatusOf(reads[i]), kBlockStatusOk) << i;
    ASSERT_EQ(GuestBytes(reads[i].data, kSectorSize), Expected(2 * i * kSectorSize, kSectorSize));
  }
  EXPECT_EQ(block_->Counters().merged_requests, 0u);
  EXPECT_EQ(block_->Counters().read_count, 250u);
}

TEST_P(BlockTest, CountsRequestsByTypeAndOutcome) {
  BlockOptions options = Options();
  options.serial = "disk";
  Start(options);
  EXPECT_EQ(block_->Metrics(), nlohmann::json({{"read_count", 0},
                                               {"write_count", 0},
                                               {"flush_count", 0},
                                               {"discard_count", 0},
                                               {"write_zeroes_count", 0},
                                               {"get_id_count", 0},
                                               {"read_bytes", 0},
                                               {"write_bytes", 0},
                                               {"invalid_reqs_count", 0},
                                               {"execute_fails", 0},
                                               {"merged_requests", 0}}));
  ASSERT_EQ(Run(MakeRead(3, 3)).status, kBlockStatusOk);
  ASSERT_EQ(Run(MakeRead(0, 1)).status, kBlockStatusOk);
  ASSERT_EQ(Run(MakeWrite(10, std::vector<uint8_t>(2 * kSectorSize, 1))).status, kBlockStatusOk);
  ASSERT_EQ(Run(Make(kBlockTypeFlush, 0, 0, false)).status, kBlockStatusOk);
  ASSERT_EQ(Run(Make(kBlockTypeGetId, 0, kBlockIdBytes, true)).status, kBlockStatusOk);
  ASSERT_EQ(Run(MakeDiscardWriteZeroes(kBlockTypeDiscard, {{8, 16, 0}})).status, kBlockStatusOk);
  // UNSUPP where the file system cannot zero a range: an execution failure.
  bool zeroed =
      Run(MakeDiscardWriteZeroes(kBlockTypeWriteZeroes, {{3, 2, 0}})).status == kBlockStatusOk;
  // Refused: past the capacity, an unknown type, no status byte, a write of a partial sector.
  ASSERT_EQ(Run(MakeRead(kImageSectors, 1)).status, kBlockStatusIoErr);
  ASSERT_EQ(Run(Make(99, 0, kSectorSize, true)).status, kBlockStatusUnsupp);
  Request no_status = MakeRead(0, 1);
  no_status.buffers.pop_back();
  no_status.buffers.pop_back();
  Add(no_status);
  Kick();
  WaitUsed(1);
  ASSERT_EQ(Run(Make(kBlockTypeOut, 0, 100, false)).status, kBlockStatusIoErr);
  // Failed: a read past the end of an image that shrank under the device.
  ASSERT_EQ(::truncate(path_.c_str(), 64 * kSectorSize), 0);
  ASSERT_EQ(Run(MakeRead(100, 1)).status, kBlockStatusIoErr);

  BlockCounters counters = block_->Counters();
  EXPECT_EQ(counters.read_count, 2u);
  EXPECT_EQ(counters.read_bytes, 4 * kSectorSize);
  EXPECT_EQ(counters.write_count, 1u);
  EXPECT_EQ(counters.write_bytes, 2 * kSectorSize);
  EXPECT_EQ(counters.flush_count, 1u);
  EXPECT_EQ(counters.get_id_count, 1u);
  EXPECT_EQ(counters.discard_count, 1u);
  EXPECT_EQ(counters.write_zeroes_count, zeroed ? 1u : 0u);
  EXPECT_EQ(counters.invalid_reqs_count, 4u);
  EXPECT_EQ(counters.execute_fails, zeroed ? 1u : 2u);
  EXPECT_EQ(counters.merged_requests, 0u);
  nlohmann::json metrics = block_->Metrics();
  EXPECT_EQ(metrics["read_bytes"], 4 * kSectorSize);
  EXPECT_EQ(metrics["invalid_reqs_count"], 4);
  EXPECT_EQ(metrics.size(), 11u);

  // The counters outlive a reset of the device.
  block_->Reset();
  Activate();
  ASSERT_EQ(Run(MakeRead(1, 1)).status, kBlockStatusOk);
  EXPECT_EQ(block_->Counters().read_count, 3u);
}

TEST_P(BlockTest, EventIdx) {
  event_idx_ = true;
  Start();
  Request request = MakeRead(1, 1);
  EXPECT_EQ(Run(request).status, kBlockStatusOk);
  EXPECT_EQ(ring_->avail_event(), 1);  // the device asked to be notified of the next one
  EXPECT_EQ(Run(MakeRead(2, 1)).status, kBlockStatusOk);
}

TEST_P(BlockTest, ResetWithIoInFlightLeavesGuestMemoryAlone) {
  Start();
  // Large reads into buffers marked 0x77.
  std::vector<Request> reads;
  for (uint64_t i = 0; i < 16; ++i) {
    reads.push_back(MakeRead(i * 512, 512));  // 256 KiB each
    ASSERT_TRUE(memory_.Write(reads.back().data, std::vector<uint8_t>(256 << 10, 0x77)).ok());
  }
  for (const Request& request : reads) Add(request);
  Kick();
  block_->Reset();
  std::vector<uint8_t> snapshot = GuestBytes(0, next_gpa_);
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(GuestBytes(0, next_gpa_), snapshot);
  // The device works again after the driver sets it up anew.
  Activate();
  Request read = MakeRead(5, 1);
  EXPECT_EQ(Run(read).status, kBlockStatusOk);
  EXPECT_EQ(GuestBytes(read.data, kSectorSize), Expected(5 * kSectorSize, kSectorSize));
}

TEST_P(BlockTest, InactiveQueueAndBadActivation) {
  Start();
  block_->Reset();
  // Two queues: refused.
  std::vector<Queue> two;
  two.emplace_back(Block::kQueueSize);
  two.emplace_back(Block::kQueueSize);
  ActivateContext context;
  context.memory = &memory_;
  context.queues = &two;
  context.queue_events = queue_events_;
  context.interrupt = &interrupt_;
  context.loop = loop_.get();
  Status status = block_->Activate(context);
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.error().errno_value(), EINVAL);
  // A queue the driver did not enable: nothing is processed, nothing breaks.
  std::vector<Queue> disabled;
  disabled.emplace_back(Block::kQueueSize);
  context.queues = &disabled;
  ASSERT_TRUE(block_->Activate(context).ok());
  Kick();
  std::this_thread::sleep_for(std::chrono::milliseconds(20));
  block_->Reset();
}

TEST_P(BlockTest, SeveralDisks) {
  Start();
  // A second disk on its own image, on the same loop.
  std::string other_path = ::testing::TempDir() + "tern_block_test_other_XXXXXX";
  int fd = ::mkstemp(other_path.data());
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::ftruncate(fd, 3 * kSectorSize), 0);
  ::close(fd);
  BlockOptions options = Options();
  options.path = other_path;
  Result<std::unique_ptr<Block>> other = Block::Create(options);
  ASSERT_TRUE(other.ok());
  EXPECT_EQ((*other)->capacity(), 3u);
  EXPECT_EQ(block_->capacity(), kImageSectors);
  // The same image twice for writing is refused; read-only sharing is fine.
  Result<std::unique_ptr<Block>> again = Block::Create(Options());
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().errno_value(), EWOULDBLOCK);
  options.read_only = true;
  other->reset();
  Result<std::unique_ptr<Block>> reader = Block::Create(options);
  EXPECT_TRUE(reader.ok());
  EXPECT_TRUE(Block::Create(options).ok());
  ::unlink(other_path.c_str());
  EXPECT_EQ(Run(MakeRead(0, 1)).status, kBlockStatusOk);
}

TEST_P(BlockTest, MissingImage) {
  BlockOptions options = Options();
  options.path = path_ + ".missing";
  Result<std::unique_ptr<Block>> block = Block::Create(options);
  ASSERT_FALSE(block.ok());
  EXPECT_EQ(block.error().errno_value(), ENOENT);
}

}  // namespace
}  // namespace tern::virtio
