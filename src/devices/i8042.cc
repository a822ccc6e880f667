// The i8042 keyboard controller's status register, command set and output buffer.
#include "devices/i8042.h"

#include "base/json_fields.h"

namespace tern {
namespace {

// Status register bits.
constexpr uint8_t kStatusOutputFull = 0x01;
constexpr uint8_t kStatusSystemFlag = 0x04;
constexpr uint8_t kStatusLastWasCommand = 0x08;
constexpr uint8_t kStatusNotInhibited = 0x10;
constexpr uint8_t kStatusAuxData = 0x20;

// Command byte (CTR) bits.
constexpr uint8_t kCtrKeyboardInterrupt = 0x01;
constexpr uint8_t kCtrSystemFlag = 0x04;
constexpr uint8_t kCtrKeyboardDisabled = 0x10;
constexpr uint8_t kCtrAuxDisabled = 0x20;

// Output port bits.
constexpr uint8_t kOutputPortReset = 0x01;  // 0 asserts the CPU reset line
constexpr uint8_t kOutputPortA20 = 0x02;

// Commands.
constexpr uint8_t kCmdReadCtr = 0x20;
constexpr uint8_t kCmdWriteCtr = 0x60;
constexpr uint8_t kCmdDisableAux = 0xa7;
constexpr uint8_t kCmdEnableAux = 0xa8;
constexpr uint8_t kCmdTestAux = 0xa9;
constexpr uint8_t kCmdSelfTest = 0xaa;
constexpr uint8_t kCmdTestKeyboard = 0xab;
constexpr uint8_t kCmdDisableKeyboard = 0xad;
constexpr uint8_t kCmdEnableKeyboard = 0xae;
constexpr uint8_t kCmdReadOutputPort = 0xd0;
constexpr uint8_t kCmdWriteOutputPort = 0xd1;
constexpr uint8_t kCmdEchoKeyboard = 0xd2;
constexpr uint8_t kCmdEchoAux = 0xd3;
constexpr uint8_t kCmdWriteAux = 0xd4;
constexpr uint8_t kCmdPulseMask = 0xf0;  // 0xF0..0xFF pulse output port bits 3:0

constexpr uint8_t kSelfTestPassed = 0x55;
constexpr uint8_t kInterfaceTestPassed = 0x00;

}  // namespace

I8042::I8042(std::function<void()> reset, std::unique_ptr<Interrupt> keyboard_interrupt)
    : reset_(std::move(reset)),
      keyboard_interrupt_(std::move(keyboard_interrupt)),
      ctr_(kCtrKeyboardInterrupt | kCtrSystemFlag | kCtrAuxDisabled),
      output_port_(kOutputPortReset | kOutputPortA20) {}

void I8042::Read(uint64_t offset, std::span<uint8_t> data) {
  std::lock_guard lock(mutex_);
  for (size_t i = 0; i < data.size(); ++i) {
    bool in_range = offset < kRangeSize && i < kRangeSize - offset;
    uint64_t port = offset + i;
    if (in_range && port == kDataOffset) {
      data[i] = ReadDataLocked();
    } else if (in_range && port == kCommandOffset) {
      data[i] = ReadStatusLocked();
    } else {
      data[i] = 0;
    }
  }
}

void I8042::Write(uint64_t offset, std::span<const uint8_t> data) {
  for (size_t i = 0; i < data.size(); ++i) {
    if (offset >= kRangeSize || i >= kRangeSize - offset) return;
    uint64_t port = offset + i;
    WriteEffects effects;
    {
      std::lock_guard lock(mutex_);
      if (port == kDataOffset) effects = WriteDataLocked(data[i]);
      if (port == kCommandOffset) effects = WriteCommandLocked(data[i]);
    }
    if (effects.raise_interrupt && keyboard_interrupt_ != nullptr) {
      (void)keyboard_interrupt_->Trigger();  // fails only if an edge is already pending
    }
    if (effects.reset && reset_) reset_();
  }
}

uint8_t I8042::ReadDataLocked() {
  if (!output_full_) return 0;
  output_full_ = false;
  output_from_aux_ = false;
  return output_;
}

uint8_t I8042::ReadStatusLocked() const {
  uint8_t status = kStatusSystemFlag | kStatusNotInhibited;
  if (output_full_) status |= kStatusOutputFull;
  if (output_full_ && output_from_aux_) status |= kStatusAuxData;
  if (last_write_was_command_) status |= kStatusLastWasCommand;
  return status;
}

I8042::WriteEffects I8042::WriteCommandLocked(uint8_t command) {
  last_write_was_command_ = true;
  pending_command_ = 0;  // a new command abandons one still waiting for its data byte
  WriteEffects effects;
  switch (command) {
    case kCmdReadCtr:
      effects.raise_interrupt = PutOutputLocked(ctr_, false);
      break;
    case kCmdWriteCtr:
    case kCmdWriteOutputPort:
    case kCmdEchoKeyboard:
    case kCmdEchoAux:
    case kCmdWriteAux:
      pending_command_ = command;
      break;
    case kCmdDisableAux:
      ctr_ |= kCtrAuxDisabled;
      break;
    case kCmdEnableAux:  // no aux port to enable
      break;
    case kCmdTestAux:
    case kCmdTestKeyboard:
      effects.raise_interrupt = PutOutputLocked(kInterfaceTestPassed, false);
      break;
    case kCmdSelfTest:
      effects.raise_interrupt = PutOutputLocked(kSelfTestPassed, false);
      break;
    case kCmdDisableKeyboard:
      ctr_ |= kCtrKeyboardDisabled;
      break;
    case kCmdEnableKeyboard:
      ctr_ &= ~kCtrKeyboardDisabled;
      break;
    case kCmdReadOutputPort:
      effects.raise_interrupt = PutOutputLocked(output_port_, false);
      break;
    default:
      // Pulse commands drive the output port bits whose command bit is 0 low for ~6 µs.
      effects.reset = (command & kCmdPulseMask) == kCmdPulseMask && !(command & kOutputPortReset);
      break;
  }
  return effects;
}

I8042::WriteEffects I8042::WriteDataLocked(uint8_t value) {
  last_write_was_command_ = false;
  uint8_t command = pending_command_;
  pending_command_ = 0;
  WriteEffects effects;
  switch (command) {
    case kCmdWriteCtr:
      ctr_ = value;
      break;
    case kCmdWriteOutputPort:
      output_port_ = value;
      effects.reset = !(value & kOutputPortReset);
      break;
    case kCmdEchoKeyboard:
      effects.raise_interrupt = PutOutputLocked(value, false);
      break;
    case kCmdEchoAux:
      effects.raise_interrupt = PutOutputLocked(value, true);
      break;
    default:  // kCmdWriteAux or a byte for the keyboard: no device to receive it
      break;
  }
  return effects;
}

bool I8042::PutOutputLocked(uint8_t byte, bool from_aux) {
  output_ = byte;
  output_full_ = true;
  output_from_aux_ = from_aux;
  return !from_aux && (ctr_ & kCtrKeyboardInterrupt) != 0;
}

nlohmann::json I8042::SaveState() {
  std::lock_guard lock(mutex_);
  return {{"command_byte", ctr_},
          {"output_port", output_port_},
          {"output", output_},
          {"output_full", output_full_},
          {"output_from_aux", output_from_aux_},
          {"last_write_was_command", last_write_was_command_},
          {"pending_command", pending_command_}};
}

Status I8042::RestoreState(const nlohmann::json& state) {
  TERN_ASSIGN_OR_RETURN(
      Fields fields, Fields::Of(state, "i8042",
                                {"command_byte", "output_port", "output", "output_full",
                                 "output_from_aux", "last_write_was_command", "pending_command"}));
  std::lock_guard lock(mutex_);
  TERN_RETURN_IF_ERROR(fields.Read("command_byte", ctr_, true));
  TERN_RETURN_IF_ERROR(fields.Read("output_port", output_port_, true));
  TERN_RETURN_IF_ERROR(fields.Read("output", output_, true));
  TERN_RETURN_IF_ERROR(fields.Read("output_full", output_full_, true));
  TERN_RETURN_IF_ERROR(fields.Read("output_from_aux", output_from_aux_, true));
  TERN_RETURN_IF_ERROR(fields.Read("last_write_was_command", last_write_was_command_, true));
  TERN_RETURN_IF_ERROR(fields.Read("pending_command", pending_command_, true));
  return Ok();
}

}  // namespace tern
