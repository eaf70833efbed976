// Pretrained weights into a model: a safetensors file whose names differ from the model's by a
// prefix (an ImageNet ResNet "conv1.weight" -> DeepLabv3 "backbone.conv1.weight"; a pretext
// checkpoint "encoder.layer1..." -> "backbone.layer1..."), loaded by name.
//
// Design notes
// - Each file name is dropped (it starts with one of `drop`, e.g. "fc." for ImageNet's classifier),
//   or renamed by the first mapping whose file prefix it starts with, or, matching none,
//   unexpected.
// - The tensors to fill are the model's state_dict entries under the mappings' module prefixes
//   (the target). A target tensor that is not loaded (absent from the file, or of another shape or
//   a non-convertible dtype) is an error naming every one of them: a transfer never silently loads
//   less than the whole backbone (the study's loader matched no key and loaded nothing). Tensors
//   outside the target (a new head) are neither required nor reported.
// - A file tensor that is neither dropped nor loaded (a name no mapping covers, or a mapped name
//   the model does not have) is an error too, unless `allow_unexpected`: such names usually mean a
//   wrong prefix.
// - Everything is checked before anything is copied: an error leaves the model unchanged.
// - Values are converted between floating dtypes (f32 file into an f64 model) and copied to the
//   model tensors' device.
#pragma once

#include <filesystem>
#include <ostream>
#include <string>
#include <vector>

#include "engine/nn/module.h"

namespace seg::models {

struct PrefixMapping {
  std::string file_prefix;    // "" matches every name
  std::string module_prefix;  // replaces file_prefix; "" keeps the name
};

struct PretrainedOptions {
  std::vector<PrefixMapping> mappings = {{"", ""}};
  std::vector<std::string> drop;  // file-name prefixes left out (e.g. "fc.")
  bool require_all = true;        // false: report what was not loaded instead of throwing
  bool allow_unexpected = false;  // true: unexpected file tensors are reported, not an error
};

struct PretrainedReport {
  std::string file;
  std::string target;                // the module prefixes, e.g. "backbone."
  nn::LoadReport load;               // names are the model's, except unexpected (the file's)
  std::vector<std::string> dropped;  // file names left out by `drop`
  std::vector<std::string> drop;     // the `drop` prefixes they matched
  // "<file> into backbone.: loaded 314 of 314 tensors; dropped (2): fc.bias, fc.weight" and the
  // problems, every name listed; more than 8 dropped names are counted by prefix instead
  // ("dropped (154): optim.* 153, model.projection.* 1").
  std::string str() const;
};

// Loads `path` into `module` as described above; writes the report's line to `log` when given.
PretrainedReport load_pretrained(nn::Module& module, const std::filesystem::path& path,
                                 const PretrainedOptions& options = {},
                                 std::ostream* log = nullptr);

// The usual case: an ImageNet ResNet state_dict (torchvision's names) into the `backbone.` of a
// DeepLabv3 or pretext model, dropping the classifier ("fc.").
PretrainedOptions imagenet_backbone_options();

}  // namespace seg::models
