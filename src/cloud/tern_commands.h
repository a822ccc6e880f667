// The `tern` command line's commands (src/cli/tern_main.cc parses the flags): the everyday path
// of EC2 on ternd, each command one or a few EC2 API calls through Ec2Client. Output goes to
// `out` (results) and `progress` (what a long step is waiting for); failures are Ec2Error (EC2's
// code and message, or the client's ConnectionFailed) or TernCommandError, for main to print on
// one line.
#pragma once

#include <chrono>
#include <map>
#include <optional>
#include <ostream>
#include <stdexcept>
#include <string>
#include <vector>

#include "cloud/ec2_client.h"

namespace tern::cloud {

// A command that cannot go on (bad input found before any API call, a wait that timed out).
class TernCommandError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct RunOptions {
  std::string image;  // an AMI id (ami-...) or an image name
  std::string instance_type = "t3.micro";
  std::optional<std::string> key_name;
  std::optional<std::string> user_data_file;  // sent base64-encoded, as the aws CLI does
  std::optional<std::string> name;            // the Name tag
  int count = 1;                              // 1..100
  bool wait = true;                           // until every instance is running
};

struct Waiting {
  bool wait = true;
  std::chrono::seconds timeout{600};
  std::chrono::milliseconds poll{500};
};

class TernCommands {
 public:
  TernCommands(Ec2Client& client, std::ostream& out, std::ostream& progress)
      : client_(client), out_(out), progress_(progress) {}

  // RunInstances; prints each instance id; with options.wait, waits until all are running.
  void Run(const RunOptions& options, const Waiting& waiting);
  // DescribeInstances as a table: INSTANCE, NAME, STATE, TYPE, IMAGE, LAUNCHED.
  void List();
  // Stop (graceful, or forced), Start, Reboot, Terminate (`tern rm`) the given instances; each
  // but Reboot waits for its final state when waiting.wait.
  void Stop(const std::vector<std::string>& ids, bool force, const Waiting& waiting);
  void Start(const std::vector<std::string>& ids, const Waiting& waiting);
  void Reboot(const std::vector<std::string>& ids);
  void Terminate(const std::vector<std::string>& ids, const Waiting& waiting);
  // GetConsoleOutput (the latest 64 KiB of the serial console), decoded.
  void Console(const std::string& id);
  // DescribeImages (owner self) as a table: IMAGE, NAME, STATE, CREATED.
  void ListImages();
  // RegisterImage of a directory holding vmlinuz, rootfs.raw and optionally initrd.img and
  // cmdline; waits until it is available.
  void RegisterImage(const std::string& name, const std::string& directory, const Waiting& waiting);

 private:
  // Waits until every instance in `ids` is in `state`, printing each change to progress_.
  void WaitFor(const std::vector<std::string>& ids, const std::string& state,
               const Waiting& waiting);
  // `image` itself when it is an AMI id, else the id of the image of that name.
  std::string ResolveImage(const std::string& image);
  void ChangeState(const std::string& action, const std::vector<std::string>& ids,
                   const std::map<std::string, std::string>& extra, const std::string& final_state,
                   const Waiting& waiting);

  Ec2Client& client_;
  std::ostream& out_;
  std::ostream& progress_;
};

}  // namespace tern::cloud
