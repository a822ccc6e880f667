// The VMM's control API: HTTP/1.1 on a Unix socket, wire-compatible with Firecracker's API
// (same paths, JSON field names, status codes, and errors as {"fault_message": "..."}).
// The endpoints are listed in docs/api/openapi.yaml, which a system test checks against this
// server.
#pragma once

#include <memory>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>

#include "base/result.h"
#include "vmm/controller.h"

namespace tern::api {

// Largest request body accepted, in bytes (Firecracker's limit); larger ones get 400.
inline constexpr size_t kMaxBodyBytes = 51200;

// One HTTP response: status code and JSON body (null: no body, as for 204).
struct Response {
  int status = 204;
  nlohmann::json body;
};

// Routes one request to the controller. `method` "GET" | "PUT" | "PATCH" | ...; `target` the
// request path (a query string is an error); `body` the raw request body. Never throws: bad
// paths and methods, malformed or non-object JSON and refused actions are 400 responses with a
// fault_message; GETs answer 200 with JSON; accepted PUT/PATCH answer 204.
Response Dispatch(Controller& controller, const std::string& method, const std::string& target,
                  const std::string& body);

// Serves the API on a Unix socket from its own thread. Connections are served one request at a
// time, in arrival order (one I/O thread, like Firecracker's API thread); keep-alive is
// supported.
class ApiServer {
 public:
  // Binds and listens on `socket_path` (EADDRINUSE error if it exists: remove a stale socket
  // first, as Firecracker requires) and starts the thread.
  static Result<std::unique_ptr<ApiServer>> Start(const std::string& socket_path,
                                                  Controller& controller);
  // Stops the thread, closes every connection and removes the socket file.
  ~ApiServer();

 private:
  struct Impl;
  explicit ApiServer(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

}  // namespace tern::api
