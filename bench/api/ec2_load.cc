// tern-ec2-load: a load generator for ternd's EC2 Query API (bench/api/run). Sends one action
// (SigV4-signed POSTs, as botocore sends them) over C keep-alive connections, one thread each,
// for N requests in all, and prints latency percentiles and throughput as one JSON object.
// Python clients (boto3, the aws CLI) cost more per request than ternd does, hence C++ here.
#include <sched.h>

#include <CLI/CLI.hpp>
#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <ctime>
#include <latch>
#include <mutex>
#include <nlohmann/json.hpp>
#include <string>
#include <thread>
#include <vector>

#include "cloud/ec2_client.h"

namespace {

struct Options {
  tern::cloud::Ec2Endpoint endpoint;
  std::string body = "Action=DescribeInstances&Version=2016-11-15";
  int requests = 1000;
  int connections = 1;
  int warmup = 20;  // requests per connection before timing starts
  int cpu = -1;     // pin the client's threads to this CPU (-1: no pinning)
};

// One signed POST; returns its HTTP status (0 when the connection failed).
int Send(httplib::Client& client, const Options& o) {
  auto res = tern::cloud::SignedPost(client, o.endpoint, o.body);
  return res ? res->status : 0;
}

// Warms up one connection, counts down `warm`, waits for `go`, then runs `count` timed requests;
// appends their latencies (ns) to `out`.
void Connection(const Options& o, int count, std::latch& warm, std::latch& go,
                std::vector<int64_t>& out, std::atomic<int>& errors) {
  if (o.cpu >= 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(o.cpu, &set);
    sched_setaffinity(0, sizeof(set), &set);
  }
  httplib::Client client(o.endpoint.host, o.endpoint.port);
  client.set_keep_alive(true);
  client.set_tcp_nodelay(true);  // as botocore's urllib3 does
  for (int i = 0; i < o.warmup; ++i) Send(client, o);
  out.reserve(count);
  warm.count_down();
  go.wait();
  for (int i = 0; i < count; ++i) {
    auto start = std::chrono::steady_clock::now();
    int status = Send(client, o);
    out.push_back((std::chrono::steady_clock::now() - start).count());
    if (status != 200) errors++;
  }
}

double Percentile(const std::vector<int64_t>& sorted_ns, double p) {
  if (sorted_ns.empty()) return 0;
  size_t index = std::min(sorted_ns.size() - 1, static_cast<size_t>(p * sorted_ns.size()));
  return static_cast<double>(sorted_ns[index]) / 1e6;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  CLI::App app{"tern-ec2-load: latency and throughput of one EC2 API action against ternd"};
  tern::cloud::Ec2Endpoint& e = o.endpoint;
  app.add_option("--host", e.host)->capture_default_str();
  app.add_option("--port", e.port)->capture_default_str()->check(CLI::Range(1, 65535));
  app.add_option("--key", e.access_key_id, "Access key id")->required();
  app.add_option("--secret", e.secret_access_key, "Secret access key")->required();
  app.add_option("--region", e.region)->capture_default_str();
  app.add_option("--body", o.body, "The form body (Action=...&Version=...)")->capture_default_str();
  app.add_option("--requests", o.requests, "Timed requests in all")
      ->capture_default_str()
      ->check(CLI::Range(1, 10000000));
  app.add_option("--connections", o.connections, "Concurrent keep-alive connections")
      ->capture_default_str()
      ->check(CLI::Range(1, 256));
  app.add_option("--warmup", o.warmup, "Untimed requests per connection first")
      ->capture_default_str()
      ->check(CLI::Range(0, 100000));
  app.add_option("--cpu", o.cpu, "Pin the client to this CPU")->check(CLI::Range(-1, 1023));
  CLI11_PARSE(app, argc, argv);

  std::vector<std::vector<int64_t>> latencies(o.connections);
  std::atomic<int> errors = 0;
  std::vector<std::thread> threads;
  std::latch warm(o.connections), go(1);
  for (int c = 0; c < o.connections; ++c) {
    int count = o.requests / o.connections + (c < o.requests % o.connections ? 1 : 0);
    threads.emplace_back(Connection, std::cref(o), count, std::ref(warm), std::ref(go),
                         std::ref(latencies[c]), std::ref(errors));
  }
  warm.wait();
  auto start = std::chrono::steady_clock::now();
  go.count_down();
  for (std::thread& t : threads) t.join();
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::vector<int64_t> all;
  for (const auto& l : latencies) all.insert(all.end(), l.begin(), l.end());
  std::sort(all.begin(), all.end());
  nlohmann::json result = {{"requests", all.size()},
                           {"connections", o.connections},
                           {"errors", errors.load()},
                           {"seconds", seconds},
                           {"requests_per_s", static_cast<double>(all.size()) / seconds},
                           {"p50_ms", Percentile(all, 0.50)},
                           {"p99_ms", Percentile(all, 0.99)},
                           {"max_ms", Percentile(all, 1.0)}};
  std::printf("%s\n", result.dump().c_str());
  return errors.load() == 0 ? 0 : 1;
}
