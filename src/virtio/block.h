// virtio-blk (virtio 1.2 §5.2): a block device backed by a raw image file or host block device,
// with read, write, flush, get-id, discard and write-zeroes requests and a read-only mode. The
// I/O runs off the vCPU threads: requests are parsed on the device event loop and submitted to
// io_uring (liburing), whose completions come back through an eventfd on the same loop; without
// io_uring (old kernel, seccomp) the loop does the I/O itself with preadv/pwritev.
#pragma once

#include <sys/uio.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "base/event_fd.h"
#include "base/fd.h"
#include "base/result.h"
#include "virtio/virtio_device.h"

struct io_uring;  // <liburing.h>

namespace tern::virtio {

// Feature bits (virtio 1.2 §5.2.3).
inline constexpr uint64_t kBlockFeatureSegMax = 1ull << 2;        // VIRTIO_BLK_F_SEG_MAX
inline constexpr uint64_t kBlockFeatureRo = 1ull << 5;            // VIRTIO_BLK_F_RO
inline constexpr uint64_t kBlockFeatureBlkSize = 1ull << 6;       // VIRTIO_BLK_F_BLK_SIZE
inline constexpr uint64_t kBlockFeatureFlush = 1ull << 9;         // VIRTIO_BLK_F_FLUSH
inline constexpr uint64_t kBlockFeatureDiscard = 1ull << 13;      // VIRTIO_BLK_F_DISCARD
inline constexpr uint64_t kBlockFeatureWriteZeroes = 1ull << 14;  // VIRTIO_BLK_F_WRITE_ZEROES

// Request types (virtio 1.2 §5.2.6).
inline constexpr uint32_t kBlockTypeIn = 0;            // VIRTIO_BLK_T_IN
inline constexpr uint32_t kBlockTypeOut = 1;           // VIRTIO_BLK_T_OUT
inline constexpr uint32_t kBlockTypeFlush = 4;         // VIRTIO_BLK_T_FLUSH
inline constexpr uint32_t kBlockTypeGetId = 8;         // VIRTIO_BLK_T_GET_ID
inline constexpr uint32_t kBlockTypeDiscard = 11;      // VIRTIO_BLK_T_DISCARD
inline constexpr uint32_t kBlockTypeWriteZeroes = 13;  // VIRTIO_BLK_T_WRITE_ZEROES

// Request status values (virtio 1.2 §5.2.6).
inline constexpr uint8_t kBlockStatusOk = 0;      // VIRTIO_BLK_S_OK
inline constexpr uint8_t kBlockStatusIoErr = 1;   // VIRTIO_BLK_S_IOERR
inline constexpr uint8_t kBlockStatusUnsupp = 2;  // VIRTIO_BLK_S_UNSUPP

// VIRTIO_BLK_WRITE_ZEROES_FLAG_UNMAP in virtio_blk_discard_write_zeroes.flags.
inline constexpr uint32_t kBlockWriteZeroesUnmap = 1;

inline constexpr uint64_t kSectorSize = 512;  // the unit of sector numbers and capacity
inline constexpr size_t kBlockIdBytes = 20;   // VIRTIO_BLK_ID_BYTES

// The request header, struct virtio_blk_req up to the data (virtio 1.2 §5.2.6), little-endian.
struct VirtioBlockHeader {
  uint32_t type;
  uint32_t reserved;
  uint64_t sector;
};
static_assert(sizeof(VirtioBlockHeader) == 16);

// One range of a discard or write-zeroes request: struct virtio_blk_discard_write_zeroes.
struct VirtioBlockDiscardWriteZeroes {
  uint64_t sector;
  uint32_t num_sectors;
  uint32_t flags;  // kBlockWriteZeroesUnmap; no other bit is defined
};
static_assert(sizeof(VirtioBlockDiscardWriteZeroes) == 16);

// The configuration space, struct virtio_blk_config (virtio 1.2 §5.2.4) without the zoned
// characteristics (VIRTIO_BLK_F_ZONED is not offered). Little-endian like the x86 host.
struct VirtioBlockConfig {
  uint64_t capacity;  // in 512-byte sectors
  uint32_t size_max;
  uint32_t seg_max;
  uint16_t cylinders;  // geometry
  uint8_t heads;
  uint8_t sectors;
  uint32_t blk_size;
  uint8_t physical_block_exp;  // topology
  uint8_t alignment_offset;
  uint16_t min_io_size;
  uint32_t opt_io_size;
  uint8_t writeback;
  uint8_t unused0;
  uint16_t num_queues;
  uint32_t max_discard_sectors;
  uint32_t max_discard_seg;
  uint32_t discard_sector_alignment;
  uint32_t max_write_zeroes_sectors;
  uint32_t max_write_zeroes_seg;
  uint8_t write_zeroes_may_unmap;
  uint8_t unused1[3];
  uint32_t max_secure_erase_sectors;
  uint32_t max_secure_erase_seg;
  uint32_t secure_erase_sector_alignment;
};
static_assert(sizeof(VirtioBlockConfig) == 72);
static_assert(offsetof(VirtioBlockConfig, max_discard_sectors) == 36);
static_assert(offsetof(VirtioBlockConfig, write_zeroes_may_unmap) == 56);

struct BlockOptions {
  std::string path;  // raw image file or host block device
  // Opens the image O_RDONLY and offers VIRTIO_BLK_F_RO; writes, discards and write-zeroes
  // requests then fail with VIRTIO_BLK_S_IOERR.
  bool read_only = false;
  // The GET_ID string, at most kBlockIdBytes bytes. Empty: "<st_dev>-<st_ino>" of the image in
  // hex, cut to kBlockIdBytes.
  std::string serial;
  // false forces the synchronous backend (the event loop does preadv/pwritev itself).
  bool allow_io_uring = true;
};

// What a virtio-blk device did since Create(), named like Firecracker's block metrics. Each
// request counts once, when it completes: in the counter of its type if it succeeded
// (VIRTIO_BLK_S_OK), else in invalid_reqs_count or execute_fails. Requests that a Reset()
// abandons with their I/O are not counted.
struct BlockCounters {
  uint64_t read_count = 0;          // successful VIRTIO_BLK_T_IN requests
  uint64_t write_count = 0;         // successful VIRTIO_BLK_T_OUT requests
  uint64_t flush_count = 0;         // successful VIRTIO_BLK_T_FLUSH requests
  uint64_t discard_count = 0;       // successful VIRTIO_BLK_T_DISCARD requests
  uint64_t write_zeroes_count = 0;  // successful VIRTIO_BLK_T_WRITE_ZEROES requests
  uint64_t get_id_count = 0;        // successful VIRTIO_BLK_T_GET_ID requests
  uint64_t read_bytes = 0;          // data bytes of the successful reads
  uint64_t write_bytes = 0;         // data bytes of the successful writes
  // Requests refused before any I/O: malformed (no status byte, a short header, data in the
  // wrong direction or not whole sectors, sectors past the capacity, bad discard segments) or
  // writing a read-only disk (IOERR), an unknown type or flag (UNSUPP).
  uint64_t invalid_reqs_count = 0;
  // Requests whose I/O failed or transferred too little (IOERR), or write-zeroes requests the
  // file system cannot do (UNSUPP).
  uint64_t execute_fails = 0;
  // Requests merged into the read or write of the request before them (they count as reads or
  // writes too).
  uint64_t merged_requests = 0;
};

// One virtio-blk device with one request queue of kQueueSize entries.
//
// The image: opened O_CLOEXEC (O_RDWR, or O_RDONLY when read-only) through the page cache, and
// locked with flock(2) (exclusive, or shared when read-only) so that two devices or VMs cannot
// write the same image. Its capacity is its size rounded down to a whole sector (like
// Firecracker: a trailing partial sector is not visible to the guest); it is fixed at Create().
//
// Requests (virtio 1.2 §5.2.6): the header is the first 16 device-readable bytes and the status
// byte is the last device-writable byte, however the driver splits them into descriptors
// (§2.6.4). IN data is every other writable byte, OUT data every other readable byte; a request
// whose data runs in the wrong direction, is not a whole number of sectors, or reaches past the
// capacity (or wraps) fails with IOERR; unknown types get UNSUPP. FLUSH is fdatasync(2): when
// the driver sees its status, every write completed before it was made available is on stable
// storage. DISCARD punches a hole (a file system that cannot is treated as having discarded);
// WRITE_ZEROES uses FALLOC_FL_ZERO_RANGE, or FALLOC_FL_PUNCH_HOLE with the UNMAP flag, and
// answers UNSUPP where the file system supports neither (Linux then writes zeroes itself).
// The used length of a request is every writable byte of its chain, since the status byte
// written last is the last of them. A chain without a writable byte has nowhere to put a
// status: it is returned with used length 0 and otherwise ignored (like Firecracker and Cloud
// Hypervisor). A queue error (Queue::Pop/AddUsed) or a failed notification stops the device
// until the next Reset() and asks the transport for DEVICE_NEEDS_RESET.
//
// In flight: at most kMaxRequests requests, and kRingEntries io_uring operations; the device
// stops popping while either is exhausted and resumes on completions. Requests popped in one
// batch that read (or write) sectors that follow each other are merged into one readv (writev)
// of at most kMaxMergeBytes; each keeps its own status (a short transfer fails only the requests
// it did not cover).
//
// Thread safety: the configuration space is immutable, so ReadConfig/WriteConfig may run on any
// thread. All queue processing and I/O completion happens on the event loop of Activate(); the
// loop must outlive the activation. Counters() and Metrics() may run on any thread.
class Block : public VirtioDevice {
 public:
  static constexpr uint16_t kQueueSize = 256;
  static constexpr uint32_t kMaxRequests = kQueueSize;
  static constexpr unsigned kRingEntries = 128;
  static constexpr uint32_t kMaxDiscardSegments = 16;       // max_discard_seg, max_write_zeroes_seg
  static constexpr uint32_t kMaxDiscardSectors = 1u << 22;  // per segment: 2 GiB
  static constexpr uint64_t kMaxMergeBytes = 2ull << 20;

  // Opens and locks the image. Errors: the failing open/flock/lseek (EWOULDBLOCK: the image is
  // in use), EINVAL for a serial longer than kBlockIdBytes.
  static Result<std::unique_ptr<Block>> Create(const BlockOptions& options);
  ~Block() override;

  uint64_t capacity() const { return config_.capacity; }  // in sectors
  bool uses_io_uring() const { return ring_ != nullptr; }
  // What the device did since Create(). Thread-safe.
  BlockCounters Counters() const;

  uint32_t device_type() const override { return kDeviceTypeBlock; }
  uint64_t device_features() const override { return features_; }
  std::vector<uint16_t> queue_max_sizes() const override { return {kQueueSize}; }
  void ReadConfig(uint64_t offset, std::span<uint8_t> data) override;
  // The configuration space has no driver-writable field (VIRTIO_BLK_F_CONFIG_WCE is not
  // offered): writes are ignored.
  void WriteConfig(uint64_t, std::span<const uint8_t>) override {}
  // Errors: EINVAL unless there is exactly one queue; the event loop's Add() errors.
  Status Activate(const ActivateContext& context) override;
  // Stops watching the queue and io_uring, then waits for the I/O in flight to finish without
  // completing its requests (the driver reset the queue).
  void Reset() override;
  // Waits for the I/O in flight and completes its requests (used ring, notification) on the
  // event loop. Errors: none beyond what the requests' statuses report.
  Status Quiesce() override;
  // Counters() as JSON, with the same names.
  nlohmann::json Metrics() const override;

 private:
  // One popped request: what completing it needs.
  struct Request {
    uint16_t head = 0;
    uint32_t used_len = 0;
    uint8_t* status_byte = nullptr;  // host address of the status byte in guest memory
    uint8_t status = kBlockStatusOk;
    uint32_t references = 0;  // operations not finished, plus one while it is being started
    uint32_t type = 0;        // kBlockType* of its header, once read
    uint64_t data_bytes = 0;  // a read's or write's data
    bool invalid = false;     // refused before any I/O (BlockCounters::invalid_reqs_count)
  };
  // BlockCounters, as the loop thread increments them.
  struct AtomicCounters {
    RelaxedCounter read_count;
    RelaxedCounter write_count;
    RelaxedCounter flush_count;
    RelaxedCounter discard_count;
    RelaxedCounter write_zeroes_count;
    RelaxedCounter get_id_count;
    RelaxedCounter read_bytes;
    RelaxedCounter write_bytes;
    RelaxedCounter invalid_reqs_count;
    RelaxedCounter execute_fails;
    RelaxedCounter merged_requests;
  };
  enum class OpKind { kRead, kWrite, kFlush, kFallocate };
  // One I/O operation: one io_uring SQE or one system call, for one or more requests.
  struct Op {
    OpKind kind = OpKind::kRead;
    uint32_t request_type = 0;  // kBlockType* of its requests
    int fallocate_mode = 0;
    uint64_t offset = 0;  // bytes
    uint64_t length = 0;  // bytes
    std::vector<iovec> iovecs;
    // (request, end): the request succeeds if the operation transferred at least `end` bytes.
    std::vector<std::pair<uint32_t, uint64_t>> parts;
  };

  Block(Fd image, bool read_only, std::array<char, kBlockIdBytes> id, uint64_t capacity,
        uint32_t block_sectors);
  void SetUpIoUring();

  void OnQueueEvent();
  void OnCompletions();
  void ProcessQueue();
  bool CanStartRequest() const;
  void StartRequest(const DescriptorChain& chain);
  uint8_t Dispatch(const DescriptorChain& chain, uint32_t request);
  uint8_t StartReadWrite(const DescriptorChain& chain, uint32_t request, uint32_t type,
                         uint64_t sector);
  uint8_t StartDiscardWriteZeroes(const DescriptorChain& chain, uint32_t request, uint32_t type);
  uint8_t GetId(const DescriptorChain& chain);
  bool InRange(uint64_t sector, uint64_t sectors) const;

  uint32_t NewOp(OpKind kind, uint32_t type, uint64_t offset, uint64_t length);
  // Makes `request` wait for `op`; it succeeds if `op` transfers at least `end` bytes.
  void AddPart(uint32_t op, uint32_t request, uint64_t end);
  void SubmitOp(uint32_t op);
  // Does `op` with a system call; returns what io_uring would: bytes or 0, or -errno.
  int64_t ExecuteSync(const Op& op) const;
  void SubmitPending();
  void FinishOp(uint32_t op, int64_t result);
  void Release(uint32_t request);
  // Counts the completed `request` in counters_.
  void Count(const Request& request);
  // After AddUsed(): the used buffer notification, if the driver wants one (§2.7.10).
  void NotifyUsed();
  // Stops processing until Reset() and reports DEVICE_NEEDS_RESET (once).
  void MarkBroken(const Error& error);
  // Waits for every operation submitted to io_uring; with `complete`, finishes each (its
  // requests go to the used ring), otherwise drops its result. Loop thread only.
  void WaitForOps(bool complete);
  void DrainInFlight();

  const Fd image_;
  const bool read_only_;
  const std::array<char, kBlockIdBytes> id_;
  VirtioBlockConfig config_ = {};
  uint64_t features_ = 0;

  std::unique_ptr<io_uring> ring_;      // null: the synchronous backend
  std::optional<EventFd> uring_event_;  // signalled on io_uring completions

  // Set by Activate(), cleared by Reset().
  bool active_ = false;
  const GuestMemory* memory_ = nullptr;
  Queue* queue_ = nullptr;
  const EventFd* queue_event_ = nullptr;
  VirtioInterrupt* interrupt_ = nullptr;
  EventLoop* loop_ = nullptr;
  std::vector<int> watched_fds_;

  // Loop thread only (or the caller of Activate/Reset while nothing is watched).
  bool broken_ = false;
  bool used_added_ = false;  // AddUsed() since the last notification check
  bool warned_unparseable_ = false;
  std::vector<Request> requests_;
  std::vector<uint32_t> free_requests_;
  std::vector<Op> ops_;
  std::vector<uint32_t> free_ops_;
  std::optional<uint32_t> pending_op_;  // an op still open for merging, not yet submitted
  unsigned ops_in_flight_ = 0;          // submitted to io_uring, not yet completed
  // The request being started: its buffers' host views, and iovecs for a part of them.
  std::vector<iovec> readable_;
  std::vector<iovec> writable_;
  std::vector<iovec> scratch_;

  AtomicCounters counters_;  // incremented on the loop thread, read on any
};

}  // namespace tern::virtio
