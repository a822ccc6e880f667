// Unit tests for the 16550A UART: register semantics, interrupts, host input and output.
#include "devices/serial.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <poll.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <chrono>
#include <cstring>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "base/fd.h"

namespace tern {
namespace {

// Register offsets.
constexpr uint64_t kRbr = 0, kThr = 0, kDll = 0, kIer = 1, kDlm = 1, kIir = 2, kFcr = 2, kLcr = 3,
                   kMcr = 4, kLsr = 5, kMsr = 6, kScr = 7;

// Counts Trigger() calls.
class FakeInterrupt : public Interrupt {
 public:
  Status Trigger() override {
    count_.fetch_add(1);
    return Ok();
  }
  int count() const { return count_.load(); }

 private:
  std::atomic<int> count_{0};
};

struct Pipe {
  Fd read_end;
  Fd write_end;
};

// A pipe; `write_flags` (e.g. O_NONBLOCK) apply to the write end. The read end is non-blocking.
Pipe MakePipe(int write_flags = 0) {
  int fds[2];
  EXPECT_EQ(::pipe2(fds, O_CLOEXEC), 0);
  EXPECT_EQ(::fcntl(fds[0], F_SETFL, O_NONBLOCK), 0);
  EXPECT_EQ(::fcntl(fds[1], F_SETFL, write_flags), 0);
  return Pipe{Fd(fds[0]), Fd(fds[1])};
}

// Everything readable from a non-blocking descriptor right now.
std::string DrainAvailable(int fd) {
  std::string out;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fd, buf, sizeof(buf))) > 0) out.append(buf, n);
  return out;
}

class SerialTest : public ::testing::Test {
 protected:
  SerialTest() : pipe_(MakePipe()) {
    auto interrupt = std::make_unique<FakeInterrupt>();
    irq_ = interrupt.get();
    serial_ = std::make_unique<Serial>(std::move(interrupt), pipe_.write_end.get());
  }

  uint8_t In(uint64_t reg) {
    uint8_t value = 0xee;
    serial_->Read(reg, std::span<uint8_t>(&value, 1));
    return value;
  }
  void Out(uint64_t reg, uint8_t value) {
    serial_->Write(reg, std::span<const uint8_t>(&value, 1));
  }
  size_t Queue(const std::string& s) {
    return serial_->QueueInput(
        std::span<const uint8_t>(reinterpret_cast<const uint8_t*>(s.data()), s.size()));
  }
  std::string Output() { return DrainAvailable(pipe_.read_end.get()); }

  Pipe pipe_;
  FakeInterrupt* irq_ = nullptr;
  std::unique_ptr<Serial> serial_;
};

TEST_F(SerialTest, ResetState) {
  EXPECT_EQ(In(kIer), 0x00);
  EXPECT_EQ(In(kIir), 0x01);  // no interrupt, FIFOs off
  EXPECT_EQ(In(kLcr), 0x03);
  EXPECT_EQ(In(kMcr), 0x00);
  EXPECT_EQ(In(kLsr), 0x60);  // THRE | TEMT, no data
  EXPECT_EQ(In(kMsr), 0xb0);  // DCD | DSR | CTS, no deltas
  EXPECT_EQ(In(kRbr), 0x00);  // nothing received
  EXPECT_EQ(irq_->count(), 0);
}

TEST_F(SerialTest, ThrBytesReachOutputInOrder) {
  for (char c : std::string("hello, world\n")) Out(kThr, static_cast<uint8_t>(c));
  EXPECT_EQ(Output(), "hello, world\n");
  EXPECT_EQ(In(kLsr) & 0x60, 0x60);  // transmitter always empty
  EXPECT_EQ(irq_->count(), 0);       // THRE interrupt not enabled
}

TEST(SerialOutputTest, WaitsForFullNonBlockingOutputWithoutLosingBytes) {
  Pipe pipe = MakePipe(O_NONBLOCK);
  // Fill the pipe until the write end reports EAGAIN.
  std::vector<char> chunk(4096, 'x');
  size_t filled = 0;
  while (true) {
    ssize_t n = ::write(pipe.write_end.get(), chunk.data(), chunk.size());
    if (n <= 0) break;
    filled += n;
  }
  ASSERT_EQ(errno, EAGAIN);
  Serial serial(nullptr, pipe.write_end.get());

  std::atomic<bool> done{false};
  std::thread writer([&] {
    for (uint8_t c : std::string("abc")) serial.Write(kThr, std::span<const uint8_t>(&c, 1));
    done = true;
  });
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_FALSE(done.load());  // blocked in poll(2), not dropping bytes

  std::string received;
  while (received.size() < filled + 3) {
    pollfd pfd = {.fd = pipe.read_end.get(), .events = POLLIN, .revents = 0};
    if (::poll(&pfd, 1, 5000) <= 0) break;  // bytes were lost
    received += DrainAvailable(pipe.read_end.get());
  }
  writer.join();
  EXPECT_EQ(received.size(), filled + 3);
  EXPECT_EQ(received.substr(0, filled), std::string(filled, 'x'));
  EXPECT_EQ(received.substr(filled), "abc");
}

TEST(SerialOutputTest, NegativeFdDiscardsOutput) {
  auto interrupt = std::make_unique<FakeInterrupt>();
  FakeInterrupt* irq = interrupt.get();
  Serial serial(std::move(interrupt), -1);
  uint8_t ier = 0x02, c = 'a';
  serial.Write(kIer, std::span<const uint8_t>(&ier, 1));
  serial.Write(kThr, std::span<const uint8_t>(&c, 1));
  EXPECT_EQ(irq->count(), 2);  // ETBEI enabled, then THR emptied again
}

TEST_F(SerialTest, ReceivedBytesReadFromRbrInOrder) {
  EXPECT_EQ(Queue("ok\n"), 3u);
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kRbr), 'o');
  EXPECT_EQ(In(kRbr), 'k');
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kRbr), '\n');
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
  EXPECT_EQ(In(kRbr), 0x00);
  EXPECT_EQ(irq_->count(), 0);  // ERBFI not enabled
}

TEST_F(SerialTest, InputQueueIsBounded) {
  EXPECT_EQ(serial_->InputSpace(), Serial::kInputCapacity);
  std::string input(Serial::kInputCapacity + 100, '\0');
  for (size_t i = 0; i < input.size(); ++i) input[i] = static_cast<char>(i * 7);
  size_t accepted = Queue(input);
  EXPECT_EQ(accepted, Serial::kInputCapacity);
  EXPECT_EQ(serial_->InputSpace(), 0u);
  EXPECT_EQ(Queue(input.substr(accepted)), 0u);

  EXPECT_EQ(In(kRbr), static_cast<uint8_t>(input[0]));
  EXPECT_EQ(serial_->InputSpace(), 1u);
  EXPECT_EQ(Queue(input.substr(accepted)), 1u);  // the caller retries its remainder
  ++accepted;
  for (size_t i = 1; i < accepted; ++i) {
    ASSERT_EQ(In(kRbr), static_cast<uint8_t>(input[i])) << i;
  }
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
  EXPECT_EQ(serial_->InputSpace(), Serial::kInputCapacity);
}

TEST_F(SerialTest, DivisorLatchDoesNotClobberThrOrIer) {
  Out(kIer, 0x05);
  Queue("r");
  Out(kLcr, 0x83);  // DLAB
  Out(kDll, 0x01);
  Out(kDlm, 0x02);
  EXPECT_EQ(In(kDll), 0x01);
  EXPECT_EQ(In(kDlm), 0x02);
  EXPECT_EQ(Output(), "");           // DLL write was not transmitted
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);  // DLL read did not consume input
  Out(kLcr, 0x03);
  EXPECT_EQ(In(kIer), 0x05);  // DLM write did not touch IER
  EXPECT_EQ(In(kRbr), 'r');
  Out(kThr, 'z');
  EXPECT_EQ(Output(), "z");
  Out(kLcr, 0x80);
  EXPECT_EQ(In(kDll), 0x01);  // divisor survives
  EXPECT_EQ(In(kDlm), 0x02);
}

TEST_F(SerialTest, IerKeepsOnlyLowNibble) {
  Out(kIer, 0xff);
  EXPECT_EQ(In(kIer), 0x0f);  // Linux's autoconfig tells a 16550A by this
}

TEST_F(SerialTest, ScratchRegisterHoldsValue) {
  Out(kScr, 0xa5);
  EXPECT_EQ(In(kScr), 0xa5);
  Out(kScr, 0x5a);
  EXPECT_EQ(In(kScr), 0x5a);
  EXPECT_EQ(In(kLcr), 0x03);
}

TEST_F(SerialTest, LcrAndMcrReadBack) {
  Out(kLcr, 0x1b);
  EXPECT_EQ(In(kLcr), 0x1b);
  Out(kMcr, 0xff);
  EXPECT_EQ(In(kMcr), 0x1f);  // bits 7:5 do not exist
}

TEST_F(SerialTest, LoopbackMirrorsModemLinesAndEchoesThr) {
  Out(kMcr, 0x10 | 0x0a);            // LOOP | RTS | OUT2: Linux's autoconfig probe
  EXPECT_EQ(In(kMsr) & 0xf0, 0x90);  // CTS | DCD
  Out(kMcr, 0x10 | 0x05);            // LOOP | DTR | OUT1
  EXPECT_EQ(In(kMsr) & 0xf0, 0x60);  // DSR | RI
  Out(kMcr, 0x10);
  EXPECT_EQ(In(kMsr) & 0xf0, 0x00);

  EXPECT_EQ(serial_->InputSpace(), 0u);  // receiver disconnected from the host
  EXPECT_EQ(Queue("host"), 0u);
  Out(kThr, 'L');
  EXPECT_EQ(Output(), "");
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kRbr), 'L');

  Out(kMcr, 0x00);
  EXPECT_EQ(In(kMsr) & 0xf0, 0xb0);
  Out(kThr, 'N');
  EXPECT_EQ(Output(), "N");
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
}

TEST_F(SerialTest, ModemLineChangesSetDeltasAndInterrupt) {
  Out(kIer, 0x08);  // EDSSI
  Out(kMcr, 0x10 | 0x0f);
  Out(kMsr, 0x00);  // cleared by reading, not writing
  In(kMsr);         // clear deltas from entering loopback
  int before = irq_->count();
  Out(kMcr, 0x10 | 0x0b);  // OUT1 (RI) falls: trailing edge
  EXPECT_EQ(irq_->count(), before + 1);
  EXPECT_EQ(In(kIir), 0x00);  // modem status
  EXPECT_EQ(In(kMsr), 0xb4);  // DCD | DSR | CTS, TERI
  EXPECT_EQ(In(kMsr), 0xb0);  // deltas cleared by the read
  EXPECT_EQ(In(kIir), 0x01);
  Out(kMcr, 0x10 | 0x09);  // RTS (CTS) falls
  EXPECT_EQ(In(kMsr), 0xa1);
}

TEST_F(SerialTest, LoopbackOverrunSetsLineStatus) {
  Out(kIer, 0x04);  // ELSI
  Out(kMcr, 0x10);
  for (size_t i = 0; i < Serial::kInputCapacity; ++i) Out(kThr, static_cast<uint8_t>(i));
  EXPECT_EQ(irq_->count(), 0);
  EXPECT_EQ(In(kLsr) & 0x02, 0x00);
  Out(kThr, 0xff);  // lost
  EXPECT_EQ(irq_->count(), 1);
  EXPECT_EQ(In(kIir), 0x06);
  EXPECT_EQ(In(kLsr) & 0x03, 0x03);  // DR | OE; reading clears OE
  EXPECT_EQ(In(kLsr) & 0x02, 0x00);
  EXPECT_EQ(In(kIir), 0x01);
  for (size_t i = 0; i < Serial::kInputCapacity; ++i) {
    ASSERT_EQ(In(kRbr), static_cast<uint8_t>(i));
  }
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
}

TEST_F(SerialTest, FifoEnableSetsIirHighBits) {
  Out(kFcr, 0x01);
  EXPECT_EQ(In(kIir), 0xc1);
  Out(kIer, 0x02);
  EXPECT_EQ(In(kIir), 0xc2);
  EXPECT_EQ(In(kIir), 0xc1);
  Out(kFcr, 0x00);
  EXPECT_EQ(In(kIir), 0x01);
}

TEST_F(SerialTest, FifoResetKeepsHostInput) {
  Queue("ab");
  Out(kFcr, 0x07);  // enable | clear receive and transmit FIFOs, as Linux does on open
  EXPECT_EQ(In(kLsr) & 0x01, 0x01);
  EXPECT_EQ(In(kRbr), 'a');
  Out(kFcr, 0x00);  // leaving FIFO mode
  EXPECT_EQ(In(kRbr), 'b');
  EXPECT_EQ(In(kLsr) & 0x01, 0x00);
  EXPECT_EQ(serial_->InputSpace(), Serial::kInputCapacity);
}

TEST_F(SerialTest, ThrEmptyInterrupt) {
  Out(kThr, 'a');
  EXPECT_EQ(irq_->count(), 0);  // not enabled
  Out(kIer, 0x02);              // enabling ETBEI with THR empty raises it
  EXPECT_EQ(irq_->count(), 1);
  Out(kIer, 0x02);  // no change: no new edge
  EXPECT_EQ(irq_->count(), 1);
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_EQ(In(kIir), 0x01);  // reading IIR cleared it
  Out(kThr, 'b');             // THR empties again
  EXPECT_EQ(irq_->count(), 2);
  Out(kThr, 'c');  // re-asserted by each write, even while still pending
  EXPECT_EQ(irq_->count(), 3);
  EXPECT_EQ(In(kIir), 0x02);
  Out(kIer, 0x00);
  EXPECT_EQ(In(kIir), 0x01);
  Out(kThr, 'd');
  EXPECT_EQ(irq_->count(), 3);
  EXPECT_EQ(In(kIir), 0x01);  // masked
  Out(kIer, 0x02);
  EXPECT_EQ(irq_->count(), 4);
  EXPECT_EQ(Output(), "abcd");
}

TEST_F(SerialTest, ReceivedDataInterruptHasPriorityOverThrEmpty) {
  Queue("x");
  EXPECT_EQ(irq_->count(), 0);  // not enabled
  Out(kIer, 0x01);              // enabling ERBFI with data waiting raises it
  EXPECT_EQ(irq_->count(), 1);
  EXPECT_EQ(In(kIir), 0x04);
  Out(kIer, 0x03);
  EXPECT_EQ(irq_->count(), 2);  // THRE newly pending
  EXPECT_EQ(In(kIir), 0x04);    // received data first; THRE stays pending
  EXPECT_EQ(In(kRbr), 'x');
  EXPECT_EQ(In(kIir), 0x02);
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(Queue("yz"), 2u);
  EXPECT_EQ(irq_->count(), 3);
  EXPECT_EQ(Queue("w"), 1u);  // more data while pending: another edge
  EXPECT_EQ(irq_->count(), 4);
  EXPECT_EQ(In(kIir), 0x04);
  In(kRbr);
  In(kRbr);
  In(kRbr);
  EXPECT_EQ(In(kIir), 0x01);
  EXPECT_EQ(Queue(""), 0u);
  EXPECT_EQ(irq_->count(), 4);
}

TEST_F(SerialTest, WideAccessesActAsSequentialByteAccesses) {
  // A 2-byte write at LCR sets LCR and MCR; a 4-byte read at 4 returns MCR, LSR, MSR, SCR.
  std::array<uint8_t, 2> lcr_mcr = {0x03, 0x03};
  serial_->Write(kLcr, lcr_mcr);
  Out(kScr, 0x42);
  std::array<uint8_t, 4> regs{};
  serial_->Read(kMcr, regs);
  EXPECT_EQ(regs, (std::array<uint8_t, 4>{0x03, 0x60, 0xb0, 0x42}));
  // Bytes past the block read 0 and writes there are ignored.
  std::array<uint8_t, 8> tail{};
  tail.fill(0xee);
  serial_->Read(6, tail);
  EXPECT_EQ(tail, (std::array<uint8_t, 8>{0xb0, 0x42, 0, 0, 0, 0, 0, 0}));
  std::array<uint8_t, 8> out = {'A', 'B', 'C', 'D', 'E', 'F', 'G', 'H'};
  serial_->Write(kThr, out);  // THR, IER, FCR, LCR, MCR, LSR, MSR, SCR
  EXPECT_EQ(Output(), "A");
  EXPECT_EQ(In(kScr), 'H');
}

TEST_F(SerialTest, HostileAccessesNeverCrash) {
  std::mt19937_64 rng(1234);
  const uint64_t far_offsets[] = {8, 9, 15, 1ull << 32, UINT64_MAX - 7, UINT64_MAX - 1, UINT64_MAX};
  for (int iter = 0; iter < 200000; ++iter) {
    uint64_t offset = rng() % (Serial::kRegisterCount + 1);
    if (iter % 97 == 0) offset = far_offsets[rng() % std::size(far_offsets)];
    size_t size = size_t{1} << (rng() % 4);
    std::array<uint8_t, 8> data;
    for (auto& b : data) b = static_cast<uint8_t>(rng());
    if (rng() % 2) {
      serial_->Read(offset, std::span<uint8_t>(data.data(), size));
    } else {
      serial_->Write(offset, std::span<const uint8_t>(data.data(), size));
    }
    if (iter % 1000 == 0) {
      std::array<uint8_t, 64> input;
      serial_->QueueInput(input);
      Output();  // keep the pipe from filling up
    }
  }
  // Still a working UART after a normal re-initialization.
  Out(kLcr, 0x03);
  Out(kMcr, 0x00);
  Out(kIer, 0x00);
  Out(kFcr, 0x07);
  while (In(kLsr) & 0x01) In(kRbr);  // drain what the random phase left, as a driver would
  Output();
  Out(kScr, 0x99);
  EXPECT_EQ(In(kScr), 0x99);
  EXPECT_EQ(In(kLsr) & 0x61, 0x60);
  Out(kThr, 'k');
  EXPECT_EQ(Output(), "k");
  Queue("q");
  EXPECT_EQ(In(kRbr), 'q');
}

TEST(SerialConcurrencyTest, ConcurrentWritersKeepTheirOwnOrder) {
  constexpr int kThreads = 4;
  constexpr int kBytesPerThread = 20000;
  Pipe pipe = MakePipe();
  Serial serial(std::make_unique<FakeInterrupt>(), pipe.write_end.get());
  std::atomic<bool> stop{false};
  std::string received;
  std::thread reader([&] {
    while (received.size() < kThreads * kBytesPerThread) {
      pollfd pfd = {.fd = pipe.read_end.get(), .events = POLLIN, .revents = 0};
      if (::poll(&pfd, 1, 5000) <= 0) break;
      received += DrainAvailable(pipe.read_end.get());
    }
  });
  std::thread host([&] {
    std::array<uint8_t, 16> input{};
    while (!stop) {
      serial.QueueInput(input);
      (void)serial.InputSpace();
    }
  });
  std::thread guest_reader([&] {
    while (!stop) {
      uint8_t value;
      serial.Read(kLsr, std::span<uint8_t>(&value, 1));
      serial.Read(kRbr, std::span<uint8_t>(&value, 1));
      serial.Read(kIir, std::span<uint8_t>(&value, 1));
    }
  });
  std::vector<std::thread> writers;
  for (int t = 0; t < kThreads; ++t) {
    writers.emplace_back([&serial, t] {
      uint8_t ier = 0x03;
      serial.Write(kIer, std::span<const uint8_t>(&ier, 1));
      for (int i = 0; i < kBytesPerThread; ++i) {
        uint8_t byte = static_cast<uint8_t>((t << 6) | (i & 0x3f));
        serial.Write(kThr, std::span<const uint8_t>(&byte, 1));
      }
    });
  }
  for (auto& w : writers) w.join();
  reader.join();
  stop = true;
  host.join();
  guest_reader.join();

  ASSERT_EQ(received.size(), static_cast<size_t>(kThreads * kBytesPerThread));
  std::array<int, kThreads> next{};
  for (char c : received) {
    uint8_t byte = static_cast<uint8_t>(c);
    int t = byte >> 6;
    ASSERT_EQ(byte & 0x3f, next[t] & 0x3f) << "thread " << t;
    ++next[t];
  }
  for (int t = 0; t < kThreads; ++t) EXPECT_EQ(next[t], kBytesPerThread);
}

// A snapshot's state brings registers and unread input to a new UART; bad states are refused
// and leave it as it was.
TEST_F(SerialTest, StateRoundTripsToANewUart) {
  Out(kLcr, 0x1b);
  Out(kScr, 0x5a);
  Out(kIer, 0x01);
  Queue("hi");
  nlohmann::json state = serial_->SaveState();
  Serial restored(nullptr, -1);
  ASSERT_TRUE(restored.RestoreState(state).ok());
  auto in = [&](uint64_t reg) {
    uint8_t value = 0;
    restored.Read(reg, std::span<uint8_t>(&value, 1));
    return value;
  };
  EXPECT_EQ(in(kLcr), 0x1b);
  EXPECT_EQ(in(kScr), 0x5a);
  EXPECT_EQ(in(kIer), 0x01);
  EXPECT_EQ(in(kRbr), 'h');
  EXPECT_EQ(in(kRbr), 'i');
  nlohmann::json bad = state;
  bad["ier"] = "x";
  EXPECT_FALSE(restored.RestoreState(bad).ok());
  bad = state;
  bad["rx"] = nlohmann::json::binary(std::vector<uint8_t>(Serial::kInputCapacity + 1));
  EXPECT_FALSE(restored.RestoreState(bad).ok());
  EXPECT_FALSE(restored.RestoreState(nlohmann::json::array()).ok());
  EXPECT_EQ(in(kLcr), 0x1b);
}

}  // namespace
}  // namespace tern
