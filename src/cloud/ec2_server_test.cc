// Unit tests for Ec2Server over real HTTP (cpp-httplib client, SigV4-signed): success XML,
// authentication failures, unknown actions and parameters, DryRun, and a handler's crash
// answered as InternalError while the server keeps serving; and Ec2Client against it.
#include "cloud/ec2_server.h"

#include <gtest/gtest.h>

#include <thread>

#include "cloud/ec2_client.h"

namespace tern::cloud {
namespace {

constexpr const char* kKey = "AKIDTERNTEST";
constexpr const char* kSecret = "secret";

class Ec2ServerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    server_.Handle("Echo",
                   [](const RequestContext& context, QueryParams& params, XmlResponse& response) {
                     std::string text = params.Required("Text");
                     FinishValidation(context, params);
                     AddText(response.root(), "text", text);
                   });
    server_.Handle("Crash", [](const RequestContext&, QueryParams&, XmlResponse&) {
      throw std::runtime_error("boom");
    });
    Result<int> port = server_.Bind("127.0.0.1", 0);
    ASSERT_TRUE(port.ok());
    port_ = *port;
    thread_ = std::thread([this] { server_.Run(); });
  }
  void TearDown() override {
    server_.Stop();
    thread_.join();
  }

  // POSTs `body` signed with `secret` (unsigned when empty); returns status and body.
  std::pair<int, std::string> Post(const std::string& body, const std::string& secret = kSecret) {
    httplib::Client client("127.0.0.1", port_);
    httplib::Result res =
        secret.empty()
            ? client.Post("/", body, "application/x-www-form-urlencoded; charset=utf-8")
            : SignedPost(client, Ec2Endpoint{"127.0.0.1", port_, kKey, secret, "us-east-1"}, body);
    if (!res) return {0, ""};
    return {res->status, res->body};
  }

  static std::string CodeOf(const std::string& xml) {
    pugi::xml_document doc;
    doc.load_string(xml.c_str());
    return doc.child("Response").child("Errors").child("Error").child_value("Code");
  }

  Ec2Server server_{[](const std::string& key) -> std::optional<std::string> {
    if (key == kKey) return std::string(kSecret);
    return std::nullopt;
  }};
  int port_ = 0;
  std::thread thread_;
};

TEST_F(Ec2ServerTest, AnswersSignedRequests) {
  auto [status, body] = Post("Action=Echo&Version=2016-11-15&Text=hello%20there");
  EXPECT_EQ(status, 200);
  pugi::xml_document doc;
  ASSERT_TRUE(doc.load_string(body.c_str()));
  EXPECT_STREQ(doc.child("EchoResponse").child_value("text"), "hello there");
  EXPECT_EQ(std::string(doc.child("EchoResponse").child_value("requestId")).size(), 36u);
}

TEST_F(Ec2ServerTest, RefusesWithEc2Errors) {
  auto unsigned_request = Post("Action=Echo&Text=x", "");
  EXPECT_EQ(unsigned_request.first, 401);
  EXPECT_EQ(CodeOf(unsigned_request.second), "AuthFailure");
  auto [status, body] = Post("Action=Echo&Text=x", "wrong");
  EXPECT_EQ(status, 403);
  EXPECT_EQ(CodeOf(body), "SignatureDoesNotMatch");
  EXPECT_EQ(CodeOf(Post("Action=Nope").second), "InvalidAction");
  EXPECT_EQ(CodeOf(Post("Version=2016-11-15").second), "InvalidAction");
  EXPECT_EQ(CodeOf(Post("Action=Echo").second), "MissingParameter");
  EXPECT_EQ(CodeOf(Post("Action=Echo&Text=x&Extra=1").second), "UnknownParameter");
  auto dry = Post("Action=Echo&Text=x&DryRun=true");
  EXPECT_EQ(dry.first, 412);
  EXPECT_EQ(CodeOf(dry.second), "DryRunOperation");
  EXPECT_EQ(Post(std::string(2 << 20, 'x')).first, 413);
}

TEST_F(Ec2ServerTest, HandlerCrashIsInternalErrorAndServingGoesOn) {
  auto [status, body] = Post("Action=Crash");
  EXPECT_EQ(status, 500);
  EXPECT_EQ(CodeOf(body), "InternalError");
  EXPECT_EQ(Post("Action=Echo&Text=after").first, 200);
}

TEST_F(Ec2ServerTest, Ec2ClientEncodesParametersAndRaisesEc2Errors) {
  Ec2Client client(Ec2Endpoint{"127.0.0.1", port_, kKey, kSecret, "us-east-1"});
  auto doc = client.Call("Echo", {{"Text", "a&b=c d+é"}});
  EXPECT_STREQ(doc->child("EchoResponse").child_value("text"), "a&b=c d+é");
  try {
    client.Call("Echo", {});
    FAIL() << "no error";
  } catch (const Ec2Error& e) {
    EXPECT_EQ(e.code(), "MissingParameter");
    EXPECT_EQ(e.http_status(), 400);
  }
  Ec2Client wrong(Ec2Endpoint{"127.0.0.1", port_, kKey, "other", "us-east-1"});
  EXPECT_THROW(wrong.Call("Echo", {{"Text", "x"}}), Ec2Error);
  server_.Stop();
  thread_.join();
  thread_ = std::thread([] {});  // for TearDown
  try {
    client.Call("Echo", {{"Text", "x"}});
    FAIL() << "no error";
  } catch (const Ec2Error& e) {
    EXPECT_EQ(e.code(), "ConnectionFailed");
  }
}

}  // namespace
}  // namespace tern::cloud
