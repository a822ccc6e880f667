// ternd's durable state: instances, images (AMIs), key pairs, tags and the account, in one
// SQLite database under the data directory (WAL, synchronous=FULL: a change is on disk before
// ternd answers the request that made it). Record fields follow the EC2 API reference's names.
#pragma once

#include <sqlite3.h>

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <stdexcept>
#include <string>
#include <unordered_map>
#include <vector>

namespace tern::cloud {

// EC2's instance states and their codes (InstanceState: pending 0, running 16, shutting-down 32,
// terminated 48, stopping 64, stopped 80).
enum class InstanceStateName {
  kPending = 0,
  kRunning = 16,
  kShuttingDown = 32,
  kTerminated = 48,
  kStopping = 64,
  kStopped = 80,
};
const char* StateName(InstanceStateName state);
inline int StateCode(InstanceStateName state) { return static_cast<int>(state); }

struct Instance {
  std::string instance_id;     // "i-" + 17 hex digits
  std::string reservation_id;  // "r-" + 17 hex digits
  std::string image_id;
  std::string instance_type;
  std::optional<std::string> key_name;
  std::string user_data;  // decoded bytes
  InstanceStateName state = InstanceStateName::kPending;
  std::string state_transition_reason;
  std::optional<std::string> state_reason_code;
  std::optional<std::string> state_reason_message;
  int64_t launch_time = 0;  // unix seconds
  int ami_launch_index = 0;
  std::optional<std::string> client_token;
  bool hibernation_configured = false;
  std::optional<int64_t> terminated_at;  // unix seconds
  // Not stored: set by the Store, different after every change of the instance or its tags
  // (lets readers cache what they derive from a record, e.g. its DescribeInstances XML).
  uint64_t revision = 0;
};

struct Image {
  std::string image_id;  // "ami-" + 17 hex digits
  std::string name;
  std::string description;
  std::string state = "available";  // pending | available | failed
  int64_t creation_date = 0;        // unix seconds
  std::string architecture = "x86_64";
  std::string root_device_name = "/dev/vda";
  std::string kernel_path;
  std::optional<std::string> initrd_path;
  std::optional<std::string> kernel_cmdline;
  std::string root_disk_path;
  std::optional<std::string> source_instance_id;
};

struct KeyPair {
  std::string key_pair_id;  // "key-" + 17 hex digits
  std::string key_name;
  std::string key_fingerprint;
  std::string key_type;  // rsa | ed25519
  std::string public_key;
  int64_t create_time = 0;
};

struct Account {
  std::string account_id;  // 12 digits
  std::string access_key_id;
  std::string secret_access_key;
};

// Database failures (I/O, corruption, constraint violations the caller did not expect).
class StoreError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Thread-safe: one connection, every method holds the store's mutex. Throws StoreError; a
// failed write changes neither the database nor what later reads return.
class Store {
 public:
  using Tags = std::map<std::string, std::string>;  // key -> value

  // Opens (creating if needed) `path` and migrates its schema. The account row is created on
  // first open.
  explicit Store(const std::string& path);
  ~Store();
  Store(const Store&) = delete;
  Store& operator=(const Store&) = delete;

  const Account& account() const { return account_; }

  // Random EC2-style id: prefix + "-" + 17 lowercase hex digits.
  static std::string NewId(const std::string& prefix);

  // Instances, in launch order. InsertInstances is atomic (all or none, with their tags). Reads
  // come from memory (copies: O(instances) for ListInstances, O(1) for GetInstance).
  void InsertInstances(const std::vector<Instance>& instances,
                       const std::map<std::string, std::string>& tags);
  std::vector<Instance> ListInstances();
  // The same records, shared and immutable (no copy: O(instances) pointer copies).
  std::vector<std::shared_ptr<const Instance>> InstanceRecords();
  std::optional<Instance> GetInstance(const std::string& instance_id);
  // GetInstance's record, shared and immutable; null when there is none.
  std::shared_ptr<const Instance> InstanceRecord(const std::string& instance_id);
  std::vector<Instance> FindByClientToken(const std::string& token);
  void UpdateInstance(const Instance& instance);
  // Writes `instance` only if the stored one is still in state `expected` (compare-and-set
  // between API threads and the supervisor); returns whether it did.
  bool UpdateInstanceIf(const Instance& instance, InstanceStateName expected);
  // Forgets instances terminated before `unix_seconds` (and their tags).
  void PurgeTerminatedBefore(int64_t unix_seconds);
  // How long a terminated instance stays visible, as in EC2 (seconds).
  static constexpr int64_t kTerminatedVisibleSeconds = 3600;

  // Images. InsertImage returns false when the name is taken.
  bool InsertImage(const Image& image);
  std::vector<Image> ListImages();
  std::optional<Image> GetImage(const std::string& image_id);
  void DeleteImage(const std::string& image_id);

  // Key pairs. InsertKeyPair returns false when the name is taken.
  bool InsertKeyPair(const KeyPair& key);
  std::vector<KeyPair> ListKeyPairs();
  std::optional<KeyPair> GetKeyPair(const std::string& key_name);
  void DeleteKeyPair(const std::string& key_name);

  // Tags: resource id -> key -> value.
  void SetTags(const std::vector<std::string>& resource_ids,
               const std::map<std::string, std::string>& tags);
  // Deletes `keys` (all when empty); a key with a value deletes only when the value matches.
  void DeleteTags(const std::vector<std::string>& resource_ids,
                  const std::vector<std::pair<std::string, std::optional<std::string>>>& keys);
  std::map<std::string, Tags> AllTags();
  // The tags of the given resources only (resource id -> key -> value).
  std::map<std::string, Tags> TagsOf(const std::vector<std::string>& resource_ids);

 private:
  class Statement;
  void Exec(const char* sql);
  Statement Prepare(const char* sql);
  // Runs `body` in BEGIN IMMEDIATE ... COMMIT; rolls back and rethrows what it throws.
  void Transaction(const std::function<void()>& body);
  void LoadOrCreateAccount();
  void LoadLocked();
  void IndexInstancesLocked();
  void UpdateInstanceLocked(const Instance& instance);
  // Stores `instance` in memory with a new revision (added, or replacing the record).
  void CacheInstanceLocked(Instance instance);
  // A new revision of the instance `resource_id` (if it is one): its tags changed.
  void TouchInstanceLocked(const std::string& resource_id);
  void InsertTagsLocked(const std::string& resource_id, const Tags& tags);
  void CacheTagsLocked(const std::string& resource_id, const Tags& tags);

  std::mutex mutex_;
  sqlite3* db_ = nullptr;
  Account account_;
  // The committed instances and tags (see store.cc).
  std::vector<std::shared_ptr<const Instance>> instances_;  // launch order
  std::unordered_map<std::string, size_t> instance_index_;  // instance id -> instances_ index
  uint64_t revision_ = 0;                                   // the last revision given
  std::map<std::string, Tags> tags_;                        // resource id -> tags
};

}  // namespace tern::cloud
