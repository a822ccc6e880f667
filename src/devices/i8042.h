// A minimal i8042 PS/2 keyboard controller: enough for Linux's i8042 driver to probe it and for
// `reboot=k` (reset through the controller's output port) to end the VM.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <nlohmann/json.hpp>
#include <span>

#include "devices/bus.h"
#include "devices/interrupt.h"

namespace tern {

// An Intel 8042 keyboard controller as found in PC/AT and PS/2 machines (command set of the
// IBM PS/2 Hardware Interface Technical Reference, "Keyboard/Auxiliary Device Controller"),
// inserted on the port-I/O bus over kRangeSize bytes at 0x60: offset 0 is the data port
// (0x60), offset 4 the status (read) / command (write) port (0x64); offsets 1..3 read 0 and
// ignore writes. No keyboard and no auxiliary (mouse) device are attached.
//
// Status register: bit 0 OBF (a byte waits in the output buffer), bit 1 IBF (always 0: input
// is consumed at once), bit 2 system flag (always 1), bit 3 last write was to the command port,
// bit 4 keyboard not inhibited (always 1), bit 5 the waiting byte came from the aux port.
//
// Commands written to 0x64 (answers go to the one-byte output buffer, replacing what was there):
//   0x20 read the command byte (CTR)     0x60 write the CTR (next data byte)
//   0xA7 disable aux (sets CTR bit 5)    0xA8 enable aux: ignored, there is no aux port, so the
//                                             CTR keeps bit 5 (Linux then finds no aux port)
//   0xA9 aux interface test -> 0x00      0xAA controller self test -> 0x55
//   0xAB kbd interface test -> 0x00      0xAD / 0xAE set / clear CTR bit 4 (keyboard disabled)
//   0xD0 read the output port            0xD1 write the output port (next data byte); a value
//                                             with bit 0 (reset line) clear resets the machine
//   0xD2 / 0xD3 echo the next data byte as if from the keyboard / the aux port
//   0xD4 send the next data byte to the aux device (dropped)
//   0xF0..0xFF pulse output port bits 3:0 low for each 0 bit; bit 0 clear (0xFE) = reset
// Other commands are ignored, as are data bytes for the keyboard (no keyboard is emulated:
// guests should not expect replies, e.g. Linux with i8042.dumbkbd). Reading 0x60 returns the
// waiting byte and clears OBF, or 0 when there is none.
//
// A keyboard-sourced byte entering the output buffer while CTR bit 0 (keyboard interrupt) is set
// raises the keyboard interrupt (IRQ 1); scancode injection can later reuse that path.
//
// A guest access of n bytes at offset o acts as n one-byte accesses at o, o + 1, ... in order;
// bytes past the range read 0 and ignore writes. No access can fail.
//
// Thread safety: all methods may be called concurrently from any threads.
class I8042 : public BusDevice {
 public:
  // Size of the port range, in bytes (0x60..0x64).
  static constexpr uint64_t kRangeSize = 5;
  static constexpr uint64_t kDataOffset = 0;
  static constexpr uint64_t kCommandOffset = 4;

  // `reset`: called each time the guest asserts the reset line, on the vCPU thread doing the
  // access and without any device lock held (it may call back into the device); it must be
  // safe to call from several threads at once. May be empty (reset requests are ignored).
  // `keyboard_interrupt`: the keyboard's IRQ 1 line; may be null (no interrupts).
  explicit I8042(std::function<void()> reset,
                 std::unique_ptr<Interrupt> keyboard_interrupt = nullptr);

  I8042(const I8042&) = delete;
  I8042& operator=(const I8042&) = delete;

  void Read(uint64_t offset, std::span<uint8_t> data) override;
  void Write(uint64_t offset, std::span<const uint8_t> data) override;

  // The controller's registers, for a snapshot; RestoreState() takes them back (EINVAL for a
  // malformed state). Thread-safe.
  nlohmann::json SaveState();
  Status RestoreState(const nlohmann::json& state);

 private:
  // What a one-byte write asks the caller to do once the lock is released.
  struct WriteEffects {
    bool reset = false;
    bool raise_interrupt = false;
  };

  uint8_t ReadDataLocked();
  uint8_t ReadStatusLocked() const;
  WriteEffects WriteCommandLocked(uint8_t command);
  WriteEffects WriteDataLocked(uint8_t value);
  // Puts `byte` in the output buffer; returns whether the keyboard interrupt should be raised.
  bool PutOutputLocked(uint8_t byte, bool from_aux);

  const std::function<void()> reset_;
  const std::unique_ptr<Interrupt> keyboard_interrupt_;

  std::mutex mutex_;     // guards the state below
  uint8_t ctr_;          // command byte
  uint8_t output_port_;  // bit 0 reset line (1 = running), bit 1 A20 gate
  uint8_t output_ = 0;   // the output buffer, valid while output_full_
  bool output_full_ = false;
  bool output_from_aux_ = false;
  bool last_write_was_command_ = false;
  uint8_t pending_command_ = 0;  // a command waiting for its data byte, or 0
};

}  // namespace tern
