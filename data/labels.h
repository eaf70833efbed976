// The Cityscapes label definitions (cityscapesScripts helpers/labels.py): every labelId with its
// name, trainId (255 = ignored in training and evaluation), category and colour, the 19 training
// classes and their palette.
#pragma once

#include <array>
#include <cstdint>
#include <string_view>

namespace seg::data {

constexpr int kNumTrainClasses = 19;
constexpr uint8_t kIgnoreLabel = 255;
constexpr int kNumLabelIds = 34;  // ids 0..33 (license plate, id -1, never appears in a PNG)

struct Rgb {
  uint8_t r, g, b;
  bool operator==(const Rgb&) const = default;
};

struct CityscapesLabel {
  std::string_view name;
  int id;
  uint8_t train_id;  // 0..18, or 255
  std::string_view category;
  Rgb color;
};

// Indexed by labelId 0..33.
// clang-format off
inline constexpr std::array<CityscapesLabel, kNumLabelIds> kCityscapesLabels = {{
    {"unlabeled",             0, 255, "void",         {  0,   0,   0}},
    {"ego vehicle",           1, 255, "void",         {  0,   0,   0}},
    {"rectification border",  2, 255, "void",         {  0,   0,   0}},
    {"out of roi",            3, 255, "void",         {  0,   0,   0}},
    {"static",                4, 255, "void",         {  0,   0,   0}},
    {"dynamic",               5, 255, "void",         {111,  74,   0}},
    {"ground",                6, 255, "void",         { 81,   0,  81}},
    {"road",                  7,   0, "flat",         {128,  64, 128}},
    {"sidewalk",              8,   1, "flat",         {244,  35, 232}},
    {"parking",               9, 255, "flat",         {250, 170, 160}},
    {"rail track",           10, 255, "flat",         {230, 150, 140}},
    {"building",             11,   2, "construction", { 70,  70,  70}},
    {"wall",                 12,   3, "construction", {102, 102, 156}},
    {"fence",                13,   4, "construction", {190, 153, 153}},
    {"guard rail",           14, 255, "construction", {180, 165, 180}},
    {"bridge",               15, 255, "construction", {150, 100, 100}},
    {"tunnel",               16, 255, "construction", {150, 120,  90}},
    {"pole",                 17,   5, "object",       {153, 153, 153}},
    {"polegroup",            18, 255, "object",       {153, 153, 153}},
    {"traffic light",        19,   6, "object",       {250, 170,  30}},
    {"traffic sign",         20,   7, "object",       {220, 220,   0}},
    {"vegetation",           21,   8, "nature",       {107, 142,  35}},
    {"terrain",              22,   9, "nature",       {152, 251, 152}},
    {"sky",                  23,  10, "sky",          { 70, 130, 180}},
    {"person",               24,  11, "human",        {220,  20,  60}},
    {"rider",                25,  12, "human",        {255,   0,   0}},
    {"car",                  26,  13, "vehicle",      {  0,   0, 142}},
    {"truck",                27,  14, "vehicle",      {  0,   0,  70}},
    {"bus",                  28,  15, "vehicle",      {  0,  60, 100}},
    {"caravan",              29, 255, "vehicle",      {  0,   0,  90}},
    {"trailer",              30, 255, "vehicle",      {  0,   0, 110}},
    {"train",                31,  16, "vehicle",      {  0,  80, 100}},
    {"motorcycle",           32,  17, "vehicle",      {  0,   0, 230}},
    {"bicycle",              33,  18, "vehicle",      {119,  11,  32}},
}};
// clang-format on

// trainId for a labelId (255 for ids outside 0..33 as well as for the ignored ones).
constexpr uint8_t train_id_of(int label_id) {
  return label_id >= 0 && label_id < kNumLabelIds ? kCityscapesLabels[static_cast<size_t>(label_id)].train_id
                                                  : kIgnoreLabel;
}

// The labelId of each trainId (for writing predictions as labelIds PNGs, as cityscapesScripts
// expects): road 7, sidewalk 8, ..., bicycle 33.
inline constexpr std::array<uint8_t, kNumTrainClasses> kTrainIdToLabelId = {
    7, 8, 11, 12, 13, 17, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 31, 32, 33};

// Palette and names by trainId.
inline constexpr std::array<Rgb, kNumTrainClasses> kTrainIdPalette = [] {
  std::array<Rgb, kNumTrainClasses> p{};
  for (size_t t = 0; t < kNumTrainClasses; ++t) p[t] = kCityscapesLabels[kTrainIdToLabelId[t]].color;
  return p;
}();
inline constexpr std::array<std::string_view, kNumTrainClasses> kTrainIdNames = [] {
  std::array<std::string_view, kNumTrainClasses> n{};
  for (size_t t = 0; t < kNumTrainClasses; ++t) n[t] = kCityscapesLabels[kTrainIdToLabelId[t]].name;
  return n;
}();

// A 256-entry lookup table labelId -> trainId (every value outside the table maps to 255).
std::array<uint8_t, 256> label_id_to_train_id_table();

}  // namespace seg::data
