#include "data/labels.h"

namespace seg::data {

std::array<uint8_t, 256> label_id_to_train_id_table() {
  std::array<uint8_t, 256> t{};
  t.fill(kIgnoreLabel);
  for (const CityscapesLabel& l : kCityscapesLabels) t[static_cast<size_t>(l.id)] = l.train_id;
  return t;
}

}  // namespace seg::data
