// The `tern` profile of the AWS CLI and SDKs: on first start ternd adds its access key to
// ~/.aws/credentials and its region (and endpoint) to ~/.aws/config, unless a profile of that name
// exists, so that `aws --profile tern --endpoint-url http://127.0.0.1:8787 ec2 ...` works at once
// (file formats: https://docs.aws.amazon.com/cli/latest/userguide/cli-configure-files.html).
#pragma once

#include <string>

#include "base/result.h"

namespace tern::cloud {

struct AwsProfile {
  std::string name = "tern";
  std::string access_key_id;
  std::string secret_access_key;
  std::string region;
  std::string endpoint_url;  // written as `endpoint_url` (honoured by AWS CLI >= 2.13)
};

// Reads profile `name` from `aws_dir`/credentials ([name]: aws_access_key_id,
// aws_secret_access_key) and `aws_dir`/config ([profile name], or [default] for "default":
// region, endpoint_url), as the AWS CLI does. Lines starting with '#' or ';' are comments.
// Errors: ENOENT when either file or the profile's credentials are missing, EINVAL for a file
// that is not INI. Thread-safe.
Result<AwsProfile> ReadAwsProfile(const std::string& aws_dir, const std::string& name);

// Appends `profile` to `aws_dir`/credentials ([name]) and `aws_dir`/config ([profile name]),
// each only if that file has no section of that name; creates the directory (0700) and files
// (0600) when missing. Returns whether anything was written. Errors: I/O failures.
Result<bool> AddAwsProfile(const std::string& aws_dir, const AwsProfile& profile);

}  // namespace tern::cloud
