// A 16550A UART (the PC's COM port) for the guest console: the guest's transmitted bytes go to a
// host file descriptor, bytes typed on the host are queued for the guest to receive.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>

#include "devices/bus.h"
#include "devices/interrupt.h"

namespace tern {

// The register block of a National Semiconductor PC16550D UART (datasheet §8, "Registers"),
// inserted on the port-I/O bus over kRegisterCount bytes (COM1: base 0x3f8, IRQ 4).
//
// Offsets: 0 RBR (read) / THR (write), or DLL when LCR.DLAB (bit 7) is set; 1 IER, or DLM when
// LCR.DLAB; 2 IIR (read) / FCR (write); 3 LCR; 4 MCR; 5 LSR; 6 MSR; 7 SCR.
//
// Behaviour beyond the datasheet's:
//  - Transmission is instantaneous: every THR byte is written to the output descriptor before
//    the access returns, so LSR.THRE and LSR.TEMT always read 1.
//  - The receive side is one host-side queue of up to kInputCapacity bytes whether or not the
//    FIFOs are enabled (no receive timeouts, no trigger levels). Unlike the real part, FIFO
//    resets through FCR keep it: it holds input the host has not "transmitted" yet, and Linux
//    resets the FIFOs when a program opens the port, after input may have been typed or piped.
//  - Outside loopback the modem lines read as connected: MSR = DCD | DSR | CTS.
//  - In loopback (MCR bit 4) THR bytes enter the receive queue (LSR.OE when it is full), MSR
//    mirrors MCR (RTS->CTS, DTR->DSR, OUT1->RI, OUT2->DCD) and host input is not accepted.
//  - OUT2 does not gate the interrupt line.
//
// Interrupts are edges (Interrupt::Trigger()): one is raised whenever an interrupt condition
// enabled in IER becomes pending or is asserted again — bytes received, THR emptied by a
// write, IER enabling a condition that is pending, an overrun, a modem line change. IIR
// reports the highest-priority enabled pending condition: line status (0x06) > received data
// (0x04) > THR empty (0x02) > modem status (0x00); 0x01 means none; bits 7:6 read 11 while the
// FIFOs are enabled (FCR bit 0).
//
// A guest access of n bytes at offset o acts as n one-byte accesses at o, o + 1, ... in order
// (like an ISA bus splitting a wide cycle); bytes at offsets >= kRegisterCount read 0 and
// ignore writes. No access can fail.
//
// Thread safety: all methods may be called concurrently from any threads (vCPUs and the event
// loop). A THR write may block its vCPU while the output descriptor is not writable.
class Serial : public BusDevice {
 public:
  // Size of the register block, in bytes (bus range size).
  static constexpr uint64_t kRegisterCount = 8;
  // Capacity of the receive queue, in bytes.
  static constexpr size_t kInputCapacity = 4096;

  // `interrupt`: the UART's interrupt line; may be null (no interrupts are delivered).
  // `output_fd`: where transmitted bytes go, not owned and not closed; it must outlive the
  // device. Blocking or non-blocking (EAGAIN is waited out with poll(2)); a negative value
  // discards output. A byte whose write fails otherwise (EPIPE, EIO, ...) is dropped; the VMM
  // should ignore SIGPIPE if the descriptor may be a pipe or socket.
  Serial(std::unique_ptr<Interrupt> interrupt, int output_fd);

  Serial(const Serial&) = delete;
  Serial& operator=(const Serial&) = delete;

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // Queues bytes typed on the host for the guest to receive (through RBR, in order).
  // Accepts a prefix of `bytes` of at most InputSpace() bytes and returns its length; the
  // caller keeps the rest and offers it again later. Raises the interrupt if received-data
  // interrupts are enabled and any byte was accepted.
  size_t QueueInput(std::span<const uint8_t> bytes);

  // How many bytes QueueInput() would accept now: 0..kInputCapacity (0 in loopback mode).
  size_t InputSpace() const;

  // The UART's registers and unread input, for a snapshot; RestoreState() takes them back
  // (EINVAL for a malformed state). Thread-safe.
  nlohmann::json SaveState() const;
  Status RestoreState(const nlohmann::json& state);

 private:
  // What a one-byte register write asks the caller to do once the state lock is released.
  struct WriteEffects {
    bool transmit = false;
    uint8_t byte = 0;
    bool raise_interrupt = false;
  };

  uint8_t ReadRegisterLocked(uint64_t reg);
  WriteEffects WriteRegisterLocked(uint64_t reg, uint8_t value);
  WriteEffects WriteThrLocked(uint8_t value);
  void WriteIerLocked(uint8_t value);
  void WriteFcrLocked(uint8_t value);
  void WriteMcrLocked(uint8_t value);
  uint8_t ReadIirLocked();

  bool DlabLocked() const;
  bool LoopbackLocked() const;
  uint8_t ModemLinesLocked() const;     // MSR bits 7:4
  uint8_t ActiveSourcesLocked() const;  // enabled and pending conditions, kSource* bits
  size_t InputSpaceLocked() const;

  void Transmit(uint8_t byte);
  void RaiseInterrupt();

  const std::unique_ptr<Interrupt> interrupt_;
  const int output_fd_;

  mutable std::mutex mutex_;  // guards the register state below
  std::deque<uint8_t> rx_;    // received bytes, oldest first; at most kInputCapacity
  uint8_t ier_ = 0;
  uint8_t lcr_ = 0x03;  // 8 data bits, 1 stop bit, no parity
  uint8_t mcr_ = 0;
  uint8_t scr_ = 0;
  uint8_t dll_ = 0x0c;  // divisor 12: 9600 baud from the 1.8432 MHz clock
  uint8_t dlm_ = 0;
  uint8_t msr_deltas_ = 0;  // MSR bits 3:0, cleared by reading MSR
  bool fifo_enabled_ = false;
  bool thr_empty_pending_ = false;  // THRE interrupt condition (IIR 0x02)
  bool overrun_ = false;            // LSR.OE, cleared by reading LSR

  std::mutex output_mutex_;  // serializes writes to output_fd_
};

}  // namespace tern
