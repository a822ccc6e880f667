// Unit tests for the AML encoder: each expected byte sequence is derived from ACPI 6.4 §20 (and
// §6.4 for resource descriptors) and matches what the reference ASL compiler (iasl) emits for the
// equivalent ASL.
#include "acpi/aml.h"

#include <gmock/gmock.h>
#include <gtest/gtest.h>

#include <string>
#include <vector>

namespace tern::acpi::aml {
namespace {

using Bytes = std::vector<uint8_t>;
using ::testing::ElementsAre;
using ::testing::ElementsAreArray;

Bytes Encoded(const Term& term) {
  auto bytes = term.Encode();
  EXPECT_TRUE(bytes.ok()) << bytes.error().ToString();
  return bytes.ok() ? *bytes : Bytes{};
}

Bytes Pkg(size_t content_length) {
  auto bytes = PkgLength(content_length);
  EXPECT_TRUE(bytes.ok());
  return bytes.ok() ? *bytes : Bytes{};
}

TEST(PkgLengthTest, OneByteUpToATotalOf63) {
  EXPECT_THAT(Pkg(0), ElementsAre(0x01));
  EXPECT_THAT(Pkg(62), ElementsAre(0x3f));  // total 63: the largest one-byte length
}

TEST(PkgLengthTest, TwoBytesFromATotalOf64UpTo4095) {
  // 63 content bytes + 1 would be 64, too big for one byte; with 2 bytes the total is 65.
  EXPECT_THAT(Pkg(63), ElementsAre(0x41, 0x04));
  EXPECT_THAT(Pkg(4093), ElementsAre(0x4f, 0xff));  // total 4095
}

TEST(PkgLengthTest, ThreeAndFourBytes) {
  EXPECT_THAT(Pkg(4094), ElementsAre(0x81, 0x00, 0x01));             // total 4097 = 0x1001
  EXPECT_THAT(Pkg(0xffffc), ElementsAre(0x8f, 0xff, 0xff));          // total 2^20 - 1
  EXPECT_THAT(Pkg(0xffffd), ElementsAre(0xc1, 0x00, 0x00, 0x01));    // total 2^20 + 1
  EXPECT_THAT(Pkg(0xffffffb), ElementsAre(0xcf, 0xff, 0xff, 0xff));  // total 2^28 - 1
  EXPECT_FALSE(PkgLength(0xffffffc).ok());
}

TEST(IntegerTest, UsesTheShortestEncoding) {
  EXPECT_THAT(Encoded(Integer(0)), ElementsAre(0x00));
  EXPECT_THAT(Encoded(Integer(1)), ElementsAre(0x01));
  EXPECT_THAT(Encoded(Integer(2)), ElementsAre(0x0a, 0x02));
  EXPECT_THAT(Encoded(Integer(0xff)), ElementsAre(0x0a, 0xff));
  EXPECT_THAT(Encoded(Integer(0x100)), ElementsAre(0x0b, 0x00, 0x01));
  EXPECT_THAT(Encoded(Integer(0x12345678)), ElementsAre(0x0c, 0x78, 0x56, 0x34, 0x12));
  EXPECT_THAT(Encoded(Integer(0x100000000)),
              ElementsAre(0x0e, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00));
}

TEST(StringTest, IsNulTerminatedAscii) {
  EXPECT_THAT(Encoded(String("Hi")), ElementsAre(0x0d, 'H', 'i', 0x00));
  EXPECT_THAT(Encoded(String("")), ElementsAre(0x0d, 0x00));
  EXPECT_FALSE(String(std::string("a\0b", 3)).ok());
  EXPECT_FALSE(String("\xc3\xa9").ok());
}

TEST(NameStringTest, EncodesSegmentsAndPrefixes) {
  EXPECT_THAT(Encoded(NameString("_S5")), ElementsAre('_', 'S', '5', '_'));
  EXPECT_THAT(Encoded(NameString("\\_S5_")), ElementsAre(0x5c, '_', 'S', '5', '_'));
  EXPECT_THAT(Encoded(NameString("\\")), ElementsAre(0x5c, 0x00));
  EXPECT_THAT(Encoded(NameString("^^PCI0")), ElementsAre(0x5e, 0x5e, 'P', 'C', 'I', '0'));
  EXPECT_THAT(Encoded(NameString("\\_SB.COM1")),
              ElementsAre(0x5c, 0x2e, '_', 'S', 'B', '_', 'C', 'O', 'M', '1'));
  EXPECT_THAT(Encoded(NameString("_SB_.PCI0.S08")),
              ElementsAre(0x2f, 3, '_', 'S', 'B', '_', 'P', 'C', 'I', '0', 'S', '0', '8', '_'));
}

TEST(NameStringTest, RejectsMalformedNames) {
  for (const char* bad : {"", "^", "ABCDE", "1ABC", "abc", "A-B", "A..B", "A.", ".A", "\\^A"}) {
    EXPECT_FALSE(NameString(bad).ok()) << bad;
  }
}

TEST(EisaIdTest, CompressesTheVendorLetters) {
  EXPECT_THAT(Encoded(EisaId("PNP0501")), ElementsAre(0x0c, 0x41, 0xd0, 0x05, 0x01));
  EXPECT_THAT(Encoded(EisaId("PNP0A08")), ElementsAre(0x0c, 0x41, 0xd0, 0x0a, 0x08));
  for (const char* bad : {"PNP050", "PNP05011", "pnp0501", "PNP0G01", "P1P0501"}) {
    EXPECT_FALSE(EisaId(bad).ok()) << bad;
  }
}

TEST(NameTest, S5PackageMatchesTheSpecEncoding) {
  // Name (_S5, Package () {5, 0, 0, 0}): NameOp, NameSeg, PackageOp, PkgLength 7 (itself,
  // NumElements and 5 element bytes), NumElements 4, BytePrefix 5, ZeroOp x3.
  Term s5 = Name("_S5", Package({Integer(5), Integer(0), Integer(0), Integer(0)}));
  EXPECT_THAT(Encoded(s5), ElementsAre(0x08, '_', 'S', '5', '_', 0x12, 0x07, 0x04, 0x0a, 0x05, 0x00,
                                       0x00, 0x00));
}

TEST(MethodTest, ReturnsAConstant) {
  // Method (_STA, 0, NotSerialized) { Return (0x0F) }
  EXPECT_THAT(Encoded(Method("_STA", 0, false, {Return(Integer(0x0f))})),
              ElementsAre(0x14, 0x09, '_', 'S', 'T', 'A', 0x00, 0xa4, 0x0a, 0x0f));
  // Serialized with 2 arguments: flags 0x0a; empty body.
  EXPECT_THAT(Encoded(Method("FOO", 2, true, {})),
              ElementsAre(0x14, 0x06, 'F', 'O', 'O', '_', 0x0a));
  EXPECT_FALSE(Method("FOO", 8, false, {}).ok());
}

TEST(ResourceTemplateTest, EncodesIoAndIrqWithAnEndTag) {
  // ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () {4} }
  EXPECT_THAT(Encoded(ResourceTemplate({Io(0x3f8, 0x3f8, 1, 8), IrqNoFlags(4)})),
              ElementsAre(0x11, 0x10, 0x0a, 0x0d,                          // Buffer, 13 bytes
                          0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08,  // IO
                          0x22, 0x10, 0x00,                                // IRQ mask 1 << 4
                          0x79, 0x00));                                    // End Tag
  EXPECT_FALSE(IrqNoFlags(16).ok());
  EXPECT_FALSE(ResourceTemplate({Io(0, 0, 1, 1), IrqNoFlags(16)}).ok());
}

Bytes Encoded(const Resource& resource) {
  auto bytes = resource.Encode();
  EXPECT_TRUE(bytes.ok()) << bytes.error().ToString();
  return bytes.ok() ? *bytes : Bytes{};
}

// The expected bytes below are what iasl 20200925 emits for the ASL in each comment.
TEST(AddressSpaceTest, WordBusNumber) {
  // WordBusNumber (ResourceProducer, MinFixed, MaxFixed, PosDecode, 0, 0, 0xFF, 0, 0x100)
  EXPECT_THAT(Encoded(WordBusNumber(0, 0xff)),
              ElementsAre(0x88, 0x0d, 0x00, 0x02, 0x0c, 0x00, 0x00, 0x00, 0x00, 0x00, 0xff, 0x00,
                          0x00, 0x00, 0x00, 0x01));
}

TEST(AddressSpaceTest, WordIo) {
  // WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode, EntireRange, 0, 0x1000, 0xFFFF, 0,
  //         0xF000)
  EXPECT_THAT(Encoded(WordIo(0x1000, 0xffff)),
              ElementsAre(0x88, 0x0d, 0x00, 0x01, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x10, 0xff, 0xff,
                          0x00, 0x00, 0x00, 0xf0));
}

TEST(AddressSpaceTest, DWordMemory) {
  // DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0,
  //              0xC0000000, 0xDFFFFFFF, 0, 0x20000000)
  EXPECT_THAT(
      Encoded(DWordMemory(0xc0000000, 0xdfffffff)),
      ElementsAre(0x87, 0x17, 0x00, 0x00, 0x0c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
                  0xc0, 0xff, 0xff, 0xff, 0xdf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x20));
}

TEST(AddressSpaceTest, QWordMemory) {
  // QWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed, Cacheable, ReadWrite, 0,
  //              0x100000000, 0x10FFFFFFFF, 0, 0x1000000000)
  EXPECT_THAT(Encoded(QWordMemory(0x100000000, 0x10ffffffff)),
              ElementsAre(0x8a, 0x2b, 0x00, 0x00, 0x0c, 0x03,                //
                          0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,    // _GRA
                          0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00,    // _MIN
                          0xff, 0xff, 0xff, 0xff, 0x10, 0x00, 0x00, 0x00,    // _MAX
                          0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,    // _TRA
                          0x00, 0x00, 0x00, 0x00, 0x10, 0x00, 0x00, 0x00));  // _LEN
}

TEST(AddressSpaceTest, Memory32FixedAndErrors) {
  // Memory32Fixed (ReadWrite, 0xE0000000, 0x00100000)
  EXPECT_THAT(Encoded(Memory32Fixed(true, 0xe0000000, 0x100000)),
              ElementsAre(0x86, 0x09, 0x00, 0x01, 0x00, 0x00, 0x00, 0xe0, 0x00, 0x00, 0x10, 0x00));
  EXPECT_FALSE(WordBusNumber(2, 1).ok());
  EXPECT_FALSE(QWordMemory(0x2000, 0x1fff).ok());
  EXPECT_FALSE(ResourceTemplate({WordIo(0x1000, 0xfff)}).ok());
}

TEST(ScopeTest, NestsDevicesLikeTheAslCompiler) {
  // Scope (_SB) { Device (COM1) { Name (_HID, EisaId ("PNP0501")) Name (_UID, Zero)
  //   Name (_CRS, ResourceTemplate () { IO (Decode16, 0x3F8, 0x3F8, 1, 8) IRQNoFlags () {4} })
  //   Method (_STA, 0, NotSerialized) { Return (0x0F) } } }, as iasl encodes it.
  const Bytes expected = {0x10, 0x3c, '_',  'S',  'B',  '_',  0x5b, 0x82, 0x35, 'C',  'O',
                          'M',  '1',  0x08, '_',  'H',  'I',  'D',  0x0c, 0x41, 0xd0, 0x05,
                          0x01, 0x08, '_',  'U',  'I',  'D',  0x00, 0x08, '_',  'C',  'R',
                          'S',  0x11, 0x10, 0x0a, 0x0d, 0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03,
                          0x01, 0x08, 0x22, 0x10, 0x00, 0x79, 0x00, 0x14, 0x09, '_',  'S',
                          'T',  'A',  0x00, 0xa4, 0x0a, 0x0f};
  Term scope = Scope(
      "_SB",
      {Device("COM1", {Name("_HID", EisaId("PNP0501")), Name("_UID", Integer(0)),
                       Name("_CRS", ResourceTemplate({Io(0x3f8, 0x3f8, 1, 8), IrqNoFlags(4)})),
                       Method("_STA", 0, false, {Return(Integer(0x0f))})})});
  EXPECT_THAT(Encoded(scope), ElementsAreArray(expected));
}

TEST(ScopeTest, UsesAMultiBytePkgLengthForLargeBodies) {
  // Body: Name (BUF0, "<60 x 'A'>") = 1 + 4 + 62 bytes; content 4 + 67 = 71; total 73 = 0x49.
  Bytes bytes = Encoded(Scope("_SB", {Name("BUF0", String(std::string(60, 'A')))}));
  ASSERT_EQ(bytes.size(), 1u + 73u);
  EXPECT_THAT(Bytes(bytes.begin(), bytes.begin() + 7),
              ElementsAre(0x10, 0x49, 0x04, '_', 'S', 'B', '_'));
}

// The expected bytes below are what iasl 20200925 emits (with -oa, no name path optimization)
// for the ASL in each comment.
TEST(OperationRegionTest, SystemMemoryAndSystemIo) {
  // OperationRegion (GDRG, SystemMemory, 0xFEA00000, 0x04)
  EXPECT_THAT(
      Encoded(OperationRegion("GDRG", RegionSpace::kSystemMemory, 0xfea00000, 4)),
      ElementsAre(0x5b, 0x80, 'G', 'D', 'R', 'G', 0x00, 0x0c, 0x00, 0x00, 0xa0, 0xfe, 0x0a, 0x04));
  // OperationRegion (PRT0, SystemIO, 0x0600, 0x02)
  EXPECT_THAT(Encoded(OperationRegion("PRT0", RegionSpace::kSystemIo, 0x600, 2)),
              ElementsAre(0x5b, 0x80, 'P', 'R', 'T', '0', 0x01, 0x0b, 0x00, 0x06, 0x0a, 0x02));
  EXPECT_FALSE(OperationRegion("bad", RegionSpace::kSystemIo, 0, 1).ok());
}

TEST(FieldTest, OneDWordUnit) {
  // Field (GDRG, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }
  EXPECT_THAT(Encoded(Field("GDRG", FieldAccess::kDWord, FieldLock::kNoLock,
                            FieldUpdate::kWriteAsZeros, {{"GDAT", 32}})),
              ElementsAre(0x5b, 0x81, 0x0b, 'G', 'D', 'R', 'G', 0x43, 'G', 'D', 'A', 'T', 0x20));
}

TEST(FieldTest, ReservedBitsShortNamesAndLockRule) {
  // Field (PRT0, ByteAcc, Lock, WriteAsOnes) { CTRL, 8, , 4, STS4, 4 }
  EXPECT_THAT(Encoded(Field("PRT0", FieldAccess::kByte, FieldLock::kLock, FieldUpdate::kWriteAsOnes,
                            {{"CTRL", 8}, {"", 4}, {"STS4", 4}})),
              ElementsAre(0x5b, 0x81, 0x12, 'P', 'R', 'T', '0', 0x31, 'C', 'T', 'R', 'L', 0x08,
                          0x00, 0x04, 'S', 'T', 'S', '4', 0x04));
  // A short name is padded with '_'; FieldFlags 0 is AnyAcc, NoLock, Preserve.
  EXPECT_THAT(Encoded(Field("R", FieldAccess::kAny, FieldLock::kNoLock, FieldUpdate::kPreserve,
                            {{"A", 1}})),
              ElementsAre(0x5b, 0x81, 0x0b, 'R', '_', '_', '_', 0x00, 'A', '_', '_', '_', 0x01));
}

TEST(FieldTest, WideUnitsUseMultiByteBitCounts) {
  // Field (MEM0, AnyAcc, NoLock, Preserve) { Offset (0x10), BIGF, 100 }: Offset (0x10) is a
  // ReservedField of 128 bits. Bit counts are raw PkgLength values: 128 = 0x40 0x08.
  EXPECT_THAT(Encoded(Field("MEM0", FieldAccess::kAny, FieldLock::kNoLock, FieldUpdate::kPreserve,
                            {{"", 128}, {"BIGF", 100}})),
              ElementsAre(0x5b, 0x81, 0x0f, 'M', 'E', 'M', '0', 0x00, 0x00, 0x40, 0x08, 'B', 'I',
                          'G', 'F', 0x44, 0x06));
  // 2^20 bits needs the 4-byte form.
  Bytes big = Encoded(Field("MEM0", FieldAccess::kQWord, FieldLock::kNoLock, FieldUpdate::kPreserve,
                            {{"BIGF", 1u << 20}}));
  EXPECT_THAT(Bytes(big.begin() + 8, big.end()),
              ElementsAre('B', 'I', 'G', 'F', 0xc0, 0x00, 0x00, 0x01));
  EXPECT_EQ(big[7], 0x04);  // QWordAcc
}

TEST(FieldTest, RejectsBadUnits) {
  const auto field = [](std::vector<FieldUnit> units) {
    return Field("GDRG", FieldAccess::kDWord, FieldLock::kNoLock, FieldUpdate::kPreserve, units);
  };
  EXPECT_FALSE(field({{"GDAT", 0}}).ok());
  EXPECT_FALSE(field({{"", 0}}).ok());
  EXPECT_FALSE(field({{"GDAT", 1u << 28}}).ok());
  EXPECT_TRUE(field({{"GDAT", (1u << 28) - 1}}).ok());
  for (const char* bad : {"GDATA", "gdat", "1ABC", "A.B", "\\ABC"}) {
    EXPECT_FALSE(field({{bad, 8}}).ok()) << bad;
  }
  EXPECT_FALSE(
      Field("bad", FieldAccess::kDWord, FieldLock::kNoLock, FieldUpdate::kPreserve, {{"GDAT", 32}})
          .ok());
}

TEST(LocalArgTest, OneByteOpcodes) {
  EXPECT_THAT(Encoded(Local(0)), ElementsAre(0x60));
  EXPECT_THAT(Encoded(Local(7)), ElementsAre(0x67));
  EXPECT_THAT(Encoded(Arg(0)), ElementsAre(0x68));
  EXPECT_THAT(Encoded(Arg(6)), ElementsAre(0x6e));
  EXPECT_FALSE(Local(8).ok());
  EXPECT_FALSE(Arg(7).ok());
}

TEST(StatementTest, StoreIfNotifyAndOperators) {
  // Store (GDAT, Local0)
  EXPECT_THAT(Encoded(Store(NameString("GDAT"), Local(0))),
              ElementsAre(0x70, 'G', 'D', 'A', 'T', 0x60));
  // Store (Arg1, Local7) and Store (Local7, Arg0)
  EXPECT_THAT(Encoded(Store(Arg(1), Local(7))), ElementsAre(0x70, 0x69, 0x67));
  EXPECT_THAT(Encoded(Store(Local(7), Arg(0))), ElementsAre(0x70, 0x67, 0x68));
  // Notify (\_SB, 0x80)
  EXPECT_THAT(Encoded(Notify(NameString("\\_SB"), Integer(0x80))),
              ElementsAre(0x86, 0x5c, '_', 'S', 'B', '_', 0x0a, 0x80));
  // And (Local0, One, ), LAnd and LEqual
  EXPECT_THAT(Encoded(And(Local(0), Integer(1))), ElementsAre(0x7b, 0x60, 0x01, 0x00));
  EXPECT_THAT(Encoded(LEqual(Arg(0), Integer(0x10))), ElementsAre(0x93, 0x68, 0x0a, 0x10));
  EXPECT_THAT(Encoded(LAnd(Arg(0), Arg(1))), ElementsAre(0x90, 0x68, 0x69));
}

TEST(StatementTest, MethodWithIfMatchesIasl) {
  // Method (FOO, 2, NotSerialized) {
  //   If (LAnd (LEqual (Arg0, 0x10), Arg1)) { Store (Arg1, Local7) Store (Local7, Arg0) }
  //   Notify (\_SB, 0x80) }
  Term method = Method("FOO", 2, false,
                       {If(LAnd(LEqual(Arg(0), Integer(0x10)), Arg(1)),
                           {Store(Arg(1), Local(7)), Store(Local(7), Arg(0))}),
                        Notify(NameString("\\_SB"), Integer(0x80))});
  EXPECT_THAT(Encoded(method), ElementsAre(0x14, 0x1c, 'F', 'O', 'O', '_', 0x02, 0xa0, 0x0d, 0x90,
                                           0x93, 0x68, 0x0a, 0x10, 0x69, 0x70, 0x69, 0x67, 0x70,
                                           0x67, 0x68, 0x86, 0x5c, '_', 'S', 'B', '_', 0x0a, 0x80));
}

TEST(StatementTest, ErrorsPropagate) {
  EXPECT_FALSE(Store(Integer(1), Local(9)).ok());
  EXPECT_FALSE(If(Integer(1), {Store(Arg(9), Local(0))}).ok());
  EXPECT_FALSE(If(Arg(9), {}).ok());
  EXPECT_FALSE(Notify(NameString("bad"), Integer(0x80)).ok());
  EXPECT_FALSE(And(Integer(1), Local(8)).ok());
  EXPECT_FALSE(LAnd(Arg(7), Integer(1)).ok());
  EXPECT_FALSE(LEqual(Integer(1), EisaId("bad")).ok());
}

TEST(InterruptTest, ExtendedInterruptDescriptors) {
  // Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {16}
  EXPECT_THAT(
      Encoded(Interrupt(ResourceUsage::kConsumer, InterruptTrigger::kEdge,
                        InterruptPolarity::kActiveHigh, InterruptSharing::kExclusive, {16})),
      ElementsAre(0x89, 0x06, 0x00, 0x03, 0x01, 0x10, 0x00, 0x00, 0x00));
  // Interrupt (ResourceConsumer, Level, ActiveLow, Shared, ,, ) {5, 0x1234567}
  EXPECT_THAT(
      Encoded(Interrupt(ResourceUsage::kConsumer, InterruptTrigger::kLevel,
                        InterruptPolarity::kActiveLow, InterruptSharing::kShared, {5, 0x1234567})),
      ElementsAre(0x89, 0x0a, 0x00, 0x0d, 0x02, 0x05, 0x00, 0x00, 0x00, 0x67, 0x45, 0x23, 0x01));
  // Interrupt (ResourceProducer, Edge, ActiveHigh, ExclusiveAndWake, ,, ) {9}
  EXPECT_THAT(
      Encoded(Interrupt(ResourceUsage::kProducer, InterruptTrigger::kEdge,
                        InterruptPolarity::kActiveHigh, InterruptSharing::kExclusiveAndWake, {9})),
      ElementsAre(0x89, 0x06, 0x00, 0x12, 0x01, 0x09, 0x00, 0x00, 0x00));
  // Interrupt (ResourceConsumer, Level, ActiveHigh, SharedAndWake, ,, ) {9}
  EXPECT_THAT(
      Encoded(Interrupt(ResourceUsage::kConsumer, InterruptTrigger::kLevel,
                        InterruptPolarity::kActiveHigh, InterruptSharing::kSharedAndWake, {9})),
      ElementsAre(0x89, 0x06, 0x00, 0x19, 0x01, 0x09, 0x00, 0x00, 0x00));
  const auto interrupt = [](std::vector<uint32_t> interrupts) {
    return Interrupt(ResourceUsage::kConsumer, InterruptTrigger::kEdge,
                     InterruptPolarity::kActiveHigh, InterruptSharing::kExclusive, interrupts);
  };
  EXPECT_FALSE(interrupt({}).ok());
  EXPECT_FALSE(interrupt(std::vector<uint32_t>(256, 1)).ok());
  Bytes most = Encoded(interrupt(std::vector<uint32_t>(255, 1)));
  EXPECT_EQ(most.size(), 5u + 4 * 255);
  EXPECT_THAT(Bytes(most.begin(), most.begin() + 5), ElementsAre(0x89, 0xfe, 0x03, 0x03, 0xff));
}

TEST(AmlGedTest, EventDeviceMatchesIasl) {
  // Device (GED0) { Name (_HID, "ACPI0013") Name (_UID, Zero)
  //   Name (_CRS, ResourceTemplate () {
  //     Interrupt (ResourceConsumer, Edge, ActiveHigh, Exclusive, ,, ) {16} })
  //   OperationRegion (GDRG, SystemMemory, 0xFEA00000, 0x04)
  //   Field (GDRG, DWordAcc, NoLock, WriteAsZeros) { GDAT, 32 }
  //   Method (_EVT, 1, Serialized) {
  //     Store (GDAT, Local0)
  //     If (LEqual (And (Local0, One, ), One)) { Notify (\_SB.PWRB, 0x80) } } }
  const Bytes expected = {
      0x5b, 0x82, 0x4c, 0x06, 'G',  'E',  'D',  '0',  0x08, '_',  'H',  'I',  'D',  0x0d,
      'A',  'C',  'P',  'I',  '0',  '0',  '1',  '3',  0x00, 0x08, '_',  'U',  'I',  'D',
      0x00, 0x08, '_',  'C',  'R',  'S',  0x11, 0x0e, 0x0a, 0x0b, 0x89, 0x06, 0x00, 0x03,
      0x01, 0x10, 0x00, 0x00, 0x00, 0x79, 0x00, 0x5b, 0x80, 'G',  'D',  'R',  'G',  0x00,
      0x0c, 0x00, 0x00, 0xa0, 0xfe, 0x0a, 0x04, 0x5b, 0x81, 0x0b, 'G',  'D',  'R',  'G',
      0x43, 'G',  'D',  'A',  'T',  0x20, 0x14, 0x21, '_',  'E',  'V',  'T',  0x09, 0x70,
      'G',  'D',  'A',  'T',  0x60, 0xa0, 0x14, 0x93, 0x7b, 0x60, 0x01, 0x00, 0x01, 0x86,
      0x5c, 0x2e, '_',  'S',  'B',  '_',  'P',  'W',  'R',  'B',  0x0a, 0x80};
  Term ged = Device(
      "GED0",
      {Name("_HID", String("ACPI0013")), Name("_UID", Integer(0)),
       Name("_CRS", ResourceTemplate({Interrupt(ResourceUsage::kConsumer, InterruptTrigger::kEdge,
                                                InterruptPolarity::kActiveHigh,
                                                InterruptSharing::kExclusive, {16})})),
       OperationRegion("GDRG", RegionSpace::kSystemMemory, 0xfea00000, 4),
       Field("GDRG", FieldAccess::kDWord, FieldLock::kNoLock, FieldUpdate::kWriteAsZeros,
             {{"GDAT", 32}}),
       Method("_EVT", 1, true,
              {Store(NameString("GDAT"), Local(0)),
               If(LEqual(And(Local(0), Integer(1)), Integer(1)),
                  {Notify(NameString("\\_SB.PWRB"), Integer(0x80))})})});
  EXPECT_THAT(Encoded(ged), ElementsAreArray(expected));
}

TEST(ErrorTest, PropagatesFromNestedTerms) {
  Term bad = Scope("\\_SB", {Device("COM1", {Name("bad", Integer(1))})});
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.error()->message().find("bad"), std::string::npos);
  EXPECT_FALSE(bad.Encode().ok());
  EXPECT_FALSE(Return(EisaId("nope")).ok());
  EXPECT_FALSE(Package({Integer(1), String(std::string(1, '\0'))}).ok());
  EXPECT_FALSE(Package(std::vector<Term>(256, Integer(0))).ok());
  EXPECT_TRUE(Package(std::vector<Term>(255, Integer(0))).ok());
}

}  // namespace
}  // namespace tern::acpi::aml
