// The EC2 Query API front end (see ec2_server.h).
#include "cloud/ec2_server.h"

#include <spdlog/spdlog.h>

#include <ctime>

namespace tern::cloud {
namespace {

constexpr size_t kMaxBodyBytes = 1 << 20;

HttpRequest FromHttplib(const httplib::Request& req) {
  HttpRequest request;
  request.method = req.method;
  size_t question = req.target.find('?');
  request.path = req.target.substr(0, question);
  if (question != std::string::npos) request.query = req.target.substr(question + 1);
  for (const auto& [name, value] : req.headers) request.headers.emplace_back(name, value);
  request.body = req.body;
  return request;
}

// Writes `body` to the connection in sends of up to kSendBytes: a listing is ~1000 cached
// fragments of ~1.3 KiB, and a send each would cost a system call and a TCP segment each.
bool WriteBatched(const XmlBody& body, httplib::DataSink& sink) {
  constexpr size_t kSendBytes = 64 * 1024;
  thread_local std::string buffer;
  buffer.clear();
  buffer.reserve(kSendBytes);
  auto flush = [&] {
    bool ok = buffer.empty() || sink.write(buffer.data(), buffer.size());
    buffer.clear();
    return ok;
  };
  bool ok = body.WriteTo([&](std::string_view piece) {
    if (buffer.size() + piece.size() > kSendBytes && !flush()) return false;
    if (piece.size() >= kSendBytes) return sink.write(piece.data(), piece.size());
    buffer += piece;
    return true;
  });
  return ok && flush();
}

}  // namespace

void FinishValidation(const RequestContext& context, const QueryParams& params) {
  params.RejectUnread();
  if (context.dry_run) {
    throw Ec2Error("DryRunOperation", "Request would have succeeded, but DryRun flag is set.", 412);
  }
}

std::pair<int, XmlBody> Ec2Server::Serve(const HttpRequest& request,
                                         std::map<std::string, std::string> params) {
  RequestContext context{NewRequestId(), {}, false};
  try {
    context.signer = VerifySigV4(request, secrets_, "ec2", std::time(nullptr));
    QueryParams query(std::move(params));
    std::optional<std::string> action = query.Get("Action");
    auto handler = action ? handlers_.find(*action) : handlers_.end();
    if (handler == handlers_.end()) {
      throw Ec2Error("InvalidAction", "The action " + action.value_or("(none)") +
                                          " is not valid for this web service.");
    }
    context.dry_run = query.Bool("DryRun", false);
    XmlResponse response(*action, context.request_id);
    handler->second(context, query, response);
    return {200, response.Render()};
  } catch (const Ec2Error& e) {
    return {e.http_status(), XmlBody(ErrorXml(e, context.request_id))};
  } catch (const std::exception& e) {
    spdlog::error("request {}: {}", context.request_id, e.what());
    return {500, XmlBody(ErrorXml(Ec2Error::Internal(e.what()), context.request_id))};
  }
}

Result<int> Ec2Server::Bind(const std::string& host, int port) {
  http_.set_payload_max_length(kMaxBodyBytes);
  // No Nagle delay: a response leaves in more than one write, and the client's delayed ACK of
  // the first would hold the rest back for ~40 ms.
  http_.set_tcp_nodelay(true);
  // SO_REUSEADDR only: httplib's default also sets SO_REUSEPORT, which would let a second
  // ternd bind the same port and take half of the requests.
  http_.set_socket_options([](socket_t sock) {
    int yes = 1;
    ::setsockopt(sock, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof(yes));
  });
  auto serve = [this](const httplib::Request& req, httplib::Response& res) {
    std::map<std::string, std::string> params(req.params.begin(), req.params.end());
    auto [status, body] = Serve(FromHttplib(req), std::move(params));
    res.status = status;
    auto shared = std::make_shared<const XmlBody>(std::move(body));
    res.set_content_provider(shared->size(), "text/xml;charset=UTF-8",
                             [shared](size_t offset, size_t, httplib::DataSink& sink) {
                               return offset == 0 && WriteBatched(*shared, sink);
                             });
  };
  http_.Get("/", serve);
  http_.Post("/", serve);
  int bound =
      port == 0 ? http_.bind_to_any_port(host) : (http_.bind_to_port(host, port) ? port : -1);
  if (bound < 0) return Error::FromErrno("listen on " + host + ":" + std::to_string(port));
  return bound;
}

void Ec2Server::Run() { http_.listen_after_bind(); }

}  // namespace tern::cloud
