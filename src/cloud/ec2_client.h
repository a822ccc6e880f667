// A client of an EC2 Query API endpoint such as ternd (API version 2016-11-15): form-encoded
// POSTs signed with SigV4 the way botocore signs them, XML answers parsed with pugixml. Used by
// the `tern` command line and the API benchmarks.
#pragma once

#include <httplib.h>

#include <map>
#include <memory>
#include <pugixml.hpp>
#include <string>

#include "cloud/ec2_error.h"

namespace tern::cloud {

struct Ec2Endpoint {
  std::string host = "127.0.0.1";
  int port = 8787;
  std::string access_key_id, secret_access_key, region = "us-east-1";
};

// POSTs `body` (Action=...&Version=..., already form-encoded) to `endpoint` through `client`,
// signed at the current time. The result is empty when the connection failed.
httplib::Result SignedPost(httplib::Client& client, const Ec2Endpoint& endpoint,
                           const std::string& body);

// Form-encodes `params` (name -> value, botocore's flattening: InstanceId.1, Filter.1.Name ...)
// after Action=`action`&Version=2016-11-15.
std::string Ec2FormBody(const std::string& action,
                        const std::map<std::string, std::string>& params);

// One keep-alive connection to an endpoint. Not thread-safe.
class Ec2Client {
 public:
  explicit Ec2Client(Ec2Endpoint endpoint);

  // Calls `action`; returns the answer's document (its root is <ActionResponse>). Throws
  // Ec2Error: EC2's code and message for an error answer, "ConnectionFailed" when the endpoint
  // does not answer, "MalformedResponse" for an answer that is not XML.
  std::unique_ptr<pugi::xml_document> Call(const std::string& action,
                                           const std::map<std::string, std::string>& params);

 private:
  Ec2Endpoint endpoint_;
  httplib::Client http_;
};

}  // namespace tern::cloud
