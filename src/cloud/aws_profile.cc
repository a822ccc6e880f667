// Adding ternd's profile to the AWS CLI's shared files (see aws_profile.h).
#include "cloud/aws_profile.h"

#include <sys/stat.h>
#include <unistd.h>

#include <fstream>
#include <sstream>

namespace tern::cloud {
namespace {

// Whether the INI file at `path` has a line `[section]` (surrounding blanks ignored).
bool HasSection(const std::string& path, const std::string& section) {
  std::ifstream in(path);
  std::string line;
  while (std::getline(in, line)) {
    size_t first = line.find_first_not_of(" \t");
    size_t last = line.find_last_not_of(" \t\r");
    if (first != std::string::npos && line.substr(first, last - first + 1) == "[" + section + "]") {
      return true;
    }
  }
  return false;
}

// Appends `body` as section `section` to `path` (0600), on a line of its own.
Status AppendSection(const std::string& path, const std::string& section, const std::string& body) {
  bool exists = ::access(path.c_str(), F_OK) == 0;
  std::string prefix;
  if (exists) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream text;
    text << in.rdbuf();
    if (!text.str().empty() && text.str().back() != '\n') prefix = "\n";
  }
  std::ofstream out(path, std::ios::app);
  out << prefix << "[" << section << "]\n" << body;
  if (!out.flush()) return Error::FromErrno("write " + path);
  if (!exists) ::chmod(path.c_str(), 0600);
  return Ok();
}

}  // namespace

Result<bool> AddAwsProfile(const std::string& aws_dir, const AwsProfile& profile) {
  if (::mkdir(aws_dir.c_str(), 0700) != 0 && errno != EEXIST) {
    return Error::FromErrno("mkdir " + aws_dir);
  }
  bool wrote = false;
  std::string credentials = aws_dir + "/credentials";
  if (!HasSection(credentials, profile.name)) {
    TERN_RETURN_IF_ERROR(
        AppendSection(credentials, profile.name,
                      "aws_access_key_id = " + profile.access_key_id +
                          "\naws_secret_access_key = " + profile.secret_access_key + "\n"));
    wrote = true;
  }
  std::string config = aws_dir + "/config";
  if (!HasSection(config, "profile " + profile.name)) {
    std::string body = "region = " + profile.region + "\n";
    if (!profile.endpoint_url.empty()) body += "endpoint_url = " + profile.endpoint_url + "\n";
    TERN_RETURN_IF_ERROR(AppendSection(config, "profile " + profile.name, body));
    wrote = true;
  }
  return wrote;
}

}  // namespace tern::cloud
