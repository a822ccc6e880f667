// The HTTP front end of ternd's EC2 Query API (cpp-httplib): POST / with a form body or GET /
// with a query, authenticated with SigV4, dispatched by the Action parameter to a handler that
// fills an XML response; Ec2Errors become EC2's error document with their HTTP status, anything
// else InternalError (500). API reference:
// https://docs.aws.amazon.com/AWSEC2/latest/APIReference/Query-Requests.html
#pragma once

#include <httplib.h>

#include <functional>
#include <map>
#include <string>

#include "base/result.h"
#include "cloud/query.h"
#include "cloud/sigv4.h"
#include "cloud/xml_response.h"

namespace tern::cloud {

// What a handler knows about its request besides the parameters.
struct RequestContext {
  std::string request_id;
  SignedBy signer;
  bool dry_run = false;  // the DryRun parameter
};

// Called by a handler once it has read and validated every parameter, before it changes
// anything: UnknownParameter for parameters it did not read, then DryRunOperation (412) when
// the request is a dry run.
void FinishValidation(const RequestContext& context, const QueryParams& params);

using Handler = std::function<void(const RequestContext&, QueryParams&, XmlResponse&)>;

// Thread-safe once serving: Handle() before Listen(); handlers run on the server's threads.
class Ec2Server {
 public:
  explicit Ec2Server(SecretLookup secrets) : secrets_(std::move(secrets)) {}

  void Handle(const std::string& action, Handler handler) {
    handlers_[action] = std::move(handler);
  }

  // Answers one request: HTTP status and XML body. Never throws.
  std::pair<int, XmlBody> Serve(const HttpRequest& request,
                                std::map<std::string, std::string> params);

  // Binds host:port (port 0: any free one); returns the bound port.
  Result<int> Bind(const std::string& host, int port);
  // Serves until Stop() (blocking).
  void Run();
  void Stop() { http_.stop(); }

 private:
  SecretLookup secrets_;
  std::map<std::string, Handler> handlers_;
  httplib::Server http_;
};

}  // namespace tern::cloud
