// EC2 XML responses (see xml_response.h).
#include "cloud/xml_response.h"

#include <openssl/rand.h>

#include <cstdio>
#include <ctime>
#include <map>
#include <sstream>

namespace tern::cloud {
namespace {

std::string Serialize(const pugi::xml_document& doc) {
  std::ostringstream out;
  doc.save(out, "", pugi::format_raw);
  return out.str();
}

pugi::xml_node Declare(pugi::xml_document& doc) {
  pugi::xml_node decl = doc.append_child(pugi::node_declaration);
  decl.append_attribute("version") = "1.0";
  decl.append_attribute("encoding") = "UTF-8";
  return decl;
}

}  // namespace

XmlResponse::XmlResponse(const std::string& action, const std::string& request_id) {
  Declare(doc_);
  root_ = doc_.append_child((action + "Response").c_str());
  root_.append_attribute("xmlns") = kEc2Namespace;
  AddText(root_, "requestId", request_id);
}

std::string XmlResponse::ToString() const { return Serialize(doc_); }

pugi::xml_node AddText(pugi::xml_node parent, const char* name, const std::string& text) {
  pugi::xml_node node = parent.append_child(name);
  node.text().set(text.c_str());
  return node;
}

pugi::xml_node AddNode(pugi::xml_node parent, const char* name) {
  return parent.append_child(name);
}

void AddTagSet(pugi::xml_node parent, const std::map<std::string, std::string>& tags) {
  if (tags.empty()) return;
  pugi::xml_node set = AddNode(parent, "tagSet");
  for (const auto& [key, value] : tags) {
    pugi::xml_node item = AddItem(set);
    AddText(item, "key", key);
    AddText(item, "value", value);
  }
}

std::string ErrorXml(const Ec2Error& error, const std::string& request_id) {
  pugi::xml_document doc;
  Declare(doc);
  pugi::xml_node response = doc.append_child("Response");
  pugi::xml_node entry = AddNode(AddNode(response, "Errors"), "Error");
  AddText(entry, "Code", error.code());
  AddText(entry, "Message", error.what());
  AddText(response, "RequestID", request_id);
  return Serialize(doc);
}

std::string NewRequestId() {
  unsigned char b[16];
  RAND_bytes(b, sizeof(b));
  b[6] = (b[6] & 0x0f) | 0x40;  // version 4
  b[8] = (b[8] & 0x3f) | 0x80;  // RFC 4122 variant
  char text[37];
  std::snprintf(text, sizeof(text),
                "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
                b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
                b[15]);
  return text;
}

std::string Iso8601(int64_t unix_seconds) {
  std::time_t t = static_cast<std::time_t>(unix_seconds);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char text[32];
  std::strftime(text, sizeof(text), "%Y-%m-%dT%H:%M:%S.000Z", &tm);
  return text;
}

}  // namespace tern::cloud
