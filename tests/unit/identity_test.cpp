// Client identity (include/shmlimit/identity.hpp, doc/identity.md):
// addresses (RFC 4291 text in, RFC 5952 text out), CIDRs, DRF's
// BaseThrottle.get_ident() exactly (every NUM_PROXIES case of DRF's own
// tests/test_throttling.py, and outputs of DRF 3.14 itself for the edge
// cases below), the trusted-proxy walk over X-Forwarded-For and RFC 7239
// Forwarded, the fallbacks for hostile input, and the key helpers.
#include "shmlimit/identity.hpp"

#include <gtest/gtest.h>

#include <optional>
#include <string>
#include <vector>

namespace shmlimit {
namespace {

using namespace std::string_literals;

// ---------------------------------------------------------------------------
// Addresses

struct AddressCase {
  const char* text;
  const char* canonical;  // nullptr: must be rejected
};

// One row: the canonical text, or a rejection by both parse functions.
void check_address(const AddressCase& c) {
  SCOPED_TRACE(c.text);
  const std::optional<IpAddress> a = IpAddress::try_parse(c.text);
  if (c.canonical == nullptr) {
    EXPECT_FALSE(a.has_value()) << a->to_string();
    EXPECT_THROW(IpAddress::parse(c.text), Error);
    return;
  }
  ASSERT_TRUE(a.has_value());
  EXPECT_EQ(a->to_string(), c.canonical);
  EXPECT_EQ(IpAddress::parse(c.text), *a);
  // The canonical text parses back to the same address.
  EXPECT_EQ(IpAddress::parse(a->to_string()), *a);
}

// RFC 5952 section 4 (its own examples) and RFC 4291 section 2.2.
const AddressCase kParseAddressRfc5952[] = {
    // 4.1: leading zeros suppressed
    AddressCase{"2001:0db8::0001", "2001:db8::1"},
    // 4.2.1: "::" as long as possible
    AddressCase{"2001:db8:0:0:0:0:2:1", "2001:db8::2:1"},
    // 4.2.2: not for a single zero group
    AddressCase{"2001:db8:0:1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},
    AddressCase{"2001:db8::1:1:1:1:1", "2001:db8:0:1:1:1:1:1"},
    // 4.2.3: the longest run; the first of equal runs
    AddressCase{"2001:0:0:1:0:0:0:1", "2001:0:0:1::1"},
    AddressCase{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
    // 4.3: lower case
    AddressCase{"2001:DB8::ABCD", "2001:db8::abcd"},
    // section 2 forms of one address
    AddressCase{"2001:db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
    AddressCase{"2001:0db8:0:0:1:0:0:1", "2001:db8::1:0:0:1"},
    AddressCase{"2001:db8::0:1:0:0:1", "2001:db8::1:0:0:1"},
    AddressCase{"2001:0db8:0000:0000:0001:0000:0000:0001", "2001:db8::1:0:0:1"}};

TEST(ParseAddress, Rfc5952) {
  for (const AddressCase& c : kParseAddressRfc5952) check_address(c);
}

const AddressCase kParseAddressRfc4291[] = {
    AddressCase{"ABCD:EF01:2345:6789:ABCD:EF01:2345:6789",
                "abcd:ef01:2345:6789:abcd:ef01:2345:6789"},
    AddressCase{"2001:DB8:0:0:8:800:200C:417A", "2001:db8::8:800:200c:417a"},
    AddressCase{"FF01:0:0:0:0:0:0:101", "ff01::101"}, AddressCase{"FF01::101", "ff01::101"},
    AddressCase{"0:0:0:0:0:0:0:1", "::1"}, AddressCase{"0:0:0:0:0:0:0:0", "::"},
    AddressCase{"::", "::"}, AddressCase{"1::", "1::"},
    AddressCase{"1:2:3:4:5:6:7::", "1:2:3:4:5:6:7:0"},
    AddressCase{"::2:3:4:5:6:7:8", "0:2:3:4:5:6:7:8"},
    // embedded dotted quad (RFC 4291 2.2 form 3); written in hex out
    AddressCase{"0:0:0:0:0:0:13.1.68.3", "::d01:4403"}, AddressCase{"::13.1.68.3", "::d01:4403"},
    AddressCase{"64:ff9b::192.0.2.33", "64:ff9b::c000:221"},
    // IPv4-mapped IPv6 folds to IPv4 (RFC 4291 2.5.5.2)
    AddressCase{"::FFFF:129.144.52.38", "129.144.52.38"},
    AddressCase{"::ffff:c000:0280", "192.0.2.128"},
    AddressCase{"0:0:0:0:0:ffff:1.2.3.4", "1.2.3.4"}};

TEST(ParseAddress, Rfc4291) {
  for (const AddressCase& c : kParseAddressRfc4291) check_address(c);
}

const AddressCase kParseAddressIpv4[] = {
    AddressCase{"0.0.0.0", "0.0.0.0"},
    AddressCase{"192.0.2.1", "192.0.2.1"},
    AddressCase{"255.255.255.255", "255.255.255.255"},
    AddressCase{"10.0.0.256", nullptr},
    AddressCase{"10.0.0", nullptr},
    AddressCase{"10.0.0.1.2", nullptr},
    AddressCase{"010.0.0.1", nullptr},  // leading zero: octal to some parsers
    AddressCase{"10.0.0.01", nullptr},
    AddressCase{"1000.0.0.1", nullptr},
    AddressCase{"10..0.1", nullptr},
    AddressCase{"10.0.0.1.", nullptr},
    AddressCase{"0x7f.0.0.1", nullptr},
    AddressCase{"127.1", nullptr},
    AddressCase{"+1.2.3.4", nullptr},
    AddressCase{" 1.2.3.4", nullptr}};

TEST(ParseAddress, Ipv4) {
  for (const AddressCase& c : kParseAddressIpv4) check_address(c);
}

const AddressCase kParseAddressRejected[] = {
    AddressCase{"", nullptr},
    AddressCase{":", nullptr},
    AddressCase{":::", nullptr},
    AddressCase{"1:2:3:4:5:6:7:8:9", nullptr},
    AddressCase{"1:2:3:4:5:6:7", nullptr},
    AddressCase{"::1:2:3:4:5:6:7:8", nullptr},  // "::" standing for no group
    AddressCase{"1::2::3", nullptr},
    AddressCase{":1::2", nullptr},
    AddressCase{"1::2:", nullptr},
    AddressCase{"12345::", nullptr},
    AddressCase{"g::", nullptr},
    AddressCase{"fe80::1%eth0", nullptr},
    AddressCase{"[::1]", nullptr},
    AddressCase{"::1.2.3", nullptr},
    AddressCase{"1:2:3:4:5:6:7:1.2.3.4", nullptr},
    AddressCase{"1.2.3.4::", nullptr},
    AddressCase{"::ffff:1.2.3.4:80", nullptr},
    AddressCase{"unknown", nullptr}};

TEST(ParseAddress, Rejected) {
  for (const AddressCase& c : kParseAddressRejected) check_address(c);
}

TEST(IpAddress, ParseErrorQuotesTheTextAndSaysWhy) {
  try {
    IpAddress::parse("10.0.0.256");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
    EXPECT_EQ(std::string(e.what()), "invalid IP address \"10.0.0.256\": octet out of range");
  }
  try {
    IpAddress::parse("bad\x01\xff");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "invalid IP address \"bad\\x01\\xff\": expected a decimal octet");
  }
}

TEST(IpAddress, NulInsideTheTextIsRejected) {
  EXPECT_FALSE(IpAddress::try_parse(std::string_view("1.2.3.4\0", 8)));
  EXPECT_FALSE(IpAddress::try_parse_host(std::string_view("1.2.3.4\0", 8)));
  EXPECT_FALSE(IpAddress::try_parse(std::string_view("::1\0", 4)));
}

TEST(IpAddress, HostFormsAsTheyAppearInHeaders) {
  struct Case {
    const char* text;
    const char* canonical;
  };
  const Case cases[] = {
      {"192.0.2.1", "192.0.2.1"},
      {"192.0.2.1:443", "192.0.2.1"},
      {"192.0.2.1:0", "192.0.2.1"},
      {"192.0.2.1:65535", "192.0.2.1"},
      {" \t192.0.2.1 ", "192.0.2.1"},
      {"2001:db8::1", "2001:db8::1"},
      {"[2001:db8::1]", "2001:db8::1"},
      {"[2001:db8::1]:8080", "2001:db8::1"},
      {"[::ffff:192.0.2.1]:80", "192.0.2.1"},
      {"192.0.2.1:65536", nullptr},
      {"192.0.2.1:", nullptr},
      {"192.0.2.1:80x", nullptr},
      {"192.0.2.1:123456", nullptr},
      {"[192.0.2.1]", nullptr},  // brackets hold IPv6 only
      {"[2001:db8::1", nullptr},
      {"[2001:db8::1]x", nullptr},
      {"[2001:db8::1]:", nullptr},
      {"host:80", nullptr},
      {"", nullptr},
      {"  ", nullptr},
      {"unknown", nullptr},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    const auto a = IpAddress::try_parse_host(c.text);
    if (c.canonical == nullptr) {
      EXPECT_FALSE(a.has_value());
    } else {
      ASSERT_TRUE(a.has_value());
      EXPECT_EQ(a->to_string(), c.canonical);
    }
  }
}

TEST(IpAddress, MaskedKeepsThePrefixAndClampsLongPrefixes) {
  const IpAddress v6 = IpAddress::parse("2001:db8:abcd:12ff:1:2:3:4");
  EXPECT_EQ(v6.masked(64).to_string(), "2001:db8:abcd:12ff::");
  EXPECT_EQ(v6.masked(56).to_string(), "2001:db8:abcd:1200::");
  EXPECT_EQ(v6.masked(52).to_string(), "2001:db8:abcd:1000::");
  EXPECT_EQ(v6.masked(0).to_string(), "::");
  EXPECT_EQ(v6.masked(128), v6);
  EXPECT_EQ(v6.masked(500), v6);
  const IpAddress v4 = IpAddress::parse("192.0.2.255");
  EXPECT_EQ(v4.masked(24).to_string(), "192.0.2.0");
  EXPECT_EQ(v4.masked(25).to_string(), "192.0.2.128");
  EXPECT_EQ(v4.masked(31).to_string(), "192.0.2.254");
  EXPECT_EQ(v4.masked(32), v4);
  EXPECT_EQ(v4.masked(33), v4);
  EXPECT_EQ(v4.masked(0).to_string(), "0.0.0.0");
}

TEST(IpAddress, FamiliesOctetsAndToChars) {
  const IpAddress v4 = IpAddress::v4({192, 0, 2, 1});
  EXPECT_TRUE(v4.is_v4());
  EXPECT_EQ(v4.max_prefix(), 32U);
  ASSERT_EQ(v4.octets().size(), 4U);
  EXPECT_EQ(v4.octets()[0], 192);
  std::array<std::uint8_t, 16> mapped{};
  mapped[10] = mapped[11] = 0xff;
  mapped[12] = 192;
  mapped[14] = 2;
  mapped[15] = 1;
  EXPECT_EQ(IpAddress::v6(mapped), v4);  // folded
  const IpAddress longest = IpAddress::parse("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
  EXPECT_TRUE(longest.is_v6());
  EXPECT_EQ(longest.octets().size(), 16U);
  char buf[IpAddress::kMaxTextBytes];
  EXPECT_EQ(longest.to_chars(buf), IpAddress::kMaxTextBytes);
  EXPECT_EQ(std::string(buf, IpAddress::kMaxTextBytes), longest.to_string());
  EXPECT_LT(v4, longest);  // IPv4 orders before IPv6
}

// ---------------------------------------------------------------------------
// CIDRs

TEST(Cidr, ParsesNetworksAndBareAddresses) {
  struct Case {
    const char* text;
    const char* canonical;
  };
  const Case cases[] = {
      {"10.0.0.0/8", "10.0.0.0/8"},
      {"192.168.0.0/16", "192.168.0.0/16"},
      {"0.0.0.0/0", "0.0.0.0/0"},
      {"192.0.2.7", "192.0.2.7/32"},
      {"192.0.2.7/32", "192.0.2.7/32"},
      {"2001:db8::/32", "2001:db8::/32"},
      {"2001:DB8::/32", "2001:db8::/32"},
      {"::/0", "::/0"},
      {"::1", "::1/128"},
      {"fe80::/10", "fe80::/10"},
      {"::ffff:10.0.0.0/104", "10.0.0.0/8"},
      {"::ffff:0:0/96", "0.0.0.0/0"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    ASSERT_NO_THROW((void)Cidr::parse(c.text));
    EXPECT_EQ(Cidr::parse(c.text).to_string(), c.canonical);
    EXPECT_EQ(Cidr::try_parse(c.text), Cidr::parse(c.text));
  }
}

TEST(Cidr, RejectsWithAClearMessage) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"10.0.0.1/8",
       "invalid CIDR \"10.0.0.1/8\": host bits set beyond /8 (did you mean 10.0.0.0/8?)"},
      {"10.0.0.0/33", "invalid CIDR \"10.0.0.0/33\": prefix longer than /32"},
      {"2001:db8::/129", "invalid CIDR \"2001:db8::/129\": prefix longer than /128"},
      {"10.0.0.0/",
       "invalid CIDR \"10.0.0.0/\": prefix length is not a decimal number without leading zeros"},
      {"10.0.0.0/08",
       "invalid CIDR \"10.0.0.0/08\": prefix length is not a decimal number without leading zeros"},
      {"10.0.0.0/-8",
       "invalid CIDR \"10.0.0.0/-8\": prefix length is not a decimal number without leading zeros"},
      {"10.0.0.0/8/8",
       "invalid CIDR \"10.0.0.0/8/8\": prefix length is not a decimal number without leading "
       "zeros"},
      {"10.0.0/8", "invalid CIDR \"10.0.0/8\": bad address: expected four octets separated by '.'"},
      {"", "invalid CIDR \"\": bad address: empty"},
      {"::ffff:0:0/95",
       "invalid CIDR \"::ffff:0:0/95\": an IPv4-mapped network needs a prefix of at least /96"},
      {"2001:db8::1/32",
       "invalid CIDR \"2001:db8::1/32\": host bits set beyond /32 (did you mean 2001:db8::/32?)"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_FALSE(Cidr::try_parse(c.text).has_value());
    try {
      (void)Cidr::parse(c.text);
      ADD_FAILURE() << "no exception";
    } catch (const Error& e) {
      EXPECT_EQ(e.code(), ErrorCode::kInvalidArgument);
      EXPECT_EQ(std::string(e.what()), c.message);
    }
  }
  EXPECT_THROW(Cidr(IpAddress::parse("10.0.0.1"), 8), Error);
  EXPECT_THROW(Cidr(IpAddress::parse("10.0.0.0"), 33), Error);
}

TEST(Cidr, ContainsOnlyItsOwnFamilyAndPrefix) {
  const Cidr ten = Cidr::parse("10.0.0.0/8");
  EXPECT_TRUE(ten.contains(IpAddress::parse("10.0.0.0")));
  EXPECT_TRUE(ten.contains(IpAddress::parse("10.255.255.255")));
  EXPECT_TRUE(ten.contains(IpAddress::parse("::ffff:10.1.2.3")));  // folded
  EXPECT_FALSE(ten.contains(IpAddress::parse("11.0.0.0")));
  EXPECT_FALSE(ten.contains(IpAddress::parse("9.255.255.255")));
  const Cidr v6 = Cidr::parse("2001:db8::/32");
  EXPECT_TRUE(v6.contains(IpAddress::parse("2001:db8:ffff::1")));
  EXPECT_FALSE(v6.contains(IpAddress::parse("2001:db9::")));
  // An IPv6 network never contains an IPv4 address, even ::/0.
  EXPECT_FALSE(Cidr::parse("::/0").contains(IpAddress::parse("10.0.0.1")));
  EXPECT_FALSE(Cidr::parse("0.0.0.0/0").contains(IpAddress::parse("::1")));
  EXPECT_TRUE(Cidr::parse("0.0.0.0/0").contains(IpAddress::parse("203.0.113.9")));
  const Cidr odd = Cidr::parse("192.0.2.128/25");
  EXPECT_TRUE(odd.contains(IpAddress::parse("192.0.2.200")));
  EXPECT_FALSE(odd.contains(IpAddress::parse("192.0.2.127")));
}

TEST(Cidr, ListsSplitOnCommasAndWhiteSpaceAndNameTheBadItem) {
  const std::vector<Cidr> list = parse_cidrs(" 10.0.0.0/8, 192.168.0.0/16\t::1 ,,");
  ASSERT_EQ(list.size(), 3U);
  EXPECT_EQ(list[2].to_string(), "::1/128");
  EXPECT_TRUE(parse_cidrs("").empty());
  try {
    parse_cidrs("10.0.0.0/8, 10.0.0.300");
    FAIL() << "no exception";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "invalid CIDR list \"10.0.0.0/8, 10.0.0.300\": item 2 \"10.0.0.300\": bad address: "
              "octet out of range");
  }
}

// ---------------------------------------------------------------------------
// DRF mode: BaseThrottle.get_ident() with NUM_PROXIES

constexpr int kUnset = -1;

struct DrfCase {
  const char* name;
  std::string remote;
  std::optional<std::string> xff;
  int num_proxies;  // kUnset = None
  std::string expected;
  IdentitySource source;
};

// One row: DRF's exact string and where it came from.
void check_drf(const DrfCase& c) {
  SCOPED_TRACE(c.name);
  IdentityOptions options;
  if (c.num_proxies != kUnset) options.num_proxies = static_cast<unsigned>(c.num_proxies);
  RequestInfo request;
  request.remote_addr = c.remote;
  if (c.xff) request.x_forwarded_for = *c.xff;
  const Identity id = client_identity(request, options);
  EXPECT_EQ(id.key, c.expected);
  EXPECT_EQ(id.source, c.source);
  EXPECT_FALSE(id.hashed);
  EXPECT_EQ(id.address, IpAddress::try_parse_host(c.expected));
}

const std::string kDrfXff = "0.0.0.0, 1.1.1.1, 2.2.2.2";
constexpr auto kRemote = IdentitySource::kRemoteAddr;
constexpr auto kXff = IdentitySource::kXForwardedFor;

// DRF's tests/test_throttling.py: XffTestingBase (REMOTE_ADDR 3.3.3.3,
// X-Forwarded-For "0.0.0.0, 1.1.1.1, 2.2.2.2"), IdWithXffBasicTests,
// XffSpoofingTests and XffUniqueMachinesTest.
const DrfCase kDrfGetIdentDrfTestSuite[] = {
    DrfCase{"Basic_0Proxies_RemoteAddr", "3.3.3.3", kDrfXff, 0, "3.3.3.3", kRemote},
    DrfCase{"OneProxy", "3.3.3.3", kDrfXff, 1, "2.2.2.2", kXff},
    DrfCase{"OneProxy_SpoofedLeftHopsSameMachine", "3.3.3.3", "4.4.4.4, 5.5.5.5, 2.2.2.2", 1,
            "2.2.2.2", kXff},
    DrfCase{"TwoProxies", "3.3.3.3", kDrfXff, 2, "1.1.1.1", kXff},
    DrfCase{"TwoProxies_SpoofedLeftHopSameMachine", "3.3.3.3", "4.4.4.4, 1.1.1.1, 2.2.2.2", 2,
            "1.1.1.1", kXff},
    DrfCase{"OneProxy_OtherClientCountedApart", "3.3.3.3", "0.0.0.0, 1.1.1.1, 7.7.7.7", 1,
            "7.7.7.7", kXff},
    DrfCase{"TwoProxies_OtherClientCountedApart", "3.3.3.3", "0.0.0.0, 7.7.7.7, 2.2.2.2", 2,
            "7.7.7.7", kXff}};

TEST(DrfGetIdent, DrfTestSuite) {
  for (const DrfCase& c : kDrfGetIdentDrfTestSuite) check_drf(c);
}

// Outputs of DRF 3.14's get_ident() (Debian python3-djangorestframework).
const DrfCase kDrfGetIdentDrfEdgeCases[] = {
    DrfCase{"Unset_WholeHeaderWithoutWhiteSpace", "3.3.3.3", kDrfXff, kUnset,
            "0.0.0.0,1.1.1.1,2.2.2.2", kXff},
    DrfCase{"ThreeProxies", "3.3.3.3", kDrfXff, 3, "0.0.0.0", kXff},
    DrfCase{"MoreProxiesThanHops_Leftmost", "3.3.3.3", kDrfXff, 10, "0.0.0.0", kXff},
    DrfCase{"Unset_NoHeader", "3.3.3.3", std::nullopt, kUnset, "3.3.3.3", kRemote},
    DrfCase{"OneProxy_NoHeader", "3.3.3.3", std::nullopt, 1, "3.3.3.3", kRemote},
    DrfCase{"Unset_EmptyHeaderIsFalsy", "3.3.3.3", "", kUnset, "3.3.3.3", kRemote},
    DrfCase{"OneProxy_EmptyHeaderGivesEmpty", "3.3.3.3", "", 1, "", kXff},
    DrfCase{"Zero_EmptyHeader", "3.3.3.3", "", 0, "3.3.3.3", kRemote},
    DrfCase{"Unset_BlankHeaderGivesEmpty", "3.3.3.3", "   ", kUnset, "", kXff},
    DrfCase{"TwoProxies_BlankHeader", "3.3.3.3", "   ", 2, "", kXff},
    DrfCase{"Unset_WhiteSpaceInside", "3.3.3.3", " 1.2.3.4 \t, 5.6.7.8 ", kUnset, "1.2.3.4,5.6.7.8",
            kXff},
    DrfCase{"OneProxy_Stripped", "3.3.3.3", " 1.2.3.4 \t, 5.6.7.8 ", 1, "5.6.7.8", kXff},
    DrfCase{"TwoProxies_Stripped", "3.3.3.3", " 1.2.3.4 \t, 5.6.7.8 ", 2, "1.2.3.4", kXff},
    DrfCase{"OneProxy_TrailingComma", "3.3.3.3", "1.2.3.4,", 1, "", kXff},
    DrfCase{"TwoProxies_TrailingComma", "3.3.3.3", "1.2.3.4,", 2, "1.2.3.4", kXff},
    DrfCase{"Unset_TrailingCommaKept", "3.3.3.3", "1.2.3.4,", kUnset, "1.2.3.4,", kXff},
    DrfCase{"TwoProxies_LeadingComma", "3.3.3.3", ",1.2.3.4", 2, "", kXff},
    DrfCase{"Unset_Garbage", "3.3.3.3", "garbage", kUnset, "garbage", kXff},
    DrfCase{"OneProxy_Garbage", "3.3.3.3", "garbage", 1, "garbage", kXff},
    // Python's str.isspace() on Latin-1: NBSP, NEL and the separators
    // 0x1c..0x1f are white space too.
    DrfCase{"Unset_Latin1WhiteSpace", "3.3.3.3",
            "\xa0"
            "1.2.3.4\x85,\x1c"
            "5.6.7.8\x1f",
            kUnset, "1.2.3.4,5.6.7.8", kXff},
    DrfCase{"OneProxy_Latin1WhiteSpace", "3.3.3.3",
            "\xa0"
            "1.2.3.4\x85,\x1c"
            "5.6.7.8\x1f",
            1, "5.6.7.8", kXff},
    DrfCase{"Unset_NulKept", "3.3.3.3",
            "a\xa0"
            "b, c\0d"s,
            kUnset, "ab,c\0d"s, kXff},
    DrfCase{"OneProxy_NulKept", "3.3.3.3",
            "a\xa0"
            "b, c\0d"s,
            1, "c\0d"s, kXff},
    DrfCase{"TwoProxies_InnerNbspKept", "3.3.3.3",
            "a\xa0"
            "b, c\0d"s,
            2,
            "a\xa0"
            "b",
            kXff},
    DrfCase{"Unset_EmptyRemoteAddr", "", std::nullopt, kUnset, "", kRemote},
    DrfCase{"Zero_EmptyRemoteAddr", "", "1.2.3.4", 0, "", kRemote},
    DrfCase{"Unset_V6WithPorts", "::1", "2001:db8::1, [2001:db8::2]:443", kUnset,
            "2001:db8::1,[2001:db8::2]:443", kXff},
    DrfCase{"OneProxy_V6BracketsAndPortKept", "::1", "2001:db8::1, [2001:db8::2]:443", 1,
            "[2001:db8::2]:443", kXff},
    DrfCase{"TwoProxies_V6", "::1", "2001:db8::1, [2001:db8::2]:443", 2, "2001:db8::1", kXff}};

TEST(DrfGetIdent, DrfEdgeCases) {
  for (const DrfCase& c : kDrfGetIdentDrfEdgeCases) check_drf(c);
}

TEST(DrfIdentity, AddressIsParsedFromTheKeyButTheKeyStaysDrfs) {
  IdentityOptions options;
  options.num_proxies = 1;
  RequestInfo request{"10.0.0.1", "203.0.113.7, [2001:DB8::2]:443", std::nullopt};
  const Identity id = client_identity(request, options);
  EXPECT_EQ(id.key, "[2001:DB8::2]:443");  // DRF's string, not normalised
  ASSERT_TRUE(id.address.has_value());
  EXPECT_EQ(id.address->to_string(), "2001:db8::2");
}

TEST(DrfIdentity, ForwardedHeaderIsIgnoredAsDrfIgnoresIt) {
  IdentityOptions options;
  options.num_proxies = 1;
  options.use_forwarded = true;  // only for the normalising modes
  RequestInfo request{"10.0.0.1", std::nullopt, "for=192.0.2.60"};
  EXPECT_EQ(client_identity(request, options).key, "10.0.0.1");
}

TEST(DrfIdentity, LongKeysAreHashedToAFixedLength) {
  std::string xff;
  for (int i = 0; i < 10000; ++i) xff += "10.0.0." + std::to_string(i % 256) + ", ";
  xff += "10.0.0.1";
  RequestInfo request{"10.0.0.1", xff, std::nullopt};
  const Identity id = client_identity(request, IdentityOptions{});
  EXPECT_TRUE(id.hashed);
  EXPECT_EQ(id.key.size(), 33U);
  EXPECT_EQ(id.key[0], '~');
  EXPECT_FALSE(id.address.has_value());
  // Deterministic: the same header gives the same key; another header another.
  EXPECT_EQ(client_identity(request, IdentityOptions{}).key, id.key);
  std::string other = xff;
  other.back() = '2';
  EXPECT_NE(client_identity(RequestInfo{"10.0.0.1", other, std::nullopt}, IdentityOptions{}).key,
            id.key);
  // A key of exactly max_key_bytes is kept; one byte more is hashed.
  IdentityOptions small;
  small.max_key_bytes = 20;
  EXPECT_EQ(client_identity(RequestInfo{"", std::string(20, 'a'), std::nullopt}, small).key,
            std::string(20, 'a'));
  const Identity h = client_identity(RequestInfo{"", std::string(21, 'a'), std::nullopt}, small);
  EXPECT_TRUE(h.hashed);
  EXPECT_EQ(h.key.size(), 20U);
}

// ---------------------------------------------------------------------------
// Keys

TEST(Keys, HashedKeyIsXxh3OfTheKeyInHex) {
  // XXH3_128bits("") in xxHash's canonical (big-endian) form: high64 then low64.
  EXPECT_EQ(hashed_key(""), "~99aa06d3014798d86001c324468d497f");
  EXPECT_EQ(hashed_key("", 17), "~99aa06d3014798d8");
  EXPECT_EQ(hashed_key("", 1), "~99aa06d3014798d8");  // raised to kMinKeyBytes
  EXPECT_EQ(hashed_key("x").size(), 33U);
  EXPECT_NE(hashed_key("x"), hashed_key("y"));
  EXPECT_EQ(fit_key("short"), "short");
  EXPECT_EQ(fit_key(std::string(89, 'k')), hashed_key(std::string(89, 'k')));
  EXPECT_EQ(fit_key(std::string(88, 'k')), std::string(88, 'k'));
}

TEST(Keys, ThrottleKeyIsDrfsCacheFormat) {
  EXPECT_EQ(throttle_key("anon", "203.0.113.9"), "throttle_anon_203.0.113.9");
  EXPECT_EQ(throttle_key("user", "42"), "throttle_user_42");
  EXPECT_EQ(throttle_key("burst", "2001:db8::1"), "throttle_burst_2001:db8::1");
  // DRF's test: an anonymous request without REMOTE_ADDR keys as 'None' in
  // Python; here an absent REMOTE_ADDR is empty.
  EXPECT_EQ(throttle_key("anon", ""), "throttle_anon_");
  const std::string long_scope(100, 's');
  EXPECT_EQ(throttle_key(long_scope, "1.2.3.4"), hashed_key("throttle_" + long_scope + "_1.2.3.4"));
}

TEST(Keys, UserIdWhenAuthenticatedAddressWhenAnonymous) {
  Identity anon;
  anon.key = "203.0.113.9";
  EXPECT_EQ(user_or_ident_key("user", std::nullopt, anon), "throttle_user_203.0.113.9");
  EXPECT_EQ(user_or_ident_key("user", "17", anon), "throttle_user_17");
}

// ---------------------------------------------------------------------------
// Normalising num_proxies mode

TEST(NormalisedIdentity, MasksAndCanonicalisesDrfsPick) {
  IdentityOptions options;
  options.normalize = true;
  options.num_proxies = 1;
  struct Case {
    const char* remote;
    std::optional<std::string> xff;
    const char* key;
    IdentitySource source;
  };
  const Case cases[] = {
      {"10.0.0.1", "198.51.100.1, 203.0.113.7", "203.0.113.7", kXff},
      {"10.0.0.1", "198.51.100.1, 203.0.113.7:5555", "203.0.113.7", kXff},
      {"10.0.0.1", "198.51.100.1, [2001:DB8:0:1:ffff::9]:80", "2001:db8:0:1::", kXff},
      {"10.0.0.1", "198.51.100.1, ::ffff:203.0.113.7", "203.0.113.7", kXff},
      {"10.0.0.1", std::nullopt, "10.0.0.1", kRemote},
      {"[::1]:9000", std::nullopt, "::", kRemote},  // /64 of ::1
      // Not an address: the fallback is REMOTE_ADDR, never the garbage.
      {"10.0.0.1", "198.51.100.1, garbage", "10.0.0.1", IdentitySource::kFallback},
      {"10.0.0.1", "", "10.0.0.1", IdentitySource::kFallback},  // DRF picks ''
      {"10.0.0.1", "1.2.3.4,", "10.0.0.1", IdentitySource::kFallback},
      {"10.0.0.1", "unknown", "10.0.0.1", IdentitySource::kFallback},
      // No usable REMOTE_ADDR either: the one shared "unknown" key.
      {"", "garbage", "unknown", IdentitySource::kFallback},
      {"unix:/run/app.sock", std::nullopt, "unknown", IdentitySource::kFallback},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(std::string(c.remote) + " / " + c.xff.value_or("(none)"));
    RequestInfo request;
    request.remote_addr = c.remote;
    if (c.xff) request.x_forwarded_for = *c.xff;
    const Identity id = client_identity(request, options);
    EXPECT_EQ(id.key, c.key);
    EXPECT_EQ(id.source, c.source);
    EXPECT_EQ(id.address.has_value(), std::string(c.key) != "unknown");
  }
}

TEST(NormalisedIdentity, UnsetNumProxiesNeedsExactlyOneHop) {
  IdentityOptions options;
  options.normalize = true;
  const auto key = [&](const char* xff) {
    return client_identity(RequestInfo{"10.0.0.1", std::string_view(xff), std::nullopt}, options);
  };
  EXPECT_EQ(key("203.0.113.7").key, "203.0.113.7");
  EXPECT_EQ(key("203.0.113.7").source, kXff);
  EXPECT_EQ(key("203.0.113.7, 198.51.100.1").key, "10.0.0.1");
  EXPECT_EQ(key("203.0.113.7, 198.51.100.1").source, IdentitySource::kFallback);
  EXPECT_EQ(key("").key, "10.0.0.1");
  EXPECT_EQ(key("").source, kRemote);
}

TEST(NormalisedIdentity, PrefixOptionsAggregate) {
  IdentityOptions options;
  options.normalize = true;
  options.num_proxies = 0;
  options.ipv4_prefix = 24;
  options.ipv6_prefix = 48;
  EXPECT_EQ(client_identity(RequestInfo{"203.0.113.77", std::nullopt, std::nullopt}, options).key,
            "203.0.113.0");
  EXPECT_EQ(
      client_identity(RequestInfo{"2001:db8:1:2:3::4", std::nullopt, std::nullopt}, options).key,
      "2001:db8:1::");
  const Identity id =
      client_identity(RequestInfo{"2001:db8:1:2:3::4", std::nullopt, std::nullopt}, options);
  ASSERT_TRUE(id.address.has_value());
  EXPECT_EQ(id.address->to_string(), "2001:db8:1:2:3::4");  // unmasked
  options.ipv6_prefix = 128;
  EXPECT_EQ(
      client_identity(RequestInfo{"2001:db8:1:2:3::4", std::nullopt, std::nullopt}, options).key,
      "2001:db8:1:2:3::4");
}

// fuzz/regressions/identity/normalised-v6-key-longer-than-max-key-bytes-is-hashed
TEST(NormalisedIdentity, V6KeyLongerThanMaxKeyBytesIsHashed) {
  IdentityOptions options;
  options.normalize = true;
  options.num_proxies = 0;
  options.ipv6_prefix = 128;
  options.max_key_bytes = 24;                     // a 64-byte slot
  const std::string v6 = "2001:db8:1:2:3:4:5:6";  // 20 bytes: fits
  Identity id = client_identity(RequestInfo{v6, std::nullopt, std::nullopt}, options);
  EXPECT_EQ(id.key, v6);
  EXPECT_FALSE(id.hashed);
  const std::string longer = "2001:db8:1111:2222:3333:4444:5555:6666";
  id = client_identity(RequestInfo{longer, std::nullopt, std::nullopt}, options);
  EXPECT_TRUE(id.hashed);
  EXPECT_EQ(id.key, hashed_key(longer, 24));
  EXPECT_EQ(id.key.size(), 24U);
  EXPECT_EQ(id.address->to_string(), longer);
}

TEST(NormalisedIdentity, HopsBeyondMaxHopsFallBack) {
  IdentityOptions options;
  options.normalize = true;
  options.num_proxies = 5;
  options.max_hops = 3;
  const Identity id = client_identity(
      RequestInfo{"10.0.0.1", "1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 5.5.5.5", std::nullopt},
      options);
  EXPECT_EQ(id.key, "10.0.0.1");
  EXPECT_EQ(id.source, IdentitySource::kFallback);
  options.max_hops = 5;
  EXPECT_EQ(client_identity(RequestInfo{"10.0.0.1", "1.1.1.1, 2.2.2.2, 3.3.3.3, 4.4.4.4, 5.5.5.5",
                                        std::nullopt},
                            options)
                .key,
            "1.1.1.1");
}

TEST(NormalisedIdentity, ForwardedElementCountedLikeXffHops) {
  IdentityOptions options;
  options.normalize = true;
  options.num_proxies = 1;
  options.use_forwarded = true;
  RequestInfo request{"10.0.0.1", "9.9.9.9", R"(for=192.0.2.43, for="[2001:db8:cafe::17]:4711")"};
  Identity id = client_identity(request, options);
  EXPECT_EQ(id.key, "2001:db8:cafe::");
  EXPECT_EQ(id.source, IdentitySource::kForwarded);
  options.num_proxies = 2;
  EXPECT_EQ(client_identity(request, options).key, "192.0.2.43");
  // Without a Forwarded header, X-Forwarded-For is read.
  request.forwarded.reset();
  id = client_identity(request, options);
  EXPECT_EQ(id.key, "9.9.9.9");
  EXPECT_EQ(id.source, kXff);
}

// ---------------------------------------------------------------------------
// Trusted proxies

IdentityOptions trusting(const char* cidrs) {
  IdentityOptions options;
  options.trusted_proxies = parse_cidrs(cidrs);
  return options;
}

struct TrustedCase {
  const char* name;
  std::string remote;
  std::optional<std::string> xff;
  std::optional<std::string> forwarded;
  std::string key;
  IdentitySource source;
};

// One row: the first untrusted hop from the right, or the fallback.
void check_trusted(const TrustedCase& c) {
  SCOPED_TRACE(c.name);
  IdentityOptions options = trusting("10.0.0.0/8, 2001:db8:ffff::/48");
  options.use_forwarded = true;
  RequestInfo request;
  request.remote_addr = c.remote;
  if (c.xff) request.x_forwarded_for = *c.xff;
  if (c.forwarded) request.forwarded = *c.forwarded;
  const Identity id = client_identity(request, options);
  EXPECT_EQ(id.key, c.key);
  EXPECT_EQ(id.source, c.source);
  EXPECT_FALSE(id.key.empty());
}

constexpr auto kFwd = IdentitySource::kForwarded;
constexpr auto kFallback = IdentitySource::kFallback;
const std::nullopt_t kNone = std::nullopt;

const TrustedCase kTrustedProxyWalkXForwardedFor[] = {
    TrustedCase{"UntrustedPeerHeaderIgnored", "203.0.113.5", "1.2.3.4", kNone, "203.0.113.5",
                kRemote},
    TrustedCase{"OneProxy", "10.0.0.1", "203.0.113.5", kNone, "203.0.113.5", kXff},
    TrustedCase{"SpoofedLeftHopsIgnored", "10.0.0.1", "6.6.6.6, 7.7.7.7, 203.0.113.5", kNone,
                "203.0.113.5", kXff},
    TrustedCase{"ChainOfTrustedProxies", "10.0.0.1", "6.6.6.6, 203.0.113.5, 10.1.1.1, 10.2.2.2",
                kNone, "203.0.113.5", kXff},
    TrustedCase{"TrustedV6Proxy", "2001:db8:ffff::1", "2001:db8:1:2:3::4", kNone,
                "2001:db8:1:2::", kXff},
    TrustedCase{"PortsAndBrackets", "10.0.0.1", "[2001:db8:1:2::9]:1234, 10.0.0.2:80", kNone,
                "2001:db8:1:2::", kXff},
    TrustedCase{"AllHopsTrusted_Leftmost", "10.0.0.1", "10.0.0.3, 10.0.0.2", kNone, "10.0.0.3",
                kXff},
    TrustedCase{"NoHeader_ProxyIsClient", "10.0.0.1", kNone, kNone, "10.0.0.1", kRemote},
    TrustedCase{"BlankHeader_ProxyIsClient", "10.0.0.1", "  ", kNone, "10.0.0.1", kRemote},
    // Garbage reached before the client: the nearest trusted hop.
    TrustedCase{"GarbageHop_NearestTrusted", "10.0.0.1", "203.0.113.5, garbage, 10.0.0.7", kNone,
                "10.0.0.7", kFallback},
    TrustedCase{"GarbageRightmost_Peer", "10.0.0.1", "203.0.113.5, garbage", kNone, "10.0.0.1",
                kFallback},
    TrustedCase{"EmptyHop_Peer", "10.0.0.1", "203.0.113.5,", kNone, "10.0.0.1", kFallback},
    TrustedCase{"UnknownHop_Peer", "10.0.0.1", "unknown", kNone, "10.0.0.1", kFallback},
    TrustedCase{"NulInHop_Peer", "10.0.0.1", "203.0.113.5\0"s, kNone, "10.0.0.1", kFallback},
    // Garbage left of the client is never read.
    TrustedCase{"GarbageLeftOfClientNotRead", "10.0.0.1", "\x01\xff garbage, 203.0.113.5", kNone,
                "203.0.113.5", kXff},
    TrustedCase{"UnparsablePeer_Unknown", "", "203.0.113.5", kNone, "unknown", kFallback}};

TEST(TrustedProxyWalk, XForwardedFor) {
  for (const TrustedCase& c : kTrustedProxyWalkXForwardedFor) check_trusted(c);
}

// RFC 7239 section 7.4 and 4 examples, walked the same way.
const TrustedCase kTrustedProxyWalkForwarded[] = {
    TrustedCase{"Rfc7239_QuotedV6WithPort", "10.0.0.1", kNone, R"(For="[2001:db8:cafe::17]:4711")",
                "2001:db8:cafe::", kFwd},
    TrustedCase{"Rfc7239_ForProtoBy", "10.0.0.1", kNone,
                "for=192.0.2.60;proto=http;by=203.0.113.43", "192.0.2.60", kFwd},
    TrustedCase{"Rfc7239_TwoElements", "10.0.0.1", kNone, "for=192.0.2.43, for=198.51.100.17",
                "198.51.100.17", kFwd},
    TrustedCase{"Rfc7239_TwoElementsTrustedRight", "10.0.0.1", kNone,
                "for=192.0.2.43, for=10.9.9.9", "192.0.2.43", kFwd},
    TrustedCase{"Rfc7239_Obfuscated_Peer", "10.0.0.1", kNone, R"(for="_gazonk")", "10.0.0.1",
                kFallback},
    TrustedCase{"Rfc7239_Unknown_Peer", "10.0.0.1", kNone, "for=unknown", "10.0.0.1", kFallback},
    TrustedCase{"Rfc7239_UnknownAfterTrusted", "10.0.0.1", kNone, "for=unknown, for=10.0.0.9",
                "10.0.0.9", kFallback},
    TrustedCase{"Rfc7239_ObfuscatedPort", "10.0.0.1", kNone, R"(for="192.0.2.43:_x1")",
                "192.0.2.43", kFwd},
    TrustedCase{"QuotedCommaInOtherParameter", "10.0.0.1", kNone,
                R"(for=192.0.2.43;host="a,for=6.6.6.6", for=198.51.100.17;by="x,y")",
                "198.51.100.17", kFwd},
    TrustedCase{"QuotedCommaInsideElement", "10.0.0.1", kNone,
                R"(for=6.6.6.6, for=192.0.2.43;host="a,b")", "192.0.2.43", kFwd},
    TrustedCase{"EscapedQuote", "10.0.0.1", kNone, R"(for=192.0.2.43;host="a\",b")", "192.0.2.43",
                kFwd},
    TrustedCase{"NoForParameter_Peer", "10.0.0.1", kNone, "proto=https", "10.0.0.1", kFallback},
    TrustedCase{"TwoForInOneElement_Peer", "10.0.0.1", kNone, "for=192.0.2.1;for=192.0.2.2",
                "10.0.0.1", kFallback},
    TrustedCase{"UnbracketedV6_Peer", "10.0.0.1", kNone, R"(for="2001:db8::1")", "10.0.0.1",
                kFallback},
    TrustedCase{"UnclosedQuote_Peer", "10.0.0.1", kNone, R"(for="192.0.2.1)", "10.0.0.1",
                kFallback},
    TrustedCase{"ForwardedPreferredOverXff", "10.0.0.1", "6.6.6.6", "for=192.0.2.60", "192.0.2.60",
                kFwd},
    TrustedCase{"NoForwarded_XffRead", "10.0.0.1", "192.0.2.61", kNone, "192.0.2.61", kXff}};

TEST(TrustedProxyWalk, Forwarded) {
  for (const TrustedCase& c : kTrustedProxyWalkForwarded) check_trusted(c);
}

TEST(TrustedIdentity, UnixSocketPeerTrustedOnlyWhenAsked) {
  IdentityOptions options = trusting("10.0.0.0/8");
  RequestInfo request{"", "203.0.113.5", std::nullopt};
  Identity id = client_identity(request, options);
  EXPECT_EQ(id.key, "unknown");
  EXPECT_EQ(id.source, kFallback);
  options.trust_unix_peer = true;
  id = client_identity(request, options);
  EXPECT_EQ(id.key, "203.0.113.5");
  EXPECT_EQ(id.source, kXff);
  // A unix peer forwarding nothing usable: the shared unknown key.
  request.x_forwarded_for = "garbage";
  EXPECT_EQ(client_identity(request, options).key, "unknown");
}

TEST(TrustedIdentity, TrustedProxiesOverrideNumProxies) {
  IdentityOptions options = trusting("10.0.0.0/8");
  options.num_proxies = 0;
  EXPECT_EQ(client_identity(RequestInfo{"10.0.0.1", "203.0.113.5", std::nullopt}, options).key,
            "203.0.113.5");
}

TEST(TrustedIdentity, MaxHopsStopsAtTheLastTrustedHopReached) {
  IdentityOptions options = trusting("10.0.0.0/8");
  options.max_hops = 2;
  const Identity id = client_identity(
      RequestInfo{"10.0.0.1", "203.0.113.5, 10.0.0.4, 10.0.0.3, 10.0.0.2", std::nullopt}, options);
  EXPECT_EQ(id.key, "10.0.0.3");
  EXPECT_EQ(id.source, kFallback);
}

// ---------------------------------------------------------------------------
// Hostile input: never a crash, never a key the sender can rotate.

TEST(HostileInput, MegabyteHeaderIsReadOnlyFromItsRightEnd) {
  IdentityOptions options = trusting("10.0.0.0/8");
  std::string xff(1 << 20, 'x');
  xff += ", 203.0.113.5";
  Identity id = client_identity(RequestInfo{"10.0.0.1", xff, std::nullopt}, options);
  EXPECT_EQ(id.key, "203.0.113.5");
  // Only trusted hops within the window: the cut hop is not an address,
  // so the walk stops at the last trusted hop.
  std::string chain;
  for (int i = 0; i < 10000; ++i) chain += "10.0.0.9, ";
  chain += "10.0.0.8";
  options.max_hops = 100000;
  id = client_identity(RequestInfo{"10.0.0.1", "203.0.113.5, " + chain, std::nullopt}, options);
  EXPECT_EQ(id.key, "10.0.0.9");
  EXPECT_EQ(id.source, kFallback);
}

TEST(HostileInput, TenThousandHopsStopAtMaxHops) {
  IdentityOptions options = trusting("10.0.0.0/8");
  std::string chain = "203.0.113.5";
  for (int i = 0; i < 10000; ++i) chain += ", 10.0.0." + std::to_string(i % 250 + 1);
  const Identity id = client_identity(RequestInfo{"10.0.0.1", chain, std::nullopt}, options);
  EXPECT_EQ(id.source, kFallback);
  EXPECT_TRUE(Cidr::parse("10.0.0.0/8").contains(*id.address));
}

TEST(HostileInput, RotatingGarbageNeverRotatesTheKey) {
  // Behind a trusted proxy, whatever a client writes left of its own
  // address, or instead of a valid header, the key stays put.
  IdentityOptions options = trusting("10.0.0.0/8");
  IdentityOptions normalised;
  normalised.normalize = true;
  normalised.num_proxies = 1;
  for (int i = 0; i < 200; ++i) {
    const std::string junk =
        "junk" + std::to_string(i) + std::string(static_cast<std::size_t>(i), '\0');
    EXPECT_EQ(
        client_identity(RequestInfo{"10.0.0.1", junk + ", 203.0.113.5", std::nullopt}, options).key,
        "203.0.113.5");
    EXPECT_EQ(client_identity(RequestInfo{"10.0.0.1", junk, std::nullopt}, options).key,
              "10.0.0.1");
    EXPECT_EQ(client_identity(RequestInfo{"10.0.0.1", junk, std::nullopt}, normalised).key,
              "10.0.0.1");
    EXPECT_EQ(client_identity(RequestInfo{"garbage", junk, std::nullopt}, normalised).key,
              "unknown");
  }
}

// ---------------------------------------------------------------------------
// Allow / deny lists

TEST(AccessList, DenyWinsOverAllow) {
  AccessList list({Cidr::parse("10.0.0.0/8"), Cidr::parse("2001:db8::/32")},
                  {Cidr::parse("10.6.6.0/24")});
  struct Case {
    const char* address;
    Access access;
  };
  const Case cases[] = {
      {"10.1.2.3", Access::kAllow}, {"10.6.6.6", Access::kDeny},
      {"11.0.0.1", Access::kLimit}, {"2001:db8::5", Access::kAllow},
      {"::1", Access::kLimit},      {"::ffff:10.6.6.1", Access::kDeny},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.address);
    EXPECT_EQ(list.classify(IpAddress::parse(c.address)), c.access);
  }
  list.deny(Cidr::parse("2001:db8:bad::/48"));
  EXPECT_EQ(list.classify(IpAddress::parse("2001:db8:bad::1")), Access::kDeny);
  list.allow(Cidr::parse("192.0.2.0/24"));
  EXPECT_EQ(list.classify(IpAddress::parse("192.0.2.9")), Access::kAllow);
  EXPECT_EQ(list.classify(std::optional<IpAddress>{}), Access::kLimit);
  EXPECT_EQ(to_string(Access::kDeny), "deny");
  EXPECT_TRUE(AccessList{}.allowed().empty());
  EXPECT_EQ(AccessList{}.classify(IpAddress::parse("10.0.0.1")), Access::kLimit);
}

TEST(AccessList, ClassifiesTheUnmaskedClientAddress) {
  // The key is a /64, the allow entry a single address inside it: the
  // identity's address (unmasked) is what is classified.
  AccessList list({Cidr::parse("2001:db8:1:2::7")}, {});
  IdentityOptions options = trusting("10.0.0.0/8");
  const Identity id =
      client_identity(RequestInfo{"10.0.0.1", "2001:db8:1:2::7", std::nullopt}, options);
  EXPECT_EQ(id.key, "2001:db8:1:2::");
  EXPECT_EQ(list.classify(id.address), Access::kAllow);
}

TEST(IdentitySource, Names) {
  EXPECT_EQ(to_string(IdentitySource::kRemoteAddr), "remote_addr");
  EXPECT_EQ(to_string(IdentitySource::kXForwardedFor), "x_forwarded_for");
  EXPECT_EQ(to_string(IdentitySource::kForwarded), "forwarded");
  EXPECT_EQ(to_string(IdentitySource::kFallback), "fallback");
}

}  // namespace
}  // namespace shmlimit
