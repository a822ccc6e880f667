// tern: the command line for the everyday path of Tern's EC2 (ternd): run, list, stop, start,
// reboot and remove instances, read their consoles, list and register images. It signs its
// requests with the AWS profile ternd writes (`tern` by default, ~/.aws/credentials and config),
// so it and `aws --profile tern --endpoint-url ...` see the same account. Thin: flags here, the
// commands in cloud/tern_commands. Failures print one line, `tern: <what>`, and exit 1 (2 for
// bad flags).
#include <CLI/CLI.hpp>
#include <cstdlib>
#include <iostream>
#include <map>
#include <string_view>
#include <vector>

#include "cloud/aws_profile.h"
#include "cloud/tern_commands.h"

namespace {

using tern::cloud::Ec2Endpoint;

int Fail(const std::string& message) {
  std::cerr << "tern: " << message << "\n";
  return 1;
}

// http://HOST:PORT (the only form ternd serves) into host and port; false for anything else.
bool ParseEndpointUrl(std::string url, Ec2Endpoint& endpoint) {
  constexpr std::string_view kScheme = "http://";
  if (url.rfind(kScheme, 0) != 0) return false;
  url = url.substr(kScheme.size());
  if (!url.empty() && url.back() == '/') url.pop_back();
  size_t colon = url.rfind(':');
  if (colon == std::string::npos || colon == 0) return false;
  try {
    size_t used = 0;
    int port = std::stoi(url.substr(colon + 1), &used);
    if (used != url.size() - colon - 1 || port < 1 || port > 65535) return false;
    endpoint.host = url.substr(0, colon);
    endpoint.port = port;
  } catch (const std::exception&) {
    return false;
  }
  return true;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"tern: run and manage Tern instances (EC2 on ternd)"};
  app.require_subcommand(1);
  std::string profile_name = "tern", endpoint_url, region;
  app.add_option("--profile", profile_name, "AWS profile (ternd writes `tern`)")
      ->capture_default_str();
  app.add_option("--endpoint-url", endpoint_url,
                 "ternd's URL (default: the profile's endpoint_url, else http://127.0.0.1:8787)");
  app.add_option("--region", region, "Region (default: the profile's)");
  tern::cloud::Waiting waiting;
  auto add_no_wait = [&](CLI::App* command) {
    command->add_flag_callback(
        "--no-wait", [&] { waiting.wait = false; }, "Return once ternd accepted the request");
  };

  tern::cloud::RunOptions run;
  std::string user_data;
  CLI::App* run_cmd = app.add_subcommand("run", "Launch instances of an image; wait until running");
  run_cmd->add_option("image", run.image, "AMI id (ami-...) or image name")->required();
  run_cmd->add_option("--type", run.instance_type, "Instance type")->capture_default_str();
  run_cmd->add_option("--key", run.key_name, "Key pair name");
  run_cmd->add_option("--user-data", run.user_data_file, "File of user data")
      ->check(CLI::ExistingFile);
  run_cmd->add_option("--name", run.name, "The Name tag");
  run_cmd->add_option("--count", run.count, "How many")->check(CLI::Range(1, 100));
  add_no_wait(run_cmd);

  app.add_subcommand("ls", "List instances");
  std::vector<std::string> ids;
  bool force = false;
  std::map<std::string, CLI::App*> state_cmds;
  for (auto [name, help] :
       {std::pair{"stop", "Stop instances (ACPI shutdown; --force: at once)"},
        std::pair{"start", "Start stopped instances"}, std::pair{"reboot", "Reboot instances"},
        std::pair{"rm", "Terminate instances"}}) {
    CLI::App* command = app.add_subcommand(name, help);
    command->add_option("ids", ids, "Instance ids")->required();
    if (std::string(name) != "reboot") add_no_wait(command);
    if (std::string(name) == "stop") command->add_flag("--force", force, "Stop without waiting");
    state_cmds[name] = command;
  }
  std::string console_id;
  CLI::App* console_cmd = app.add_subcommand("console", "Print an instance's serial console");
  console_cmd->add_option("id", console_id, "Instance id")->required();

  CLI::App* image_cmd = app.add_subcommand("image", "Images (AMIs)");
  image_cmd->require_subcommand(1);
  image_cmd->add_subcommand("ls", "List images");
  std::string image_name, image_dir;
  CLI::App* register_cmd = image_cmd->add_subcommand(
      "register", "Register a directory (vmlinuz, rootfs.raw, [initrd.img], [cmdline])");
  register_cmd->add_option("name", image_name, "Image name")->required();
  register_cmd->add_option("directory", image_dir, "Directory on ternd's host")->required();
  add_no_wait(register_cmd);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help
    std::cerr << "tern: " << e.what() << " (see tern --help)\n";
    return 2;
  }

  const char* home = std::getenv("HOME");
  auto profile = tern::cloud::ReadAwsProfile(std::string(home ? home : "") + "/.aws", profile_name);
  if (!profile.ok()) {
    return Fail(profile.error().message() + " (start ternd once: it writes the tern profile)");
  }
  Ec2Endpoint endpoint;
  endpoint.access_key_id = profile->access_key_id;
  endpoint.secret_access_key = profile->secret_access_key;
  endpoint.region = !region.empty()            ? region
                    : !profile->region.empty() ? profile->region
                                               : "us-east-1";
  std::string url = !endpoint_url.empty()            ? endpoint_url
                    : !profile->endpoint_url.empty() ? profile->endpoint_url
                                                     : "http://127.0.0.1:8787";
  if (!ParseEndpointUrl(url, endpoint)) return Fail("endpoint " + url + " is not http://HOST:PORT");

  tern::cloud::Ec2Client client(endpoint);
  tern::cloud::TernCommands commands(client, std::cout, std::cerr);
  try {
    if (*run_cmd) commands.Run(run, waiting);
    if (app.got_subcommand("ls")) commands.List();
    if (*state_cmds["stop"]) commands.Stop(ids, force, waiting);
    if (*state_cmds["start"]) commands.Start(ids, waiting);
    if (*state_cmds["reboot"]) commands.Reboot(ids);
    if (*state_cmds["rm"]) commands.Terminate(ids, waiting);
    if (*console_cmd) commands.Console(console_id);
    if (image_cmd->got_subcommand("ls")) commands.ListImages();
    if (*register_cmd) commands.RegisterImage(image_name, image_dir, waiting);
  } catch (const tern::cloud::Ec2Error& e) {
    return Fail(e.code() + ": " + e.what());
  } catch (const tern::cloud::TernCommandError& e) {
    return Fail(e.what());
  }
  return 0;
}
