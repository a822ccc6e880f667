// Adding ternd's profile to the AWS CLI's shared files (see aws_profile.h).
#include "cloud/aws_profile.h"

#include <sys/stat.h>
#include <unistd.h>

#include <boost/property_tree/ini_parser.hpp>
#include <boost/property_tree/ptree.hpp>
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

// The INI file at `path` (comment lines dropped first: boost's parser knows only ';').
Result<boost::property_tree::ptree> ReadIni(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Error::FromErrno("cannot read " + path);
  std::stringstream text;
  std::string line;
  while (std::getline(in, line)) {
    size_t first = line.find_first_not_of(" \t");
    if (first != std::string::npos && (line[first] == '#' || line[first] == ';')) continue;
    text << line << "\n";
  }
  boost::property_tree::ptree tree;
  try {
    boost::property_tree::ini_parser::read_ini(text, tree);
  } catch (const boost::property_tree::ini_parser_error& e) {
    return Error(path + ": line " + std::to_string(e.line()) + ": " + e.message(), EINVAL);
  }
  return tree;
}

}  // namespace

Result<AwsProfile> ReadAwsProfile(const std::string& aws_dir, const std::string& name) {
  TERN_ASSIGN_OR_RETURN(boost::property_tree::ptree credentials, ReadIni(aws_dir + "/credentials"));
  AwsProfile profile;
  profile.name = name;
  auto keys = credentials.get_child_optional(name);
  if (keys) {
    profile.access_key_id = keys->get<std::string>("aws_access_key_id", "");
    profile.secret_access_key = keys->get<std::string>("aws_secret_access_key", "");
  }
  if (profile.access_key_id.empty() || profile.secret_access_key.empty()) {
    return Error("no credentials for profile " + name + " in " + aws_dir + "/credentials", ENOENT);
  }
  TERN_ASSIGN_OR_RETURN(boost::property_tree::ptree config, ReadIni(aws_dir + "/config"));
  auto section = config.get_child_optional(name == "default" ? name : "profile " + name);
  if (section) {
    profile.region = section->get<std::string>("region", "");
    profile.endpoint_url = section->get<std::string>("endpoint_url", "");
  }
  return profile;
}

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
