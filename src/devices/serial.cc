// The 16550A UART register model (PC16550D datasheet §8) and its host input/output plumbing.
#include "devices/serial.h"

#include <poll.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>

#include "base/json_fields.h"

namespace tern {
namespace {

// Register offsets.
constexpr uint64_t kRbrThr = 0;  // DLL when DLAB
constexpr uint64_t kIer = 1;     // DLM when DLAB
constexpr uint64_t kIirFcr = 2;
constexpr uint64_t kLcr = 3;
constexpr uint64_t kMcr = 4;
constexpr uint64_t kLsr = 5;
constexpr uint64_t kMsr = 6;
constexpr uint64_t kScr = 7;

// IER bits: ERBFI, ETBEI, ELSI, EDSSI. Bits 7:4 are always 0 on a 16550A.
constexpr uint8_t kIerRxData = 0x01;
constexpr uint8_t kIerThrEmpty = 0x02;
constexpr uint8_t kIerLineStatus = 0x04;
constexpr uint8_t kIerModemStatus = 0x08;
constexpr uint8_t kIerMask = 0x0f;

// IIR values.
constexpr uint8_t kIirNone = 0x01;
constexpr uint8_t kIirLineStatus = 0x06;
constexpr uint8_t kIirRxData = 0x04;
constexpr uint8_t kIirThrEmpty = 0x02;
constexpr uint8_t kIirModemStatus = 0x00;
constexpr uint8_t kIirFifoEnabled = 0xc0;

// FCR bits.
constexpr uint8_t kFcrEnable = 0x01;

constexpr uint8_t kLcrDlab = 0x80;

// MCR bits; bits 7:5 are always 0 on a 16550A.
constexpr uint8_t kMcrDtr = 0x01;
constexpr uint8_t kMcrRts = 0x02;
constexpr uint8_t kMcrOut1 = 0x04;
constexpr uint8_t kMcrOut2 = 0x08;
constexpr uint8_t kMcrLoop = 0x10;
constexpr uint8_t kMcrMask = 0x1f;

// LSR bits.
constexpr uint8_t kLsrDataReady = 0x01;
constexpr uint8_t kLsrOverrun = 0x02;
constexpr uint8_t kLsrThrEmpty = 0x20;
constexpr uint8_t kLsrIdle = 0x40;  // TEMT

// MSR bits: line states (7:4) and their deltas (3:0).
constexpr uint8_t kMsrDeltaCts = 0x01;
constexpr uint8_t kMsrDeltaDsr = 0x02;
constexpr uint8_t kMsrTrailingRi = 0x04;
constexpr uint8_t kMsrDeltaDcd = 0x08;
constexpr uint8_t kMsrCts = 0x10;
constexpr uint8_t kMsrDsr = 0x20;
constexpr uint8_t kMsrRi = 0x40;
constexpr uint8_t kMsrDcd = 0x80;

// Interrupt conditions, as bits of Serial::ActiveSourcesLocked().
constexpr uint8_t kSourceLineStatus = 0x01;
constexpr uint8_t kSourceRxData = 0x02;
constexpr uint8_t kSourceThrEmpty = 0x04;
constexpr uint8_t kSourceModemStatus = 0x08;

// Writes one byte to `fd`, waiting out EINTR and EAGAIN. Returns false if it was dropped.
bool WriteByte(int fd, uint8_t byte) {
  while (true) {
    ssize_t n = ::write(fd, &byte, 1);
    if (n == 1) return true;
    if (n < 0 && errno == EINTR) continue;
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
      pollfd pfd = {.fd = fd, .events = POLLOUT, .revents = 0};
      if (::poll(&pfd, 1, -1) < 0 && errno != EINTR) return false;
      continue;
    }
    return false;
  }
}

}  // namespace

Serial::Serial(std::unique_ptr<Interrupt> interrupt, int output_fd)
    : interrupt_(std::move(interrupt)), output_fd_(output_fd) {}

void Serial::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    bool in_range = offset < kRegisterCount && i < kRegisterCount - offset;
    data[i] = in_range ? ReadRegisterLocked(offset + i) : 0;
  }
}

void Serial::Write(uint64_t offset, std::span<const uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset >= kRegisterCount || i >= kRegisterCount - offset) return;
    WriteEffects effects;
    {
      std::lock_guard lock(mutex_);
      uint8_t before = ActiveSourcesLocked();
      effects = WriteRegisterLocked(offset + i, data[i]);
      effects.raise_interrupt |= (ActiveSourcesLocked() & ~before) != 0;
    }
    // Outside the state lock: a stalled output must not block the event loop's QueueInput().
    // A vCPU's accesses are sequential, so its bytes still leave in order.
    if (effects.transmit) Transmit(effects.byte);
    if (effects.raise_interrupt) RaiseInterrupt();
  }
}

size_t Serial::QueueInput(std::span<const uint8_t> bytes) {
  size_t accepted = 0;
  bool raise = false;
  {
    std::lock_guard lock(mutex_);
    accepted = std::min(bytes.size(), InputSpaceLocked());
    rx_.insert(rx_.end(), bytes.begin(), bytes.begin() + accepted);
    raise = accepted > 0 && (ier_ & kIerRxData) != 0;
  }
  if (raise) RaiseInterrupt();
  return accepted;
}

size_t Serial::InputSpace() const {
  std::lock_guard lock(mutex_);
  return InputSpaceLocked();
}

size_t Serial::InputSpaceLocked() const {
  return LoopbackLocked() ? 0 : kInputCapacity - rx_.size();
}

uint8_t Serial::ReadRegisterLocked(uint64_t reg) {
  switch (reg) {
    case kRbrThr: {
      if (DlabLocked()) return dll_;
      if (rx_.empty()) return 0;
      uint8_t byte = rx_.front();
      rx_.pop_front();
      return byte;
    }
    case kIer:
      return DlabLocked() ? dlm_ : ier_;
    case kIirFcr:
      return ReadIirLocked();
    case kLcr:
      return lcr_;
    case kMcr:
      return mcr_;
    case kLsr: {
      uint8_t lsr = kLsrThrEmpty | kLsrIdle;
      if (!rx_.empty()) lsr |= kLsrDataReady;
      if (overrun_) lsr |= kLsrOverrun;
      overrun_ = false;
      return lsr;
    }
    case kMsr: {
      uint8_t msr = ModemLinesLocked() | msr_deltas_;
      msr_deltas_ = 0;
      return msr;
    }
    case kScr:
      return scr_;
    default:
      return 0;
  }
}

uint8_t Serial::ReadIirLocked() {
  uint8_t active = ActiveSourcesLocked();
  uint8_t iir = kIirNone;
  if (active & kSourceLineStatus) {
    iir = kIirLineStatus;
  } else if (active & kSourceRxData) {
    iir = kIirRxData;
  } else if (active & kSourceThrEmpty) {
    iir = kIirThrEmpty;
    thr_empty_pending_ = false;  // reading IIR while it reports THRE clears it
  } else if (active & kSourceModemStatus) {
    iir = kIirModemStatus;
  }
  return fifo_enabled_ ? (iir | kIirFifoEnabled) : iir;
}

Serial::WriteEffects Serial::WriteRegisterLocked(uint64_t reg, uint8_t value) {
  switch (reg) {
    case kRbrThr:
      if (!DlabLocked()) return WriteThrLocked(value);
      dll_ = value;
      break;
    case kIer:
      if (DlabLocked()) {
        dlm_ = value;
      } else {
        WriteIerLocked(value);
      }
      break;
    case kIirFcr:
      WriteFcrLocked(value);
      break;
    case kLcr:
      lcr_ = value;
      break;
    case kMcr:
      WriteMcrLocked(value);
      break;
    case kScr:
      scr_ = value;
      break;
    default:  // LSR and MSR are read-only here
      break;
  }
  return {};
}

Serial::WriteEffects Serial::WriteThrLocked(uint8_t value) {
  WriteEffects effects;
  if (LoopbackLocked()) {
    if (rx_.size() < kInputCapacity) {
      rx_.push_back(value);
      effects.raise_interrupt = (ier_ & kIerRxData) != 0;
    } else {
      overrun_ = true;  // the new byte is lost, as in a full FIFO
    }
  } else {
    effects.transmit = output_fd_ >= 0;
    effects.byte = value;
  }
  // The byte left THR at once: THR is empty again and its interrupt is re-asserted.
  thr_empty_pending_ = true;
  effects.raise_interrupt |= (ier_ & kIerThrEmpty) != 0;
  return effects;
}

void Serial::WriteIerLocked(uint8_t value) {
  uint8_t old = ier_;
  ier_ = value & kIerMask;
  // Enabling ETBEI while THR is empty (always) makes the THRE interrupt pending.
  if ((ier_ & kIerThrEmpty) && !(old & kIerThrEmpty)) thr_empty_pending_ = true;
}

void Serial::WriteFcrLocked(uint8_t value) {
  // FIFO resets (bit 1, or a change of bit 0) do not discard host input: the queue stands for
  // bytes the host has not transmitted yet, and Linux resets the FIFOs when it opens the port,
  // after a user may already have typed (or piped) input.
  fifo_enabled_ = (value & kFcrEnable) != 0;
}

void Serial::WriteMcrLocked(uint8_t value) {
  uint8_t old_lines = ModemLinesLocked();
  mcr_ = value & kMcrMask;
  uint8_t new_lines = ModemLinesLocked();
  uint8_t changed = old_lines ^ new_lines;
  if (changed & kMsrCts) msr_deltas_ |= kMsrDeltaCts;
  if (changed & kMsrDsr) msr_deltas_ |= kMsrDeltaDsr;
  if ((old_lines & kMsrRi) && !(new_lines & kMsrRi)) msr_deltas_ |= kMsrTrailingRi;
  if (changed & kMsrDcd) msr_deltas_ |= kMsrDeltaDcd;
}

bool Serial::DlabLocked() const { return (lcr_ & kLcrDlab) != 0; }

bool Serial::LoopbackLocked() const { return (mcr_ & kMcrLoop) != 0; }

uint8_t Serial::ModemLinesLocked() const {
  if (!LoopbackLocked()) return kMsrDcd | kMsrDsr | kMsrCts;
  uint8_t lines = 0;
  if (mcr_ & kMcrRts) lines |= kMsrCts;
  if (mcr_ & kMcrDtr) lines |= kMsrDsr;
  if (mcr_ & kMcrOut1) lines |= kMsrRi;
  if (mcr_ & kMcrOut2) lines |= kMsrDcd;
  return lines;
}

uint8_t Serial::ActiveSourcesLocked() const {
  uint8_t active = 0;
  if ((ier_ & kIerLineStatus) && overrun_) active |= kSourceLineStatus;
  if ((ier_ & kIerRxData) && !rx_.empty()) active |= kSourceRxData;
  if ((ier_ & kIerThrEmpty) && thr_empty_pending_) active |= kSourceThrEmpty;
  if ((ier_ & kIerModemStatus) && msr_deltas_ != 0) active |= kSourceModemStatus;
  return active;
}

void Serial::Transmit(uint8_t byte) {
  std::lock_guard lock(output_mutex_);
  // A byte that cannot be written (EPIPE, EIO, ...) is dropped: the guest cannot be told.
  (void)WriteByte(output_fd_, byte);
}

void Serial::RaiseInterrupt() {
  if (interrupt_ == nullptr) return;
  // An eventfd write only fails if its counter would overflow; the edge is then already
  // pending, so nothing is lost.
  (void)interrupt_->Trigger();
}

nlohmann::json Serial::SaveState() const {
  std::lock_guard lock(mutex_);
  return {{"rx", nlohmann::json::binary(std::vector<uint8_t>(rx_.begin(), rx_.end()))},
          {"ier", ier_},
          {"lcr", lcr_},
          {"mcr", mcr_},
          {"scr", scr_},
          {"dll", dll_},
          {"dlm", dlm_},
          {"msr_deltas", msr_deltas_},
          {"fifo_enabled", fifo_enabled_},
          {"thr_empty_pending", thr_empty_pending_},
          {"overrun", overrun_}};
}

Status Serial::RestoreState(const nlohmann::json& state) {
  TERN_ASSIGN_OR_RETURN(Fields fields,
                        Fields::Of(state, "serial",
                                   {"rx", "ier", "lcr", "mcr", "scr", "dll", "dlm", "msr_deltas",
                                    "fifo_enabled", "thr_empty_pending", "overrun"}));
  std::vector<uint8_t> rx;
  TERN_RETURN_IF_ERROR(fields.Read("rx", rx, true));
  if (rx.size() > kInputCapacity) return Error("serial: too much queued input", EINVAL);
  std::lock_guard lock(mutex_);
  TERN_RETURN_IF_ERROR(fields.Read("ier", ier_, true));
  TERN_RETURN_IF_ERROR(fields.Read("lcr", lcr_, true));
  TERN_RETURN_IF_ERROR(fields.Read("mcr", mcr_, true));
  TERN_RETURN_IF_ERROR(fields.Read("scr", scr_, true));
  TERN_RETURN_IF_ERROR(fields.Read("dll", dll_, true));
  TERN_RETURN_IF_ERROR(fields.Read("dlm", dlm_, true));
  TERN_RETURN_IF_ERROR(fields.Read("msr_deltas", msr_deltas_, true));
  TERN_RETURN_IF_ERROR(fields.Read("fifo_enabled", fifo_enabled_, true));
  TERN_RETURN_IF_ERROR(fields.Read("thr_empty_pending", thr_empty_pending_, true));
  TERN_RETURN_IF_ERROR(fields.Read("overrun", overrun_, true));
  rx_.assign(rx.begin(), rx.end());
  return Ok();
}

}  // namespace tern
