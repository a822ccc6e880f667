// The benchmarks' EC2 Query API client: one SigV4-signed form POST to ternd, signed as botocore
// signs (ternd's own SignSigV4), over a cpp-httplib keep-alive connection. Not thread-safe: one
// client per thread.
#pragma once

#include <httplib.h>

#include <ctime>
#include <string>

#include "cloud/sigv4.h"

namespace tern::bench {

struct Ec2Endpoint {
  std::string host = "127.0.0.1";
  int port = 8787;
  std::string key, secret, region = "us-east-1";
};

// POSTs `body` (Action=...&Version=...) signed for `endpoint`; the result is empty when the
// connection failed.
inline httplib::Result SignedPost(httplib::Client& client, const Ec2Endpoint& endpoint,
                                  const std::string& body) {
  constexpr const char* kFormType = "application/x-www-form-urlencoded; charset=utf-8";
  cloud::HttpRequest request{
      "POST",
      "/",
      "",
      {{"Host", endpoint.host + ":" + std::to_string(endpoint.port)}, {"Content-Type", kFormType}},
      body};
  cloud::SignSigV4(request, endpoint.key, endpoint.secret, endpoint.region, "ec2",
                   std::time(nullptr));
  httplib::Headers headers;
  for (const auto& [name, value] : request.headers) {
    if (name != "Content-Type") headers.emplace(name, value);
  }
  return client.Post("/", headers, body, kFormType);
}

}  // namespace tern::bench
