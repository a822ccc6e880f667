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
