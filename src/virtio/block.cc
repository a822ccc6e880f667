// virtio-blk request parsing (virtio 1.2 §5.2.6), the raw image backend on io_uring or
// synchronous system calls, and request merging.
#include "virtio/block.h"

#include <fcntl.h>
#include <liburing.h>
#include <limits.h>
#include <spdlog/spdlog.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace tern::virtio {
namespace {

constexpr uint64_t kHeaderBytes = sizeof(VirtioBlockHeader);

// The GET_ID string: `serial`, or "<st_dev>-<st_ino>" in hex, zero-padded to kBlockIdBytes.
std::array<char, kBlockIdBytes> MakeId(const std::string& serial, const struct stat& st) {
  char text[64];
  if (serial.empty()) {
    std::snprintf(text, sizeof(text), "%" PRIx64 "-%" PRIx64, static_cast<uint64_t>(st.st_dev),
                  static_cast<uint64_t>(st.st_ino));
  } else {
    std::snprintf(text, sizeof(text), "%s", serial.c_str());
  }
  std::array<char, kBlockIdBytes> id = {};
  std::copy_n(text, std::min(std::strlen(text), id.size()), id.begin());
  return id;
}

}  // namespace

Result<std::unique_ptr<Block>> Block::Create(const BlockOptions& options) {
  if (options.serial.size() > kBlockIdBytes) {
    return Error("virtio-blk: serial is longer than 20 bytes", EINVAL);
  }
  Fd image(::open(options.path.c_str(), (options.read_only ? O_RDONLY : O_RDWR) | O_CLOEXEC));
  if (!image.valid()) return Error::FromErrno("open " + options.path);
  if (::flock(image.get(), (options.read_only ? LOCK_SH : LOCK_EX) | LOCK_NB) < 0) {
    return Error::FromErrno("flock " + options.path);
  }
  off_t size = ::lseek(image.get(), 0, SEEK_END);  // also right for block devices
  struct stat st;
  if (size < 0 || ::fstat(image.get(), &st) < 0) return Error::FromErrno("stat " + options.path);
  uint32_t block_sectors = std::max<uint32_t>(1, st.st_blksize / kSectorSize);
  std::unique_ptr<Block> block(new Block(std::move(image), options.read_only,
                                         MakeId(options.serial, st), size / kSectorSize,
                                         block_sectors));
  if (options.allow_io_uring) block->SetUpIoUring();
  return block;
}

Block::Block(Fd image, bool read_only, std::array<char, kBlockIdBytes> id, uint64_t capacity,
             uint32_t block_sectors)
    : image_(std::move(image)), read_only_(read_only), id_(id) {
  features_ = kCommonFeatures | kBlockFeatureSegMax | kBlockFeatureBlkSize | kBlockFeatureFlush |
              (read_only ? kBlockFeatureRo : kBlockFeatureDiscard | kBlockFeatureWriteZeroes);
  config_.capacity = capacity;
  config_.seg_max = kQueueSize - 2;  // a chain without indirect descriptors: header and status
  config_.blk_size = kSectorSize;
  config_.num_queues = 1;
  config_.max_discard_sectors = kMaxDiscardSectors;
  config_.max_discard_seg = kMaxDiscardSegments;
  config_.discard_sector_alignment = block_sectors;
  config_.max_write_zeroes_sectors = kMaxDiscardSectors;
  config_.max_write_zeroes_seg = kMaxDiscardSegments;
  config_.write_zeroes_may_unmap = 1;
  requests_.resize(kMaxRequests);
  for (uint32_t i = kMaxRequests; i > 0; --i) free_requests_.push_back(i - 1);
  ops_.resize(kRingEntries);
  for (uint32_t i = kRingEntries; i > 0; --i) free_ops_.push_back(i - 1);
}

void Block::SetUpIoUring() {
  auto ring = std::make_unique<io_uring>();
  if (int r = io_uring_queue_init(kRingEntries, ring.get(), 0); r < 0) {
    spdlog::warn("virtio-blk: io_uring: {}; using synchronous I/O", std::strerror(-r));
    return;
  }
  io_uring_probe* probe = io_uring_get_probe_ring(ring.get());
  // IORING_OP_FALLOCATE (Linux 5.6) is the newest operation used.
  bool supported = probe != nullptr && io_uring_opcode_supported(probe, IORING_OP_FALLOCATE);
  if (probe != nullptr) io_uring_free_probe(probe);
  Result<EventFd> event = EventFd::Create();
  if (!supported || !event.ok() || io_uring_register_eventfd(ring.get(), event->fd()) < 0) {
    spdlog::warn("virtio-blk: io_uring lacks fallocate or an eventfd; using synchronous I/O");
    io_uring_queue_exit(ring.get());
    return;
  }
  ring_ = std::move(ring);
  uring_event_ = std::move(event).value();
}

Block::~Block() {
  Reset();
  if (ring_) io_uring_queue_exit(ring_.get());
}

void Block::ReadConfig(uint64_t offset, std::span<uint8_t> data) {
  std::fill(data.begin(), data.end(), 0);
  if (offset >= sizeof(config_)) return;
  size_t n = std::min<uint64_t>(data.size(), sizeof(config_) - offset);
  std::memcpy(data.data(), reinterpret_cast<const uint8_t*>(&config_) + offset, n);
}

Status Block::Activate(const ActivateContext& context) {
  TERN_RETURN_IF_ERROR(CheckActivateContext("virtio-blk", context, 1));
  memory_ = context.memory;
  queue_ = &context.queues->front();
  queue_event_ = &context.queue_events.front();
  interrupt_ = context.interrupt;
  loop_ = context.loop;
  broken_ = false;
  used_added_ = false;
  warned_unparseable_ = false;
  active_ = true;
  if (!queue_->ready()) return Ok();  // the driver did not enable it: nothing to serve
  std::vector<std::pair<int, EventLoop::Handler>> watches;
  if (ring_) watches.emplace_back(uring_event_->fd(), [this] { OnCompletions(); });
  watches.emplace_back(queue_event_->fd(), [this] { OnQueueEvent(); });
  for (auto& [fd, handler] : watches) {
    if (Status status = loop_->Add(fd, std::move(handler)); !status.ok()) {
      Reset();
      return status;
    }
    watched_fds_.push_back(fd);
  }
  return Ok();
}

void Block::Reset() {
  if (!active_) return;
  loop_->RunSync([this] {
    for (int fd : watched_fds_) (void)loop_->Remove(fd);
    watched_fds_.clear();
    DrainInFlight();
  });
  active_ = false;
  memory_ = nullptr;
  queue_ = nullptr;
  queue_event_ = nullptr;
  interrupt_ = nullptr;
  loop_ = nullptr;
}

Status Block::Quiesce() {
  if (!active_) return Ok();
  loop_->RunSync([this] {
    SubmitPending();
    WaitForOps(/*complete=*/true);
    NotifyUsed();
  });
  return Ok();
}

void Block::WaitForOps(bool complete) {
  if (ring_) (void)io_uring_submit(ring_.get());
  while (ops_in_flight_ > 0) {
    io_uring_cqe* cqe = nullptr;
    int r = io_uring_wait_cqe(ring_.get(), &cqe);
    if (r == -EINTR) continue;
    if (r < 0) {
      // Returning would let the kernel write guest memory the VMM may be about to free.
      spdlog::critical("virtio-blk: io_uring_wait_cqe: {}", std::strerror(-r));
      std::abort();
    }
    const uint64_t op = io_uring_cqe_get_data64(cqe);
    const int32_t result = cqe->res;
    io_uring_cqe_seen(ring_.get(), cqe);
    --ops_in_flight_;
    if (complete) FinishOp(static_cast<uint32_t>(op), result);
  }
}

void Block::DrainInFlight() {
  pending_op_.reset();
  WaitForOps(/*complete=*/false);
  // The requests are abandoned: the driver reset the queue they came from.
  free_requests_.clear();
  for (uint32_t i = kMaxRequests; i > 0; --i) free_requests_.push_back(i - 1);
  free_ops_.clear();
  for (uint32_t i = kRingEntries; i > 0; --i) free_ops_.push_back(i - 1);
}

void Block::OnQueueEvent() {
  (void)queue_event_->Read();
  ProcessQueue();
}

void Block::OnCompletions() {
  (void)uring_event_->Read();
  unsigned head;
  unsigned count = 0;
  io_uring_cqe* cqe;
  io_uring_for_each_cqe(ring_.get(), head, cqe) {
    FinishOp(static_cast<uint32_t>(io_uring_cqe_get_data64(cqe)), cqe->res);
    ++count;
  }
  io_uring_cq_advance(ring_.get(), count);
  ops_in_flight_ -= count;
  ProcessQueue();
}

void Block::ProcessQueue() {
  // Each round pops a request or re-enables notifications. A driver that keeps adding requests
  // (which the synchronous backend completes at once) could make that go on forever: after
  // twice the queue size, other descriptors get their turn and the queue event brings it back.
  for (uint32_t round = 0; !broken_ && CanStartRequest(); ++round) {
    if (round == 2u * queue_->size()) {
      if (Status status = queue_event_->Write(); !status.ok()) MarkBroken(status.error());
      break;
    }
    Result<std::optional<DescriptorChain>> chain = queue_->Pop(*memory_);
    if (!chain.ok()) {
      MarkBroken(chain.error());
      break;
    }
    if (chain->has_value()) {
      StartRequest(**chain);
      continue;
    }
    Result<bool> more = queue_->EnableNotification(*memory_);
    if (!more.ok()) MarkBroken(more.error());
    if (!more.ok() || !*more) break;
  }
  SubmitPending();
  if (ring_ && io_uring_sq_ready(ring_.get()) > 0) {
    if (int r = io_uring_submit(ring_.get()); r < 0) {
      MarkBroken(Error("io_uring_submit: " + std::string(std::strerror(-r)), -r));
    }
  }
  NotifyUsed();
}

bool Block::CanStartRequest() const {
  // A request takes one request slot and at most kMaxDiscardSegments operations.
  return !free_requests_.empty() && free_ops_.size() >= kMaxDiscardSegments;
}

void Block::StartRequest(const DescriptorChain& chain) {
  Result<std::vector<iovec>> readable = ReadableIovecs(*memory_, chain);
  Result<std::vector<iovec>> writable = WritableIovecs(*memory_, chain);
  scratch_.clear();
  if (!readable.ok() || !writable.ok() || chain.writable_bytes == 0 ||
      !SliceIovecs(*writable, chain.writable_bytes - 1, 1, scratch_)) {
    if (!warned_unparseable_) {
      spdlog::warn("virtio-blk: dropping a request that has no status byte");
      warned_unparseable_ = true;
    }
    counters_.invalid_reqs_count.Add();
    if (Status status = queue_->AddUsed(*memory_, chain.head, 0); !status.ok()) {
      MarkBroken(status.error());
    }
    used_added_ = true;
    return;
  }
  uint32_t index = free_requests_.back();
  free_requests_.pop_back();
  Request& request = requests_[index];
  request.head = chain.head;
  request.used_len = static_cast<uint32_t>(std::min<uint64_t>(chain.writable_bytes, UINT32_MAX));
  request.status_byte = static_cast<uint8_t*>(scratch_.front().iov_base);
  request.status = kBlockStatusOk;
  request.references = 1;  // held while starting: synchronous I/O may finish parts meanwhile
  request.type = 0;
  request.data_bytes = 0;
  readable_ = std::move(readable).value();
  writable_ = std::move(writable).value();
  // Dispatch() refuses a request (a status other than OK) before starting any I/O for it.
  uint8_t status = Dispatch(chain, index);
  request.invalid = status != kBlockStatusOk;
  if (request.status == kBlockStatusOk) request.status = status;
  Release(index);
}

uint8_t Block::Dispatch(const DescriptorChain& chain, uint32_t request) {
  VirtioBlockHeader header;
  if (!CopyFromIovecs(readable_, 0, {reinterpret_cast<uint8_t*>(&header), kHeaderBytes})) {
    return kBlockStatusIoErr;
  }
  requests_[request].type = header.type;
  switch (header.type) {
    case kBlockTypeIn:
      return StartReadWrite(chain, request, header.type, header.sector);
    case kBlockTypeOut:
      if (read_only_) return kBlockStatusIoErr;
      return StartReadWrite(chain, request, header.type, header.sector);
    case kBlockTypeFlush: {
      SubmitPending();
      uint32_t op = NewOp(OpKind::kFlush, header.type, 0, 0);
      AddPart(op, request, 0);
      SubmitOp(op);
      return kBlockStatusOk;
    }
    case kBlockTypeGetId:
      return GetId(chain);
    case kBlockTypeDiscard:
    case kBlockTypeWriteZeroes:
      if (read_only_) return kBlockStatusIoErr;
      return StartDiscardWriteZeroes(chain, request, header.type);
    default:
      return kBlockStatusUnsupp;
  }
}

bool Block::InRange(uint64_t sector, uint64_t sectors) const {
  return sector <= config_.capacity && sectors <= config_.capacity - sector;
}

uint8_t Block::StartReadWrite(const DescriptorChain& chain, uint32_t request, uint32_t type,
                              uint64_t sector) {
  bool write = type == kBlockTypeOut;
  uint64_t readable_data = chain.readable_bytes - kHeaderBytes;
  uint64_t writable_data = chain.writable_bytes - 1;
  uint64_t length = write ? readable_data : writable_data;
  uint64_t wrong_direction = write ? writable_data : readable_data;
  if (wrong_direction != 0 || length % kSectorSize != 0 || !InRange(sector, length / kSectorSize)) {
    return kBlockStatusIoErr;
  }
  requests_[request].data_bytes = length;
  if (length == 0) return kBlockStatusOk;
  scratch_.clear();
  if (!SliceIovecs(write ? readable_ : writable_, write ? kHeaderBytes : 0, length, scratch_) ||
      scratch_.size() > IOV_MAX) {
    return kBlockStatusIoErr;
  }
  OpKind kind = write ? OpKind::kWrite : OpKind::kRead;
  uint64_t offset = sector * kSectorSize;
  if (pending_op_) {
    const Op& op = ops_[*pending_op_];
    bool follows = op.kind == kind && op.offset + op.length == offset &&
                   op.iovecs.size() + scratch_.size() <= IOV_MAX &&
                   op.length + length <= kMaxMergeBytes;
    if (follows) {
      counters_.merged_requests.Add();
    } else {
      SubmitPending();
    }
  }
  if (!pending_op_) pending_op_ = NewOp(kind, type, offset, 0);
  Op& op = ops_[*pending_op_];
  op.iovecs.insert(op.iovecs.end(), scratch_.begin(), scratch_.end());
  op.length += length;
  AddPart(*pending_op_, request, op.length);
  return kBlockStatusOk;
}

uint8_t Block::StartDiscardWriteZeroes(const DescriptorChain& chain, uint32_t request,
                                       uint32_t type) {
  uint64_t bytes = chain.readable_bytes - kHeaderBytes;
  uint64_t count = bytes / sizeof(VirtioBlockDiscardWriteZeroes);
  if (chain.writable_bytes != 1 || bytes % sizeof(VirtioBlockDiscardWriteZeroes) != 0 ||
      count == 0 || count > kMaxDiscardSegments) {
    return kBlockStatusIoErr;
  }
  std::array<VirtioBlockDiscardWriteZeroes, kMaxDiscardSegments> segments;
  if (!CopyFromIovecs(readable_, kHeaderBytes,
                      {reinterpret_cast<uint8_t*>(segments.data()), bytes})) {
    return kBlockStatusIoErr;
  }
  std::span<const VirtioBlockDiscardWriteZeroes> ranges(segments.data(), count);
  // virtio 1.2 §5.2.6.2: unknown flags, and UNMAP on a discard, get UNSUPP.
  uint32_t known_flags = type == kBlockTypeWriteZeroes ? kBlockWriteZeroesUnmap : 0;
  for (const VirtioBlockDiscardWriteZeroes& range : ranges) {
    if ((range.flags & ~known_flags) != 0) return kBlockStatusUnsupp;
    if (range.num_sectors > kMaxDiscardSectors || !InRange(range.sector, range.num_sectors)) {
      return kBlockStatusIoErr;
    }
  }
  SubmitPending();
  for (const VirtioBlockDiscardWriteZeroes& range : ranges) {
    if (range.num_sectors == 0) continue;
    bool zero_range = type == kBlockTypeWriteZeroes && (range.flags & kBlockWriteZeroesUnmap) == 0;
    uint32_t op = NewOp(OpKind::kFallocate, type, range.sector * kSectorSize,
                        uint64_t{range.num_sectors} * kSectorSize);
    ops_[op].fallocate_mode =
        FALLOC_FL_KEEP_SIZE | (zero_range ? FALLOC_FL_ZERO_RANGE : FALLOC_FL_PUNCH_HOLE);
    AddPart(op, request, 0);
    SubmitOp(op);
  }
  return kBlockStatusOk;
}

uint8_t Block::GetId(const DescriptorChain& chain) {
  uint64_t n = std::min<uint64_t>(chain.writable_bytes - 1, kBlockIdBytes);
  if (!CopyToIovecs(writable_, 0, {reinterpret_cast<const uint8_t*>(id_.data()), n})) {
    return kBlockStatusIoErr;
  }
  return kBlockStatusOk;
}

uint32_t Block::NewOp(OpKind kind, uint32_t type, uint64_t offset, uint64_t length) {
  uint32_t index = free_ops_.back();
  free_ops_.pop_back();
  Op& op = ops_[index];
  op.kind = kind;
  op.request_type = type;
  op.fallocate_mode = 0;
  op.offset = offset;
  op.length = length;
  op.iovecs.clear();
  op.parts.clear();
  return index;
}

void Block::AddPart(uint32_t op, uint32_t request, uint64_t end) {
  ops_[op].parts.emplace_back(request, end);
  ++requests_[request].references;
}

void Block::SubmitPending() {
  if (!pending_op_) return;
  uint32_t op = *pending_op_;
  pending_op_.reset();
  SubmitOp(op);
}

void Block::SubmitOp(uint32_t index) {
  const Op& op = ops_[index];
  if (!ring_) {
    FinishOp(index, ExecuteSync(op));
    return;
  }
  // Operations in flight or queued never outnumber the submission queue entries, so this
  // cannot fail; if it did anyway, the operation fails like one the kernel refused.
  io_uring_sqe* sqe = io_uring_get_sqe(ring_.get());
  if (sqe == nullptr) {
    FinishOp(index, -EBUSY);
    return;
  }
  int fd = image_.get();
  switch (op.kind) {
    case OpKind::kRead:
      io_uring_prep_readv(sqe, fd, op.iovecs.data(), op.iovecs.size(), op.offset);
      break;
    case OpKind::kWrite:
      io_uring_prep_writev(sqe, fd, op.iovecs.data(), op.iovecs.size(), op.offset);
      break;
    case OpKind::kFlush:
      io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
      break;
    case OpKind::kFallocate:
      io_uring_prep_fallocate(sqe, fd, op.fallocate_mode, op.offset, op.length);
      break;
  }
  io_uring_sqe_set_data64(sqe, index);
  ++ops_in_flight_;
}

int64_t Block::ExecuteSync(const Op& op) const {
  int fd = image_.get();
  int iovcnt = static_cast<int>(op.iovecs.size());
  while (true) {
    ssize_t r = 0;
    switch (op.kind) {
      case OpKind::kRead:
        r = ::preadv(fd, op.iovecs.data(), iovcnt, op.offset);
        break;
      case OpKind::kWrite:
        r = ::pwritev(fd, op.iovecs.data(), iovcnt, op.offset);
        break;
      case OpKind::kFlush:
        r = ::fdatasync(fd);
        break;
      case OpKind::kFallocate:
        r = ::fallocate(fd, op.fallocate_mode, op.offset, op.length);
        break;
    }
    if (r >= 0) return r;
    if (errno != EINTR) return -errno;
  }
}

void Block::FinishOp(uint32_t index, int64_t result) {
  const Op& op = ops_[index];
  for (auto [request, end] : op.parts) {
    uint8_t status =
        result >= 0 && static_cast<uint64_t>(result) >= end ? kBlockStatusOk : kBlockStatusIoErr;
    if (result == -EOPNOTSUPP && op.kind == OpKind::kFallocate) {
      // Discarding is a hint; a write-zeroes the file system cannot do, the driver does itself.
      status = op.request_type == kBlockTypeDiscard ? kBlockStatusOk : kBlockStatusUnsupp;
    }
    if (requests_[request].status == kBlockStatusOk) requests_[request].status = status;
    Release(request);
  }
  free_ops_.push_back(index);
}

void Block::Release(uint32_t index) {
  Request& request = requests_[index];
  if (--request.references > 0) return;
  *request.status_byte = request.status;
  Count(request);
  if (Status status = queue_->AddUsed(*memory_, request.head, request.used_len); !status.ok()) {
    MarkBroken(status.error());
  }
  used_added_ = true;
  free_requests_.push_back(index);
}

void Block::Count(const Request& request) {
  if (request.status != kBlockStatusOk) {
    (request.invalid ? counters_.invalid_reqs_count : counters_.execute_fails).Add();
    return;
  }
  switch (request.type) {
    case kBlockTypeIn:
      counters_.read_count.Add();
      counters_.read_bytes.Add(request.data_bytes);
      break;
    case kBlockTypeOut:
      counters_.write_count.Add();
      counters_.write_bytes.Add(request.data_bytes);
      break;
    case kBlockTypeFlush:
      counters_.flush_count.Add();
      break;
    case kBlockTypeDiscard:
      counters_.discard_count.Add();
      break;
    case kBlockTypeWriteZeroes:
      counters_.write_zeroes_count.Add();
      break;
    case kBlockTypeGetId:
      counters_.get_id_count.Add();
      break;
  }
}

BlockCounters Block::Counters() const {
  return BlockCounters{
      .read_count = counters_.read_count.Load(),
      .write_count = counters_.write_count.Load(),
      .flush_count = counters_.flush_count.Load(),
      .discard_count = counters_.discard_count.Load(),
      .write_zeroes_count = counters_.write_zeroes_count.Load(),
      .get_id_count = counters_.get_id_count.Load(),
      .read_bytes = counters_.read_bytes.Load(),
      .write_bytes = counters_.write_bytes.Load(),
      .invalid_reqs_count = counters_.invalid_reqs_count.Load(),
      .execute_fails = counters_.execute_fails.Load(),
      .merged_requests = counters_.merged_requests.Load(),
  };
}

nlohmann::json Block::Metrics() const {
  BlockCounters c = Counters();
  return {{"read_count", c.read_count},
          {"write_count", c.write_count},
          {"flush_count", c.flush_count},
          {"discard_count", c.discard_count},
          {"write_zeroes_count", c.write_zeroes_count},
          {"get_id_count", c.get_id_count},
          {"read_bytes", c.read_bytes},
          {"write_bytes", c.write_bytes},
          {"invalid_reqs_count", c.invalid_reqs_count},
          {"execute_fails", c.execute_fails},
          {"merged_requests", c.merged_requests}};
}

void Block::NotifyUsed() {
  if (!used_added_) return;
  used_added_ = false;
  if (Status status = NotifyIfNeeded(*queue_, 0, *memory_, *interrupt_); !status.ok()) {
    MarkBroken(status.error());
  }
}

void Block::MarkBroken(const Error& error) {
  if (!broken_) FailDevice("virtio-blk", error, *interrupt_);
  broken_ = true;
}

}  // namespace tern::virtio
