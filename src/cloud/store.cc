// ternd's SQLite store (see store.h). Each record is a row keyed by its id, its fields one JSON
// document (nlohmann), plus the columns lookups need (client token, image name). Instances and
// tags are also kept in memory, written after SQLite commits: reads (DescribeInstances, the
// supervisor's pass) never parse a row.
#include "cloud/store.h"

#include <openssl/rand.h>

#include <algorithm>
#include <functional>
#include <nlohmann/json.hpp>

#include "cloud/base64.h"

namespace tern::cloud {
namespace {

using nlohmann::json;

constexpr const char* kSchema[] = {
    "CREATE TABLE instances (id TEXT PRIMARY KEY, client_token TEXT, doc TEXT NOT NULL)",
    "CREATE INDEX instances_client_token ON instances (client_token)",
    "CREATE TABLE images (id TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, doc TEXT NOT NULL)",
    "CREATE TABLE key_pairs (name TEXT PRIMARY KEY, doc TEXT NOT NULL)",
    "CREATE TABLE tags (resource_id TEXT NOT NULL, key TEXT NOT NULL, value TEXT NOT NULL,"
    " PRIMARY KEY (resource_id, key))",
    "CREATE TABLE account (id INTEGER PRIMARY KEY CHECK (id = 1), doc TEXT NOT NULL)",
};

template <typename T>
void Put(json& doc, const char* key, const std::optional<T>& value) {
  if (value) doc[key] = *value;
}

template <typename T>
std::optional<T> Opt(const json& doc, const char* key) {
  if (!doc.contains(key)) return std::nullopt;
  return doc[key].get<T>();
}

json ToJson(const Instance& i) {
  json doc = {{"instance_id", i.instance_id},
              {"reservation_id", i.reservation_id},
              {"image_id", i.image_id},
              {"instance_type", i.instance_type},
              {"user_data", Base64Encode(i.user_data)},
              {"state", StateCode(i.state)},
              {"state_transition_reason", i.state_transition_reason},
              {"launch_time", i.launch_time},
              {"ami_launch_index", i.ami_launch_index},
              {"hibernation_configured", i.hibernation_configured}};
  Put(doc, "key_name", i.key_name);
  Put(doc, "state_reason_code", i.state_reason_code);
  Put(doc, "state_reason_message", i.state_reason_message);
  Put(doc, "client_token", i.client_token);
  Put(doc, "terminated_at", i.terminated_at);
  return doc;
}

Instance InstanceFrom(const json& doc) {
  Instance i;
  i.instance_id = doc.at("instance_id");
  i.reservation_id = doc.at("reservation_id");
  i.image_id = doc.at("image_id");
  i.instance_type = doc.at("instance_type");
  std::optional<std::string> user_data = Base64Decode(doc.at("user_data"));
  if (!user_data) throw StoreError("stored user data is not base64");
  i.user_data = std::move(*user_data);
  i.state = static_cast<InstanceStateName>(doc.at("state").get<int>());
  i.state_transition_reason = doc.at("state_transition_reason");
  i.launch_time = doc.at("launch_time");
  i.ami_launch_index = doc.at("ami_launch_index");
  i.hibernation_configured = doc.at("hibernation_configured");
  i.key_name = Opt<std::string>(doc, "key_name");
  i.state_reason_code = Opt<std::string>(doc, "state_reason_code");
  i.state_reason_message = Opt<std::string>(doc, "state_reason_message");
  i.client_token = Opt<std::string>(doc, "client_token");
  i.terminated_at = Opt<int64_t>(doc, "terminated_at");
  return i;
}

json ToJson(const Image& i) {
  json doc = {{"image_id", i.image_id},
              {"name", i.name},
              {"description", i.description},
              {"state", i.state},
              {"creation_date", i.creation_date},
              {"architecture", i.architecture},
              {"root_device_name", i.root_device_name},
              {"kernel_path", i.kernel_path},
              {"root_disk_path", i.root_disk_path}};
  Put(doc, "initrd_path", i.initrd_path);
  Put(doc, "kernel_cmdline", i.kernel_cmdline);
  Put(doc, "source_instance_id", i.source_instance_id);
  return doc;
}

Image ImageFrom(const json& doc) {
  Image i;
  i.image_id = doc.at("image_id");
  i.name = doc.at("name");
  i.description = doc.at("description");
  i.state = doc.at("state");
  i.creation_date = doc.at("creation_date");
  i.architecture = doc.at("architecture");
  i.root_device_name = doc.at("root_device_name");
  i.kernel_path = doc.at("kernel_path");
  i.root_disk_path = doc.at("root_disk_path");
  i.initrd_path = Opt<std::string>(doc, "initrd_path");
  i.kernel_cmdline = Opt<std::string>(doc, "kernel_cmdline");
  i.source_instance_id = Opt<std::string>(doc, "source_instance_id");
  return i;
}

json ToJson(const KeyPair& k) {
  return {{"key_pair_id", k.key_pair_id},         {"key_name", k.key_name},
          {"key_fingerprint", k.key_fingerprint}, {"key_type", k.key_type},
          {"public_key", k.public_key},           {"create_time", k.create_time}};
}

KeyPair KeyPairFrom(const json& doc) {
  return {doc.at("key_pair_id"), doc.at("key_name"),   doc.at("key_fingerprint"),
          doc.at("key_type"),    doc.at("public_key"), doc.at("create_time")};
}

}  // namespace

const char* StateName(InstanceStateName state) {
  switch (state) {
    case InstanceStateName::kPending:
      return "pending";
    case InstanceStateName::kRunning:
      return "running";
    case InstanceStateName::kShuttingDown:
      return "shutting-down";
    case InstanceStateName::kTerminated:
      return "terminated";
    case InstanceStateName::kStopping:
      return "stopping";
    case InstanceStateName::kStopped:
      return "stopped";
  }
  return "pending";
}

// A prepared statement: binds text parameters in order, steps, reads text columns; finalized
// on destruction. Used with the store's mutex held.
class Store::Statement {
 public:
  Statement(sqlite3* db, const char* sql) : db_(db) {
    if (sqlite3_prepare_v2(db, sql, -1, &stmt_, nullptr) != SQLITE_OK) Fail(sql);
  }
  ~Statement() { sqlite3_finalize(stmt_); }
  Statement(const Statement&) = delete;

  Statement& Bind(const std::optional<std::string>& value) {
    int rc = value ? sqlite3_bind_text(stmt_, ++index_, value->data(),
                                       static_cast<int>(value->size()), SQLITE_TRANSIENT)
                   : sqlite3_bind_null(stmt_, ++index_);
    if (rc != SQLITE_OK) Fail("bind");
    return *this;
  }
  Statement& Bind(int64_t value) {
    if (sqlite3_bind_int64(stmt_, ++index_, value) != SQLITE_OK) Fail("bind");
    return *this;
  }
  // Returns true while there is a row; false when done. `constraint` (if given) is set instead
  // of throwing when a UNIQUE/PRIMARY KEY constraint fails.
  bool Step(bool* constraint = nullptr) {
    int rc = sqlite3_step(stmt_);
    if (rc == SQLITE_ROW) return true;
    if (rc == SQLITE_DONE) return false;
    if (constraint && rc == SQLITE_CONSTRAINT) {
      *constraint = true;
      return false;
    }
    Fail("step");
  }
  std::string Text(int column) const {
    auto text = reinterpret_cast<const char*>(sqlite3_column_text(stmt_, column));
    return text ? std::string(text, sqlite3_column_bytes(stmt_, column)) : std::string();
  }
  json Doc(int column) const { return json::parse(Text(column)); }

 private:
  [[noreturn]] void Fail(const char* what) const {
    throw StoreError(std::string("SQLite ") + what + ": " + sqlite3_errmsg(db_));
  }

  sqlite3* db_;
  sqlite3_stmt* stmt_ = nullptr;
  int index_ = 0;
};

Store::Store(const std::string& path) {
  if (sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr) !=
      SQLITE_OK) {
    std::string message = db_ ? sqlite3_errmsg(db_) : "out of memory";
    sqlite3_close(db_);
    throw StoreError("open " + path + ": " + message);
  }
  sqlite3_busy_timeout(db_, 5000);
  Exec("PRAGMA journal_mode=WAL");
  Exec("PRAGMA synchronous=FULL");
  Statement version(db_, "PRAGMA user_version");
  version.Step();
  size_t applied = std::stoul(version.Text(0));
  Transaction([&] {
    for (size_t i = applied; i < std::size(kSchema); ++i) Exec(kSchema[i]);
    Exec(("PRAGMA user_version=" + std::to_string(std::size(kSchema))).c_str());
  });
  LoadOrCreateAccount();
  LoadLocked();
}

Store::~Store() { sqlite3_close(db_); }

void Store::Exec(const char* sql) {
  char* error = nullptr;
  if (sqlite3_exec(db_, sql, nullptr, nullptr, &error) != SQLITE_OK) {
    std::string message = error ? error : "?";
    sqlite3_free(error);
    throw StoreError(std::string("SQLite: ") + sql + ": " + message);
  }
}

Store::Statement Store::Prepare(const char* sql) { return Statement(db_, sql); }

std::string Store::NewId(const std::string& prefix) {
  unsigned char bytes[9];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) throw StoreError("RAND_bytes failed");
  static constexpr char kHex[] = "0123456789abcdef";
  std::string id = prefix + "-";
  for (int i = 0; i < 17; ++i) id += kHex[(bytes[i / 2] >> (i % 2 ? 0 : 4)) & 0xf];
  return id;
}

void Store::LoadOrCreateAccount() {
  Statement select = Prepare("SELECT doc FROM account WHERE id = 1");
  if (select.Step()) {
    json doc = select.Doc(0);
    account_ = {doc.at("account_id"), doc.at("access_key_id"), doc.at("secret_access_key")};
    return;
  }
  unsigned char bytes[64];
  if (RAND_bytes(bytes, sizeof(bytes)) != 1) throw StoreError("RAND_bytes failed");
  static constexpr char kUpper[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
  account_.account_id.clear();
  for (int i = 0; i < 12; ++i) account_.account_id += char('0' + bytes[i] % 10);
  account_.access_key_id = "AKIA";
  for (int i = 0; i < 16; ++i) account_.access_key_id += kUpper[bytes[12 + i] % 32];
  account_.secret_access_key = Base64Encode(std::string(bytes + 28, bytes + 58)).substr(0, 40);
  json doc = {{"account_id", account_.account_id},
              {"access_key_id", account_.access_key_id},
              {"secret_access_key", account_.secret_access_key}};
  Prepare("INSERT INTO account (id, doc) VALUES (1, ?)").Bind(doc.dump()).Step();
}

void Store::Transaction(const std::function<void()>& body) {
  Exec("BEGIN IMMEDIATE");
  try {
    body();
    Exec("COMMIT");
  } catch (...) {
    Exec("ROLLBACK");
    throw;
  }
}

void Store::LoadLocked() {
  Statement instances = Prepare("SELECT doc FROM instances ORDER BY rowid");
  while (instances.Step()) {
    Instance instance = InstanceFrom(instances.Doc(0));
    instance.revision = ++revision_;
    instances_.push_back(std::make_shared<const Instance>(std::move(instance)));
  }
  IndexInstancesLocked();
  Statement tags = Prepare("SELECT resource_id, key, value FROM tags");
  while (tags.Step()) tags_[tags.Text(0)][tags.Text(1)] = tags.Text(2);
}

void Store::IndexInstancesLocked() {
  instance_index_.clear();
  for (size_t i = 0; i < instances_.size(); ++i) instance_index_[instances_[i]->instance_id] = i;
}

void Store::CacheInstanceLocked(Instance instance) {
  instance.revision = ++revision_;
  auto record = std::make_shared<const Instance>(std::move(instance));
  auto [found, added] = instance_index_.try_emplace(record->instance_id, instances_.size());
  if (added) {
    instances_.push_back(std::move(record));
  } else {
    instances_[found->second] = std::move(record);
  }
}

void Store::InsertInstances(const std::vector<Instance>& instances,
                            const std::map<std::string, std::string>& tags) {
  std::lock_guard lock(mutex_);
  Transaction([&] {
    for (const Instance& instance : instances) {
      Prepare("INSERT INTO instances (id, client_token, doc) VALUES (?, ?, ?)")
          .Bind(instance.instance_id)
          .Bind(instance.client_token)
          .Bind(ToJson(instance).dump())
          .Step();
      InsertTagsLocked(instance.instance_id, tags);
    }
  });
  for (const Instance& instance : instances) {
    CacheTagsLocked(instance.instance_id, tags);
    CacheInstanceLocked(instance);
  }
}

std::vector<Instance> Store::ListInstances() {
  std::lock_guard lock(mutex_);
  std::vector<Instance> out;
  out.reserve(instances_.size());
  for (const auto& record : instances_) out.push_back(*record);
  return out;
}

std::vector<std::shared_ptr<const Instance>> Store::InstanceRecords() {
  std::lock_guard lock(mutex_);
  return instances_;
}

std::optional<Instance> Store::GetInstance(const std::string& instance_id) {
  std::lock_guard lock(mutex_);
  auto found = instance_index_.find(instance_id);
  if (found == instance_index_.end()) return std::nullopt;
  return *instances_[found->second];
}

std::shared_ptr<const Instance> Store::InstanceRecord(const std::string& instance_id) {
  std::lock_guard lock(mutex_);
  auto found = instance_index_.find(instance_id);
  return found == instance_index_.end() ? nullptr : instances_[found->second];
}

std::vector<Instance> Store::FindByClientToken(const std::string& token) {
  std::lock_guard lock(mutex_);
  std::vector<Instance> out;
  for (const auto& record : instances_) {
    if (record->client_token == token) out.push_back(*record);
  }
  return out;
}

void Store::UpdateInstance(const Instance& instance) {
  std::lock_guard lock(mutex_);
  UpdateInstanceLocked(instance);
}

bool Store::UpdateInstanceIf(const Instance& instance, InstanceStateName expected) {
  std::lock_guard lock(mutex_);
  auto found = instance_index_.find(instance.instance_id);
  if (found == instance_index_.end() || instances_[found->second]->state != expected) return false;
  UpdateInstanceLocked(instance);
  return true;
}

void Store::UpdateInstanceLocked(const Instance& instance) {
  if (!instance_index_.count(instance.instance_id)) return;
  Prepare("UPDATE instances SET doc = ? WHERE id = ?")
      .Bind(ToJson(instance).dump())
      .Bind(instance.instance_id)
      .Step();
  CacheInstanceLocked(instance);
}

void Store::PurgeTerminatedBefore(int64_t unix_seconds) {
  std::lock_guard lock(mutex_);
  auto old = [&](const std::shared_ptr<const Instance>& i) {
    return i->terminated_at && *i->terminated_at < unix_seconds;
  };
  std::vector<std::string> ids;
  for (const auto& record : instances_) {
    if (old(record)) ids.push_back(record->instance_id);
  }
  if (ids.empty()) return;
  Transaction([&] {
    for (const std::string& id : ids) {
      Prepare("DELETE FROM instances WHERE id = ?").Bind(id).Step();
      Prepare("DELETE FROM tags WHERE resource_id = ?").Bind(id).Step();
    }
  });
  for (const std::string& id : ids) tags_.erase(id);
  std::erase_if(instances_, old);
  IndexInstancesLocked();
}

bool Store::InsertImage(const Image& image) {
  std::lock_guard lock(mutex_);
  bool taken = false;
  Prepare("INSERT INTO images (id, name, doc) VALUES (?, ?, ?)")
      .Bind(image.image_id)
      .Bind(image.name)
      .Bind(ToJson(image).dump())
      .Step(&taken);
  return !taken;
}

std::vector<Image> Store::ListImages() {
  std::lock_guard lock(mutex_);
  std::vector<Image> out;
  Statement select = Prepare("SELECT doc FROM images ORDER BY rowid");
  while (select.Step()) out.push_back(ImageFrom(select.Doc(0)));
  return out;
}

std::optional<Image> Store::GetImage(const std::string& image_id) {
  std::lock_guard lock(mutex_);
  Statement select = Prepare("SELECT doc FROM images WHERE id = ?");
  select.Bind(image_id);
  if (!select.Step()) return std::nullopt;
  return ImageFrom(select.Doc(0));
}

void Store::DeleteImage(const std::string& image_id) {
  std::lock_guard lock(mutex_);
  Transaction([&] {
    Prepare("DELETE FROM images WHERE id = ?").Bind(image_id).Step();
    Prepare("DELETE FROM tags WHERE resource_id = ?").Bind(image_id).Step();
  });
  tags_.erase(image_id);
}

bool Store::InsertKeyPair(const KeyPair& key) {
  std::lock_guard lock(mutex_);
  bool taken = false;
  Prepare("INSERT INTO key_pairs (name, doc) VALUES (?, ?)")
      .Bind(key.key_name)
      .Bind(ToJson(key).dump())
      .Step(&taken);
  return !taken;
}

std::vector<KeyPair> Store::ListKeyPairs() {
  std::lock_guard lock(mutex_);
  std::vector<KeyPair> out;
  Statement select = Prepare("SELECT doc FROM key_pairs ORDER BY rowid");
  while (select.Step()) out.push_back(KeyPairFrom(select.Doc(0)));
  return out;
}

std::optional<KeyPair> Store::GetKeyPair(const std::string& key_name) {
  std::lock_guard lock(mutex_);
  Statement select = Prepare("SELECT doc FROM key_pairs WHERE name = ?");
  select.Bind(key_name);
  if (!select.Step()) return std::nullopt;
  return KeyPairFrom(select.Doc(0));
}

void Store::DeleteKeyPair(const std::string& key_name) {
  std::lock_guard lock(mutex_);
  Prepare("DELETE FROM key_pairs WHERE name = ?").Bind(key_name).Step();
}

void Store::InsertTagsLocked(const std::string& resource_id,
                             const std::map<std::string, std::string>& tags) {
  for (const auto& [key, value] : tags) {
    Prepare("INSERT OR REPLACE INTO tags (resource_id, key, value) VALUES (?, ?, ?)")
        .Bind(resource_id)
        .Bind(key)
        .Bind(value)
        .Step();
  }
}

void Store::CacheTagsLocked(const std::string& resource_id,
                            const std::map<std::string, std::string>& tags) {
  if (tags.empty()) return;
  Tags& cached = tags_[resource_id];
  for (const auto& [key, value] : tags) cached[key] = value;
  TouchInstanceLocked(resource_id);
}

void Store::TouchInstanceLocked(const std::string& resource_id) {
  if (auto found = instance_index_.find(resource_id); found != instance_index_.end()) {
    CacheInstanceLocked(*instances_[found->second]);
  }
}

void Store::SetTags(const std::vector<std::string>& resource_ids,
                    const std::map<std::string, std::string>& tags) {
  std::lock_guard lock(mutex_);
  Transaction([&] {
    for (const std::string& id : resource_ids) InsertTagsLocked(id, tags);
  });
  for (const std::string& id : resource_ids) CacheTagsLocked(id, tags);
}

void Store::DeleteTags(
    const std::vector<std::string>& resource_ids,
    const std::vector<std::pair<std::string, std::optional<std::string>>>& keys) {
  std::lock_guard lock(mutex_);
  Transaction([&] {
    for (const std::string& id : resource_ids) {
      if (keys.empty()) Prepare("DELETE FROM tags WHERE resource_id = ?").Bind(id).Step();
      for (const auto& [key, value] : keys) {
        if (value) {
          Prepare("DELETE FROM tags WHERE resource_id = ? AND key = ? AND value = ?")
              .Bind(id)
              .Bind(key)
              .Bind(*value)
              .Step();
        } else {
          Prepare("DELETE FROM tags WHERE resource_id = ? AND key = ?").Bind(id).Bind(key).Step();
        }
      }
    }
  });
  for (const std::string& id : resource_ids) {
    auto cached = tags_.find(id);
    if (cached == tags_.end()) continue;
    TouchInstanceLocked(id);
    if (keys.empty()) cached->second.clear();
    for (const auto& [key, value] : keys) {
      auto tag = cached->second.find(key);
      if (tag != cached->second.end() && (!value || tag->second == *value)) {
        cached->second.erase(tag);
      }
    }
    if (cached->second.empty()) tags_.erase(cached);
  }
}

std::map<std::string, Store::Tags> Store::AllTags() {
  std::lock_guard lock(mutex_);
  return tags_;
}

std::map<std::string, Store::Tags> Store::TagsOf(const std::vector<std::string>& resource_ids) {
  std::lock_guard lock(mutex_);
  std::map<std::string, Tags> out;
  for (const std::string& id : resource_ids) {
    if (auto found = tags_.find(id); found != tags_.end()) out[id] = found->second;
  }
  return out;
}

}  // namespace tern::cloud
