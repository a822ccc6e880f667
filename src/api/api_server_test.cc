// Unit tests for the API's routing (Dispatch) and its HTTP server on a Unix socket: status
// codes, fault messages, state checks before boot, body limits.
#include "api/api_server.h"

#include <gtest/gtest.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <filesystem>

namespace tern::api {
namespace {

using nlohmann::json;

class DispatchTest : public ::testing::Test {
 protected:
  Response Call(const std::string& method, const std::string& path, const std::string& body = "") {
    return Dispatch(controller_, method, path, body);
  }
  Controller controller_{VmResources{}, "unit"};
};

TEST_F(DispatchTest, GetsAnswer200WithJson) {
  Response info = Call("GET", "/");
  EXPECT_EQ(info.status, 200);
  EXPECT_EQ(info.body["state"], "Not started");
  EXPECT_EQ(info.body["id"], "unit");
  EXPECT_EQ(Call("GET", "/machine-config").status, 200);
  EXPECT_EQ(Call("GET", "/vm/config/").status, 200);  // a trailing slash is accepted
}

TEST_F(DispatchTest, AcceptedPutsAnswer204WithoutBody) {
  Response put = Call("PUT", "/machine-config", R"({"vcpu_count": 2, "mem_size_mib": 128})");
  EXPECT_EQ(put.status, 204);
  EXPECT_TRUE(put.body.is_null());
}

TEST_F(DispatchTest, ErrorsAre400WithFaultMessage) {
  for (auto [method, path, body] : std::vector<std::tuple<std::string, std::string, std::string>>{
           {"GET", "/nope", ""},
           {"POST", "/actions", "{}"},
           {"PUT", "/boot-source", ""},
           {"PUT", "/boot-source", "{"},
           {"PUT", "/boot-source", "\"text\""},
           {"PUT", "/drives/", "{}"},
           {"PUT", "/drives/a/b", "{}"},
           {"PUT", "/actions", R"({"action_type": "Reboot"})"},
           {"PATCH", "/vm", R"({"state": "Paused"})"},
           {"GET", "relative", ""},
           {"GET", "/?q", ""}}) {
    Response r = Call(method, path, body);
    EXPECT_EQ(r.status, 400) << method << " " << path;
    EXPECT_TRUE(r.body.contains("fault_message") &&
                !r.body["fault_message"].get<std::string>().empty())
        << method << " " << path;
  }
}

TEST_F(DispatchTest, InstanceStartWithoutBootSourceIsRefused) {
  Response r = Call("PUT", "/actions", R"({"action_type": "InstanceStart"})");
  EXPECT_EQ(r.status, 400);
  EXPECT_NE(r.body["fault_message"].get<std::string>().find("no boot source"), std::string::npos);
}

// A raw HTTP exchange with the server.
std::string Exchange(const std::string& path, const std::string& request) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::snprintf(addr.sun_path, sizeof(addr.sun_path), "%s", path.c_str());
  if (::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) return "connect failed";
  (void)!::write(fd, request.data(), request.size());
  std::string reply;
  char buffer[4096];
  ssize_t n;
  while ((n = ::read(fd, buffer, sizeof(buffer))) > 0) {
    reply.append(buffer, n);
    if (reply.find("\r\n\r\n") != std::string::npos &&
        (reply.find("Connection: close") != std::string::npos ||
         reply.starts_with("HTTP/1.1 204") || reply.back() == '}')) {
      break;
    }
  }
  ::close(fd);
  return reply;
}

TEST(ApiServerTest, ServesHttpOnUnixSocketAndRemovesItOnDestruction) {
  std::string path =
      std::filesystem::temp_directory_path() / ("tern-api-" + std::to_string(getpid()));
  std::filesystem::remove(path);
  Controller controller(VmResources{}, "srv");
  {
    auto server = ApiServer::Start(path, controller);
    ASSERT_TRUE(server.ok()) << server.error().ToString();
    EXPECT_FALSE(ApiServer::Start(path, controller).ok());  // in use
    std::string reply = Exchange(path, "GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 200")) << reply;
    EXPECT_NE(reply.find(R"("id":"srv")"), std::string::npos) << reply;
    std::string big = "PUT /boot-source HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n";
    reply = Exchange(path, big);
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 400")) << reply;
    EXPECT_NE(reply.find("exceeds 51200 bytes"), std::string::npos) << reply;
    reply = Exchange(path, "garbage\r\n\r\n");
    EXPECT_TRUE(reply.starts_with("HTTP/1.1 400")) << reply;
  }
  EXPECT_FALSE(std::filesystem::exists(path));
}

}  // namespace
}  // namespace tern::api
