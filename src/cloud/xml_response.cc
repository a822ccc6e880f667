// EC2 XML responses (see xml_response.h).
#include "cloud/xml_response.h"

#include <openssl/rand.h>

#include <charconv>
#include <cstdio>
#include <ctime>
#include <map>
#include <string_view>

namespace tern::cloud {
namespace {

// Appends pugixml's output to a string (no stream in between).
class StringWriter : public pugi::xml_writer {
 public:
  void write(const void* data, size_t size) override {
    text.append(static_cast<const char*>(data), size);
  }
  std::string text;
};

std::string Serialize(const pugi::xml_document& doc) {
  StringWriter writer;
  doc.save(writer, "", pugi::format_raw);
  return std::move(writer.text);
}

// AddRaw's placeholder: a processing instruction <?tern-raw N?>. Text and attribute values
// are escaped on output, so only AddRaw's own nodes can produce one.
constexpr const char* kRawTarget = "tern-raw";
constexpr std::string_view kRawOpen = "<?tern-raw ";

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

XmlBody XmlResponse::Render() const {
  XmlBody body(Serialize(doc_));
  std::string_view text = body.text_;
  // '?' is rare in EC2's XML, '<' is everywhere: look for the placeholder by its second byte.
  for (size_t mark = text.find('?'); mark != std::string_view::npos;
       mark = text.find('?', mark + 1)) {
    if (mark == 0 || text.substr(mark - 1, kRawOpen.size()) != kRawOpen) continue;
    size_t open = mark - 1, digits = open + kRawOpen.size();
    size_t index = 0;
    std::from_chars(text.data() + digits, text.data() + text.size(), index);
    size_t close = text.find("?>", digits) + 2;
    body.holes_.push_back({open, close, raw_[index]});
    body.size_ += raw_[index]->size() - (close - open);
    mark = close - 1;
  }
  return body;
}

bool XmlBody::WriteTo(const std::function<bool(std::string_view)>& write) const {
  std::string_view text = text_;
  size_t at = 0;
  for (const Hole& hole : holes_) {
    if (!write(text.substr(at, hole.begin - at)) || !write(*hole.fragment)) return false;
    at = hole.end;
  }
  return write(text.substr(at));
}

std::string XmlBody::ToString() const {
  std::string out;
  out.reserve(size_);
  WriteTo([&](std::string_view piece) {
    out += piece;
    return true;
  });
  return out;
}

void XmlResponse::AddRaw(pugi::xml_node parent, std::shared_ptr<const std::string> xml) {
  pugi::xml_node placeholder = parent.append_child(pugi::node_pi);
  placeholder.set_name(kRawTarget);
  placeholder.set_value(std::to_string(raw_.size()).c_str());
  raw_.push_back(std::move(xml));
}

std::string SerializeElement(pugi::xml_node element) {
  StringWriter writer;
  element.print(writer, "", pugi::format_raw | pugi::format_no_declaration);
  return std::move(writer.text);
}

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
