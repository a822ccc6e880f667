// EC2 image (AMI) actions: RegisterImage, DescribeImages, DeregisterImage, CreateImage. A Tern
// AMI is a kernel, an optional initrd, a kernel command line and a raw root disk, copied into
// data_dir/images/<ami-id>/ (reflink or sparse copy) so that the AMI never changes afterwards.
// RegisterImage's ImageLocation names a directory on the ternd host holding `vmlinuz`,
// `rootfs.raw`, and optionally `initrd.img` and `cmdline` (the layout of tools/image/build).
#include <unistd.h>

#include <algorithm>
#include <ctime>
#include <filesystem>
#include <fstream>

#include "cloud/disk_copy.h"
#include "cloud/ec2_actions.h"

namespace tern::cloud {
namespace {

// EC2's AMI name rule: 3 to 128 characters of letters, digits, ( ) [ ] space . / - ' @ _
void CheckImageName(const std::string& name) {
  bool ok = name.size() >= 3 && name.size() <= 128 &&
            std::all_of(name.begin(), name.end(), [](unsigned char c) {
              return std::isalnum(c) || std::string("()[] ./-'@_").find(c) != std::string::npos;
            });
  if (!ok) {
    throw Ec2Error::InvalidParameterValue(
        "Name", name, "AMI names must be 3 to 128 characters: letters, numbers, ()[] ./-'@_ only.");
  }
}

std::string ReadLine(const std::string& path) {
  std::string line;
  std::ifstream in(path);
  std::getline(in, line);
  return line;
}

class ImageActions {
 public:
  explicit ImageActions(Ec2Backend& backend) : b_(backend) {}

  void RegisterImage(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string name = params.Required("Name");
    std::string location = params.Required("ImageLocation");
    std::string description = params.Get("Description").value_or("");
    std::string architecture = params.Get("Architecture").value_or("x86_64");
    std::string root_device = params.Get("RootDeviceName").value_or("/dev/vda");
    params.Get("VirtualizationType");
    CheckImageName(name);
    if (architecture != "x86_64") {
      throw Ec2Error::InvalidParameterValue("Architecture", architecture,
                                            "This host runs x86_64 images only.");
    }
    std::string dir = location;
    for (const char* file : {"vmlinuz", "rootfs.raw"}) {
      if (::access((dir + "/" + file).c_str(), R_OK) != 0) {
        throw Ec2Error::InvalidParameterValue(
            "ImageLocation", location,
            std::string("It must be a directory on the host with ") + file +
                " (and optionally initrd.img and cmdline).");
      }
    }
    FinishValidation(context, params);
    Image image;
    image.name = name;
    image.description = description;
    image.architecture = architecture;
    image.root_device_name = root_device;
    bool has_initrd = ::access((dir + "/initrd.img").c_str(), R_OK) == 0;
    std::string cmdline = ReadLine(dir + "/cmdline");
    if (!cmdline.empty()) image.kernel_cmdline = cmdline;
    SaveImage(image, dir + "/vmlinuz",
              has_initrd ? std::optional(dir + "/initrd.img") : std::nullopt, dir + "/rootfs.raw");
    AddText(response.root(), "imageId", image.image_id);
  }

  void CreateImage(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string instance_id = params.Required("InstanceId");
    std::string name = params.Required("Name");
    std::string description = params.Get("Description").value_or("");
    params.Bool("NoReboot", false);
    CheckImageName(name);
    CheckIdShape(instance_id, "i", "InvalidInstanceID");
    std::optional<Instance> instance = b_.store.GetInstance(instance_id);
    if (!instance) {
      throw Ec2Error("InvalidInstanceID.NotFound",
                     "The instance ID '" + instance_id + "' does not exist");
    }
    if (instance->state != InstanceStateName::kRunning &&
        instance->state != InstanceStateName::kStopped) {
      throw Ec2Error("IncorrectInstanceState", "Instance '" + instance_id +
                                                   "' is not in a state from which an image can "
                                                   "be created (running or stopped).");
    }
    VmmPaths paths = b_.manager.PathsOf(instance_id);
    if (::access(paths.root_disk().c_str(), R_OK) != 0) {
      throw Ec2Error("IncorrectInstanceState",
                     "Instance '" + instance_id + "' has not been launched yet.");
    }
    FinishValidation(context, params);
    Image image;
    image.name = name;
    image.description = description;
    image.source_instance_id = instance_id;
    std::string cmdline = ReadLine(paths.cmdline());
    if (!cmdline.empty()) image.kernel_cmdline = cmdline;
    bool has_initrd = ::access(paths.initrd().c_str(), R_OK) == 0;
    SaveImage(image, paths.kernel(), has_initrd ? std::optional(paths.initrd()) : std::nullopt,
              paths.root_disk());
    AddText(response.root(), "imageId", image.image_id);
  }

  void DescribeImages(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::vector<std::string> ids = params.List("ImageId");
    std::vector<std::string> owners = params.List("Owner");
    params.List("ExecutableBy");
    params.Bool("IncludeDeprecated", false);
    std::vector<Filter> filters = ParseFilters(params);
    for (const std::string& id : ids) CheckIdShape(id, "ami", "InvalidAMIID");
    Image probe;
    for (const Filter& f : filters) (void)Matches(f, probe, {});
    FinishValidation(context, params);
    const std::string& account = b_.store.account().account_id;
    std::map<std::string, Tags> tags = b_.store.AllTags();
    std::vector<Image> images = b_.store.ListImages();
    for (const std::string& id : ids) {
      if (std::none_of(images.begin(), images.end(),
                       [&](const Image& i) { return i.image_id == id; })) {
        throw Ec2Error("InvalidAMIID.NotFound", "The image id '[" + id + "]' does not exist");
      }
    }
    pugi::xml_node set = AddNode(response.root(), "imagesSet");
    for (const Image& image : images) {
      if (!ids.empty() && std::find(ids.begin(), ids.end(), image.image_id) == ids.end()) continue;
      bool owner_ok = owners.empty() || std::any_of(owners.begin(), owners.end(), [&](auto& o) {
                        return o == "self" || o == account;
                      });
      bool match = owner_ok && std::all_of(filters.begin(), filters.end(), [&](const Filter& f) {
                     return Matches(f, image, tags[image.image_id]);
                   });
      if (match) AddImage(AddItem(set), image, account, tags[image.image_id]);
    }
  }

  void DeregisterImage(const RequestContext& context, QueryParams& params, XmlResponse& response) {
    std::string id = params.Required("ImageId");
    CheckIdShape(id, "ami", "InvalidAMIID");
    if (!b_.store.GetImage(id)) {
      throw Ec2Error("InvalidAMIID.NotFound", "The image id '[" + id + "]' does not exist");
    }
    FinishValidation(context, params);
    b_.store.DeleteImage(id);
    std::error_code ec;
    std::filesystem::remove_all(ImageDir(id), ec);
    AddText(response.root(), "return", "true");
  }

 private:
  std::string ImageDir(const std::string& id) const { return b_.data_dir + "/images/" + id; }

  // Copies the files into the image's own directory and stores the image (available).
  void SaveImage(Image& image, const std::string& kernel, const std::optional<std::string>& initrd,
                 const std::string& root_disk) {
    image.image_id = Store::NewId("ami");
    image.creation_date = std::time(nullptr);
    std::string dir = ImageDir(image.image_id);
    std::error_code ec;
    std::filesystem::create_directories(dir, ec);
    image.kernel_path = dir + "/vmlinuz";
    image.root_disk_path = dir + "/rootfs.raw";
    if (!ec) std::filesystem::copy_file(kernel, image.kernel_path, ec);
    if (!ec && initrd) {
      image.initrd_path = dir + "/initrd.img";
      std::filesystem::copy_file(*initrd, *image.initrd_path, ec);
    }
    Result<CopyKind> copied = CopyDisk(root_disk, image.root_disk_path);
    if (ec || !copied.ok()) {
      std::filesystem::remove_all(dir, ec);
      throw Ec2Error::Internal("copying the image files failed: " +
                               (copied.ok() ? ec.message() : copied.error().ToString()));
    }
    if (!b_.store.InsertImage(image)) {
      std::filesystem::remove_all(dir, ec);
      throw Ec2Error("InvalidAMIName.Duplicate",
                     "AMI name " + image.name + " is already in use by another AMI");
    }
  }

  static bool Matches(const Filter& f, const Image& image, const Tags& tags) {
    if (std::optional<bool> tag = TagFilterMatches(f.name, f.values, tags)) return *tag;
    if (f.name == "name") return AnyMatches(f.values, image.name);
    if (f.name == "image-id") return AnyMatches(f.values, image.image_id);
    if (f.name == "state") return AnyMatches(f.values, image.state);
    if (f.name == "architecture") return AnyMatches(f.values, image.architecture);
    if (f.name == "description") return AnyMatches(f.values, image.description);
    throw Ec2Error("InvalidParameterValue", "The filter '" + f.name + "' is invalid");
  }

  static void AddImage(pugi::xml_node item, const Image& image, const std::string& owner,
                       const Tags& tags) {
    AddText(item, "imageId", image.image_id);
    AddText(item, "imageLocation", owner + "/" + image.name);
    AddText(item, "imageState", image.state);
    AddText(item, "imageOwnerId", owner);
    AddText(item, "creationDate", Iso8601(image.creation_date));
    AddText(item, "isPublic", "false");
    AddText(item, "architecture", image.architecture);
    AddText(item, "imageType", "machine");
    AddText(item, "name", image.name);
    AddText(item, "description", image.description);
    AddText(item, "rootDeviceType", "ebs");
    AddText(item, "rootDeviceName", image.root_device_name);
    AddText(item, "virtualizationType", "hvm");
    AddText(item, "hypervisor", "xen");
    AddTagSet(item, tags);
  }

  Ec2Backend& b_;
};

}  // namespace

void RegisterImageActions(Ec2Server& server, Ec2Backend& backend) {
  auto a = std::make_shared<ImageActions>(backend);
  server.Handle("RegisterImage", [a](auto& c, auto& p, auto& r) { a->RegisterImage(c, p, r); });
  server.Handle("CreateImage", [a](auto& c, auto& p, auto& r) { a->CreateImage(c, p, r); });
  server.Handle("DescribeImages", [a](auto& c, auto& p, auto& r) { a->DescribeImages(c, p, r); });
  server.Handle("DeregisterImage", [a](auto& c, auto& p, auto& r) { a->DeregisterImage(c, p, r); });
}

}  // namespace tern::cloud
