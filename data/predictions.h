// Predictions written as cityscapesScripts reads them: a labelIds PNG per image (8-bit grey, the
// labelId of each predicted trainId: what its evaluateImgLists compares with gtFine) and a colour
// PNG in the Cityscapes palette, for people to look at.
//
// A prediction is an (h, w) tensor of trainIds on the CPU (i32, i64 or u8; the output of argmax
// over the class dim). The ignore value 255 is allowed (e.g. pixels outside a region of interest)
// and is written as labelId 0 (unlabeled), black; any other value outside 0..18 is an error naming
// the value and its pixel.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/png.h"
#include "engine/tensor.h"

namespace seg::data {

// trainIds (0..18 or 255), row-major; `what` names the prediction in errors.
std::vector<uint8_t> prediction_train_ids(const Tensor& prediction, const std::string& what);
// labelIds of trainIds (255 -> 0, unlabeled).
std::vector<uint8_t> train_ids_to_label_ids(const std::vector<uint8_t>& train_ids);
// An RGB image of trainIds in the palette (255 -> black).
Image colorize_train_ids(const std::vector<uint8_t>& train_ids, int height, int width);

// Writes `prediction` as a labelIds PNG and a colour PNG; an empty path skips that file. Each file
// is written to a temporary name and renamed into place (data/png.h).
void write_prediction_pngs(const Tensor& prediction, const std::filesystem::path& label_ids_png,
                           const std::filesystem::path& color_png);

}  // namespace seg::data
