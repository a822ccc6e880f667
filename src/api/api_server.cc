// The control API: request routing onto the Controller, and the HTTP server (Boost.Beast on a
// Boost.Asio Unix-domain acceptor, one I/O thread).
#include "api/api_server.h"

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/local/stream_protocol.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <optional>

#include "base/json_fields.h"

namespace tern::api {
namespace {

using nlohmann::json;
namespace asio = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using Socket = asio::local::stream_protocol::socket;

Response Fault(const std::string& message) { return Response{400, {{"fault_message", message}}}; }

Response FromStatus(const Status& status) {
  if (!status.ok()) return Fault(status.error().ToString());
  return Response{};
}

Response FromResult(const Result<json>& result) {
  if (!result.ok()) return Fault(result.error().ToString());
  return Response{200, *result};
}

// "/drives/rootfs" with prefix "/drives/" -> "rootfs"; nullopt when `path` is not under it or
// names something deeper.
std::optional<std::string> IdUnder(const std::string& path, std::string_view prefix) {
  if (!path.starts_with(prefix) || path.size() == prefix.size()) return std::nullopt;
  std::string id = path.substr(prefix.size());
  if (id.find('/') != std::string::npos) return std::nullopt;
  return id;
}

// The single-field bodies of PUT /actions and PATCH /vm: {key: one of `allowed`}.
Result<std::string> EnumField(const json& body, const char* what, const char* key,
                              std::initializer_list<const char*> allowed) {
  TERN_ASSIGN_OR_RETURN(Fields fields, Fields::Of(body, what, {key}));
  std::string value;
  TERN_RETURN_IF_ERROR(fields.Read(key, value, true));
  for (const char* a : allowed) {
    if (value == a) return value;
  }
  return Error(std::string(what) + ": `" + value + "` is not a valid " + key, EINVAL);
}

Response Action(Controller& controller, const json& body) {
  auto action = EnumField(body, "actions", "action_type",
                          {"InstanceStart", "SendCtrlAltDel", "FlushMetrics", "Shutdown"});
  if (!action.ok()) return Fault(action.error().message());
  if (*action == "InstanceStart") {
    Status started = controller.Start();
    if (!started.ok()) return Fault("InstanceStart: " + started.error().ToString());
    return Response{};
  }
  if (*action == "FlushMetrics") return FromStatus(controller.FlushMetrics());
  // SendCtrlAltDel asks the guest to shut down like Firecracker's does, through the ACPI power
  // button; Shutdown (Tern) also stops the VM hard if it is still running after the timeout.
  std::chrono::milliseconds timeout{0};
  if (*action == "Shutdown") timeout = controller.shutdown_timeout();
  return FromStatus(controller.GracefulShutdown(timeout));
}

Response VmState(Controller& controller, const json& body) {
  auto state = EnumField(body, "vm", "state", {"Paused", "Resumed"});
  if (!state.ok()) return Fault(state.error().message());
  return FromStatus(*state == "Paused" ? controller.Pause() : controller.Resume());
}

// Pre-boot configuration requests: `change` runs on the controller's VmResources.
Response Configure(Controller& controller, const std::string& what,
                   const std::function<Status(VmResources&)>& change) {
  return FromStatus(controller.Configure(what, change));
}

Response Get(Controller& controller, const std::string& path) {
  if (path == "/") return Response{200, controller.InstanceInfo()};
  if (path == "/vm/config") return Response{200, controller.VmConfigJson()};
  if (path == "/machine-config") return Response{200, controller.MachineConfigJson()};
  if (path == "/metrics") return Response{200, controller.Metrics()};
  if (path == "/balloon") return FromResult(controller.GetBalloon());
  if (path == "/balloon/statistics") return FromResult(controller.BalloonStatistics());
  return Fault("Invalid request method and/or path: GET " + path);
}

Response PutOrPatch(Controller& controller, bool patch, const std::string& path, const json& body) {
  const std::string method = patch ? "PATCH" : "PUT";
  if (path == "/machine-config") {
    return Configure(controller, method + " /machine-config",
                     [&](VmResources& r) { return r.SetMachineConfig(body, patch); });
  }
  if (auto id = IdUnder(path, "/drives/")) {
    return Configure(controller, method + " " + path, [&](VmResources& r) {
      return patch ? r.PatchDrive(*id, body) : r.PutDrive(*id, body);
    });
  }
  if (auto id = IdUnder(path, "/network-interfaces/")) {
    return Configure(controller, method + " " + path, [&](VmResources& r) {
      return patch ? r.PatchNetworkInterface(*id, body) : r.PutNetworkInterface(*id, body);
    });
  }
  if (patch && path == "/vm") return VmState(controller, body);
  if (patch && path == "/balloon") return FromStatus(controller.PatchBalloon(body));
  if (patch && path == "/balloon/statistics") {
    return FromStatus(controller.PatchBalloonStatistics(body));
  }
  if (!patch && path == "/balloon") {
    return Configure(controller, "PUT /balloon",
                     [&](VmResources& r) { return r.SetBalloon(body); });
  }
  if (!patch && path == "/vsock") {
    return Configure(controller, "PUT /vsock", [&](VmResources& r) { return r.SetVsock(body); });
  }
  if (!patch && path == "/smbios") {
    return Configure(controller, "PUT /smbios", [&](VmResources& r) { return r.SetSmbios(body); });
  }
  if (!patch && path == "/boot-source") {
    return Configure(controller, "PUT /boot-source",
                     [&](VmResources& r) { return r.SetBootSource(body); });
  }
  if (!patch && path == "/metrics") {
    return Configure(controller, "PUT /metrics",
                     [&](VmResources& r) { return r.SetMetrics(body); });
  }
  if (!patch && path == "/actions") return Action(controller, body);
  if (!patch && path == "/snapshot/create") return FromStatus(controller.CreateSnapshot(body));
  if (!patch && path == "/snapshot/load") return FromStatus(controller.LoadSnapshot(body));
  return Fault("Invalid request method and/or path: " + method + " " + path);
}

}  // namespace

Response Dispatch(Controller& controller, const std::string& method, const std::string& target,
                  const std::string& body) {
  if (target.empty() || target[0] != '/' || target.find_first_of("?#") != std::string::npos) {
    return Fault("Invalid request path: " + target);
  }
  std::string path =
      target.size() > 1 && target.back() == '/' ? target.substr(0, target.size() - 1) : target;
  if (method == "GET") return Get(controller, path);
  if (method != "PUT" && method != "PATCH") {
    return Fault("Invalid request method and/or path: " + method + " " + path);
  }
  if (body.empty()) return Fault(method + " " + path + ": the request needs a JSON body");
  json parsed;
  try {
    parsed = json::parse(body);
  } catch (const json::exception& e) {
    return Fault(method + " " + path + ": malformed JSON: " + e.what());
  }
  return PutOrPatch(controller, method == "PATCH", path, parsed);
}

// --- HTTP server ----------------------------------------------------------------------------

struct ApiServer::Impl {
  Impl(std::string path, Controller& controller)
      : socket_path(std::move(path)), controller(controller), acceptor(io) {}

  void Accept() {
    acceptor.async_accept([this](beast::error_code error, Socket socket) {
      if (error == asio::error::operation_aborted) return;
      if (!error) std::make_shared<Session>(std::move(socket), controller)->Read();
      Accept();
    });
  }

  // One connection: read a request, answer it, repeat while keep-alive.
  struct Session : std::enable_shared_from_this<Session> {
    Session(Socket socket, Controller& controller)
        : socket(std::move(socket)), controller(controller) {}

    void Read() {
      parser.emplace();
      parser->body_limit(kMaxBodyBytes);
      parser->header_limit(16 * 1024);
      http::async_read(
          socket, buffer, *parser,
          [self = shared_from_this()](beast::error_code error, size_t) { self->OnRead(error); });
    }

    void OnRead(beast::error_code error) {
      if (error == http::error::end_of_stream || error == asio::error::eof ||
          error == asio::error::operation_aborted || error == asio::error::connection_reset) {
        return;
      }
      if (error) {
        // Unparseable or too large: answer and close (the stream position is unknown).
        std::string what =
            error == http::error::body_limit
                ? "request payload exceeds " + std::to_string(kMaxBodyBytes) + " bytes"
                : "bad HTTP request: " + error.message();
        Write(Fault(what), 11, false);
        return;
      }
      auto& request = parser->get();
      Response response = Dispatch(controller, std::string(request.method_string()),
                                   std::string(request.target()), request.body());
      Write(response, request.version(), request.keep_alive());
    }

    void Write(const Response& response, unsigned version, bool keep_alive) {
      auto message = std::make_shared<http::response<http::string_body>>(
          static_cast<http::status>(response.status), version);
      message->set(http::field::server, "tern-vmm");
      if (!response.body.is_null()) {
        message->set(http::field::content_type, "application/json");
        // Replace, not throw, if a message quotes bytes that are not UTF-8 (a bad path).
        message->body() = response.body.dump(-1, ' ', false, json::error_handler_t::replace);
      }
      message->keep_alive(keep_alive);
      message->prepare_payload();
      http::async_write(
          socket, *message,
          [self = shared_from_this(), message, keep_alive](beast::error_code error, size_t) {
            if (error) return;
            if (keep_alive) {
              self->Read();
            } else {
              self->LingeringClose();
            }
          });
    }

    // After an answer that closes the connection: stop sending, then read and drop what the
    // client still sends (the rest of a refused body), up to kMaxDrainBytes, so that closing
    // with unread data (a TCP-style reset) does not destroy the answer before it is read.
    void LingeringClose() {
      beast::error_code ignored;
      socket.shutdown(Socket::shutdown_send, ignored);
      Drain();
    }

    void Drain() {
      drain.resize(64 * 1024);
      socket.async_read_some(asio::buffer(drain),
                             [self = shared_from_this()](beast::error_code error, size_t n) {
                               self->drained += n;
                               if (!error && self->drained < kMaxDrainBytes) self->Drain();
                             });
    }

    static constexpr size_t kMaxDrainBytes = 64 << 20;

    Socket socket;
    Controller& controller;
    beast::flat_buffer buffer;
    std::optional<http::request_parser<http::string_body>> parser;
    std::vector<uint8_t> drain;
    size_t drained = 0;
  };

  const std::string socket_path;
  Controller& controller;
  asio::io_context io;
  asio::local::stream_protocol::acceptor acceptor;
  std::thread thread;
};

Result<std::unique_ptr<ApiServer>> ApiServer::Start(const std::string& socket_path,
                                                    Controller& controller) {
  auto impl = std::make_unique<Impl>(socket_path, controller);
  beast::error_code error;
  asio::local::stream_protocol::endpoint endpoint(socket_path);
  if (impl->acceptor.open(endpoint.protocol(), error) || impl->acceptor.bind(endpoint, error) ||
      impl->acceptor.listen(asio::socket_base::max_listen_connections, error)) {
    return Error("--api-sock " + socket_path + ": " + error.message(), error.value());
  }
  impl->Accept();
  Impl* raw = impl.get();
  impl->thread = std::thread([raw] {
    pthread_setname_np(pthread_self(), "tern-api");
    raw->io.run();
  });
  return std::unique_ptr<ApiServer>(new ApiServer(std::move(impl)));
}

ApiServer::ApiServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ApiServer::~ApiServer() {
  impl_->io.stop();
  if (impl_->thread.joinable()) impl_->thread.join();
  ::unlink(impl_->socket_path.c_str());
}

}  // namespace tern::api
