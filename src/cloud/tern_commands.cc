// The `tern` command line's commands (see tern_commands.h).
#include "cloud/tern_commands.h"

#include <fmt/format.h>

#include <fstream>
#include <iterator>
#include <map>
#include <sstream>
#include <thread>

#include "cloud/base64.h"

namespace tern::cloud {
namespace {

using Params = std::map<std::string, std::string>;

// InstanceId.1 .. InstanceId.N.
Params IdParams(const std::vector<std::string>& ids) {
  Params params;
  for (size_t i = 0; i < ids.size(); ++i) params["InstanceId." + std::to_string(i + 1)] = ids[i];
  return params;
}

// Every <item> of every instancesSet in `doc` (DescribeInstances and RunInstances answers).
std::vector<pugi::xml_node> InstanceItems(const pugi::xml_document& doc) {
  std::vector<pugi::xml_node> items;
  for (const pugi::xpath_node& node : doc.select_nodes("//instancesSet/item")) {
    items.push_back(node.node());
  }
  return items;
}

std::string TagValue(pugi::xml_node item, const std::string& key) {
  for (pugi::xml_node tag : item.child("tagSet").children("item")) {
    if (key == tag.child_value("key")) return tag.child_value("value");
  }
  return "";
}

std::string StateOf(pugi::xml_node item) { return item.child("instanceState").child_value("name"); }

std::string ReadFile(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw TernCommandError("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

}  // namespace

std::string TernCommands::ResolveImage(const std::string& image) {
  if (image.rfind("ami-", 0) == 0) return image;
  auto doc =
      client_.Call("DescribeImages", {{"Filter.1.Name", "name"}, {"Filter.1.Value.1", image}});
  pugi::xml_node found = doc->select_node("//imagesSet/item").node();
  if (!found) throw TernCommandError("no image named '" + image + "' (see `tern image ls`)");
  return found.child_value("imageId");
}

void TernCommands::Run(const RunOptions& options, const Waiting& waiting) {
  if (options.count < 1 || options.count > 100) {
    throw TernCommandError("--count must be between 1 and 100");
  }
  Params params = {{"ImageId", ResolveImage(options.image)},
                   {"InstanceType", options.instance_type},
                   {"MinCount", std::to_string(options.count)},
                   {"MaxCount", std::to_string(options.count)}};
  if (options.key_name) params["KeyName"] = *options.key_name;
  if (options.user_data_file) params["UserData"] = Base64Encode(ReadFile(*options.user_data_file));
  if (options.name) {
    params["TagSpecification.1.ResourceType"] = "instance";
    params["TagSpecification.1.Tag.1.Key"] = "Name";
    params["TagSpecification.1.Tag.1.Value"] = *options.name;
  }
  auto doc = client_.Call("RunInstances", params);
  std::vector<std::string> ids;
  for (pugi::xml_node item : InstanceItems(*doc)) ids.push_back(item.child_value("instanceId"));
  for (const std::string& id : ids) out_ << id << "\n";
  out_.flush();
  if (waiting.wait) WaitFor(ids, "running", waiting);
}

void TernCommands::List() {
  auto doc = client_.Call("DescribeInstances", {});
  out_ << fmt::format("{:<20} {:<16} {:<14} {:<10} {:<22} {}\n", "INSTANCE", "NAME", "STATE",
                      "TYPE", "IMAGE", "LAUNCHED");
  for (pugi::xml_node item : InstanceItems(*doc)) {
    out_ << fmt::format("{:<20} {:<16} {:<14} {:<10} {:<22} {}\n", item.child_value("instanceId"),
                        TagValue(item, "Name"), StateOf(item), item.child_value("instanceType"),
                        item.child_value("imageId"), item.child_value("launchTime"));
  }
}

void TernCommands::ChangeState(const std::string& action, const std::vector<std::string>& ids,
                               const Params& extra, const std::string& final_state,
                               const Waiting& waiting) {
  Params params = IdParams(ids);
  params.insert(extra.begin(), extra.end());
  auto doc = client_.Call(action, params);
  for (pugi::xml_node item : InstanceItems(*doc)) {
    out_ << item.child_value("instanceId") << ": "
         << item.child("previousState").child_value("name") << " -> "
         << item.child("currentState").child_value("name") << "\n";
  }
  out_.flush();
  if (waiting.wait) WaitFor(ids, final_state, waiting);
}

void TernCommands::Stop(const std::vector<std::string>& ids, bool force, const Waiting& waiting) {
  ChangeState("StopInstances", ids, force ? Params{{"Force", "true"}} : Params{}, "stopped",
              waiting);
}

void TernCommands::Start(const std::vector<std::string>& ids, const Waiting& waiting) {
  ChangeState("StartInstances", ids, {}, "running", waiting);
}

void TernCommands::Terminate(const std::vector<std::string>& ids, const Waiting& waiting) {
  ChangeState("TerminateInstances", ids, {}, "terminated", waiting);
}

void TernCommands::Reboot(const std::vector<std::string>& ids) {
  client_.Call("RebootInstances", IdParams(ids));
  for (const std::string& id : ids) out_ << id << ": rebooting\n";
}

void TernCommands::Console(const std::string& id) {
  auto doc = client_.Call("GetConsoleOutput", {{"InstanceId", id}, {"Latest", "true"}});
  std::string encoded = doc->document_element().child_value("output");
  std::optional<std::string> text = Base64Decode(encoded);
  if (!text) throw TernCommandError("ternd sent console output that is not base64");
  out_ << *text;
  if (!text->empty() && text->back() != '\n') out_ << "\n";
}

void TernCommands::ListImages() {
  auto doc = client_.Call("DescribeImages", {{"Owner.1", "self"}});
  out_ << fmt::format("{:<22} {:<24} {:<10} {}\n", "IMAGE", "NAME", "STATE", "CREATED");
  for (const pugi::xpath_node& node : doc->select_nodes("//imagesSet/item")) {
    pugi::xml_node item = node.node();
    out_ << fmt::format("{:<22} {:<24} {:<10} {}\n", item.child_value("imageId"),
                        item.child_value("name"), item.child_value("imageState"),
                        item.child_value("creationDate"));
  }
}

void TernCommands::RegisterImage(const std::string& name, const std::string& directory,
                                 const Waiting& waiting) {
  auto doc = client_.Call("RegisterImage", {{"Name", name}, {"ImageLocation", directory}});
  std::string id = doc->document_element().child_value("imageId");
  out_ << id << "\n";
  out_.flush();
  if (!waiting.wait) return;
  auto deadline = std::chrono::steady_clock::now() + waiting.timeout;
  while (true) {
    auto images = client_.Call("DescribeImages", {{"ImageId.1", id}});
    std::string state = images->select_node("//imagesSet/item/imageState").node().text().get();
    if (state == "available") return;
    if (state == "failed") throw TernCommandError(id + ": the image failed");
    if (std::chrono::steady_clock::now() > deadline) {
      throw TernCommandError(id + ": still " + state + " after " +
                             std::to_string(waiting.timeout.count()) + " s");
    }
    std::this_thread::sleep_for(waiting.poll);
  }
}

void TernCommands::WaitFor(const std::vector<std::string>& ids, const std::string& state,
                           const Waiting& waiting) {
  auto start = std::chrono::steady_clock::now();
  std::map<std::string, std::string> seen;
  while (true) {
    auto doc = client_.Call("DescribeInstances", IdParams(ids));
    size_t done = 0;
    for (pugi::xml_node item : InstanceItems(*doc)) {
      std::string id = item.child_value("instanceId"), now = StateOf(item);
      double seconds =
          std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (seen[id] != now) progress_ << fmt::format("{}: {} ({:.1f} s)\n", id, now, seconds);
      seen[id] = now;
      if (now == state) {
        ++done;
      } else if (now == "terminated" || (now == "stopped" && state == "running")) {
        std::string reason = item.child("stateReason").child_value("message");
        throw TernCommandError(id + " is " + now + ", not " + state +
                               (reason.empty() ? "" : ": " + reason));
      }
    }
    progress_.flush();
    if (done == ids.size()) return;
    if (std::chrono::steady_clock::now() - start > waiting.timeout) {
      throw TernCommandError("not " + state + " after " + std::to_string(waiting.timeout.count()) +
                             " s (see `tern ls`)");
    }
    std::this_thread::sleep_for(waiting.poll);
  }
}

}  // namespace tern::cloud
