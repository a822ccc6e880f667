// Unit tests for SigV4: AWS's published example, sign/verify round trips, and every refusal.
#include "cloud/sigv4.h"

#include <gtest/gtest.h>

#include "cloud/ec2_error.h"

namespace tern::cloud {
namespace {

constexpr const char* kSecret = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
constexpr std::time_t kNow = 1440938160;  // 2015-08-30T12:36:00Z

// The example of the IAM User Guide's "Create a signed AWS API request" (GET ListUsers).
TEST(SigV4Test, MatchesAwsPublishedExample) {
  HttpRequest request{"GET",
                      "/",
                      "Action=ListUsers&Version=2010-05-08",
                      {{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"},
                       {"Host", "iam.amazonaws.com"},
                       {"X-Amz-Date", "20150830T123600Z"}},
                      ""};
  EXPECT_EQ(SigV4Signature(request, {"content-type", "host", "x-amz-date"}, "20150830T123600Z",
                           "us-east-1", "iam", kSecret),
            "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7");
}

HttpRequest Post(const std::string& body) {
  return {"POST",
          "/",
          "",
          {{"Host", "127.0.0.1:8787"},
           {"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}},
          body};
}

std::optional<std::string> Lookup(const std::string& key) {
  if (key == "AKIDEXAMPLE") return std::string(kSecret);
  return std::nullopt;
}

std::string CodeOf(const HttpRequest& request, std::time_t now = kNow) {
  try {
    VerifySigV4(request, Lookup, "ec2", now);
    return "ok";
  } catch (const Ec2Error& e) {
    return e.code();
  }
}

TEST(SigV4Test, SignedRequestsVerify) {
  HttpRequest request = Post("Action=DescribeInstances&Version=2016-11-15");
  SignSigV4(request, "AKIDEXAMPLE", kSecret, "us-east-1", "ec2", kNow);
  SignedBy by = VerifySigV4(request, Lookup, "ec2", kNow + 60);
  EXPECT_EQ(by.access_key_id, "AKIDEXAMPLE");
  EXPECT_EQ(by.region, "us-east-1");
  HttpRequest get{"GET", "/", "Action=Describe%20Instances&Filter.1.Name=a+b", {{"Host", "h"}}, ""};
  SignSigV4(get, "AKIDEXAMPLE", kSecret, "eu-west-1", "ec2", kNow);
  EXPECT_EQ(CodeOf(get), "ok");
}

TEST(SigV4Test, RefusesTamperedUnknownExpiredAndMalformed) {
  HttpRequest good = Post("Action=DescribeInstances");
  SignSigV4(good, "AKIDEXAMPLE", kSecret, "us-east-1", "ec2", kNow);

  HttpRequest body = good;
  body.body += "&InstanceId.1=i-1";
  EXPECT_EQ(CodeOf(body), "SignatureDoesNotMatch");
  HttpRequest header = good;
  header.headers[0].second = "evil.example";
  EXPECT_EQ(CodeOf(header), "SignatureDoesNotMatch");
  HttpRequest query = good;
  query.query = "x=1";
  EXPECT_EQ(CodeOf(query), "SignatureDoesNotMatch");
  HttpRequest wrong_secret = Post("Action=DescribeInstances");
  SignSigV4(wrong_secret, "AKIDEXAMPLE", "not-the-secret", "us-east-1", "ec2", kNow);
  EXPECT_EQ(CodeOf(wrong_secret), "SignatureDoesNotMatch");

  HttpRequest unknown = Post("Action=DescribeInstances");
  SignSigV4(unknown, "AKIDUNKNOWN", kSecret, "us-east-1", "ec2", kNow);
  EXPECT_EQ(CodeOf(unknown), "AuthFailure");
  EXPECT_EQ(CodeOf(Post("Action=DescribeInstances")), "AuthFailure");  // unsigned
  EXPECT_EQ(CodeOf(good, kNow + 16 * 60), "RequestExpired");
  EXPECT_EQ(CodeOf(good, kNow - 16 * 60), "RequestExpired");

  HttpRequest s3 = Post("");
  SignSigV4(s3, "AKIDEXAMPLE", kSecret, "us-east-1", "s3", kNow);
  EXPECT_EQ(CodeOf(s3), "IncompleteSignature");
  for (const char* bad : {"AWS4-HMAC-SHA1 Credential=a/b/c/ec2/aws4_request",
                          "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ec2",
                          "AWS4-HMAC-SHA256 garbage", "AWS4-HMAC-SHA256 ",
                          "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/ec2/"
                          "aws4_request, SignedHeaders=x-amz-date, Signature=00"}) {
    HttpRequest malformed = good;
    for (auto& [name, value] : malformed.headers) {
      if (name == "Authorization") value = bad;
    }
    EXPECT_EQ(CodeOf(malformed), "IncompleteSignature") << bad;
  }
}

}  // namespace
}  // namespace tern::cloud
