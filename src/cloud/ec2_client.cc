// The EC2 Query API client (see ec2_client.h).
#include "cloud/ec2_client.h"

#include <ctime>

#include "cloud/sigv4.h"

namespace tern::cloud {

httplib::Result SignedPost(httplib::Client& client, const Ec2Endpoint& endpoint,
                           const std::string& body) {
  constexpr const char* kFormType = "application/x-www-form-urlencoded; charset=utf-8";
  HttpRequest request{
      "POST",
      "/",
      "",
      {{"Host", endpoint.host + ":" + std::to_string(endpoint.port)}, {"Content-Type", kFormType}},
      body};
  SignSigV4(request, endpoint.access_key_id, endpoint.secret_access_key, endpoint.region, "ec2",
            std::time(nullptr));
  httplib::Headers headers;
  for (const auto& [name, value] : request.headers) {
    if (name != "Content-Type") headers.emplace(name, value);
  }
  return client.Post("/", headers, body, kFormType);
}

std::string Ec2FormBody(const std::string& action,
                        const std::map<std::string, std::string>& params) {
  std::string body =
      "Action=" + httplib::detail::encode_query_param(action) + "&Version=2016-11-15";
  for (const auto& [name, value] : params) {
    body += "&" + httplib::detail::encode_query_param(name) + "=" +
            httplib::detail::encode_query_param(value);
  }
  return body;
}

Ec2Client::Ec2Client(Ec2Endpoint endpoint)
    : endpoint_(std::move(endpoint)), http_(endpoint_.host, endpoint_.port) {
  http_.set_keep_alive(true);
  http_.set_tcp_nodelay(true);
  http_.set_connection_timeout(10);
  http_.set_read_timeout(120);
}

std::unique_ptr<pugi::xml_document> Ec2Client::Call(
    const std::string& action, const std::map<std::string, std::string>& params) {
  httplib::Result res = SignedPost(http_, endpoint_, Ec2FormBody(action, params));
  if (!res) {
    throw Ec2Error("ConnectionFailed", "no answer from " + endpoint_.host + ":" +
                                           std::to_string(endpoint_.port) + " (" +
                                           httplib::to_string(res.error()) + ")");
  }
  auto doc = std::make_unique<pugi::xml_document>();
  if (!doc->load_string(res->body.c_str())) {
    throw Ec2Error("MalformedResponse", "the answer to " + action + " (HTTP " +
                                            std::to_string(res->status) + ") is not XML");
  }
  if (res->status != 200) {
    pugi::xml_node error = doc->select_node("/Response/Errors/Error").node();
    throw Ec2Error(error.child_value("Code"), error.child_value("Message"), res->status);
  }
  return doc;
}

}  // namespace tern::cloud
