// Philox4x32-10 counter-based random numbers (Salmon et al., SC'11), identical on CPU and CUDA.
//
// Stream layout: a random op draws with key = seed and counter = (block, call), where `call` is the
// generator's call counter (advanced once per op) and `block` is element_index / 4 for 32-bit draws.
// Every element therefore depends only on (seed, call, index): any thread order gives the same
// numbers, on either backend.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/common/types.h"

namespace seg {

struct Philox4 {
  uint32_t v[4];
};

SEG_HD Philox4 philox4x32_10(uint64_t seed, uint64_t block, uint64_t call) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u;
  constexpr uint32_t kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
  uint32_t c0 = static_cast<uint32_t>(block), c1 = static_cast<uint32_t>(block >> 32);
  uint32_t c2 = static_cast<uint32_t>(call), c3 = static_cast<uint32_t>(call >> 32);
  uint32_t k0 = static_cast<uint32_t>(seed), k1 = static_cast<uint32_t>(seed >> 32);
  for (int round = 0; round < 10; ++round) {
    uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return Philox4{{c0, c1, c2, c3}};
}

// [0, 1) with 24 random bits: exactly representable in f32.
SEG_HD float u32_to_unit_f32(uint32_t x) { return static_cast<float>(x >> 8) * (1.0f / 16777216.0f); }

// (0, 1] with 24 random bits, safe for log().
SEG_HD float u32_to_open_unit_f32(uint32_t x) {
  return static_cast<float>((x >> 8) + 1u) * (1.0f / 16777216.0f);
}

// [0, 1) with 53 random bits from two draws.
SEG_HD double u32x2_to_unit_f64(uint32_t hi, uint32_t lo) {
  uint64_t bits = (static_cast<uint64_t>(hi >> 5) << 26) | (lo >> 6);  // 27 + 26 = 53 bits
  return static_cast<double>(bits) * (1.0 / 9007199254740992.0);
}

// Element i of a 32-bit-per-element draw: lane i % 4 of block i / 4.
SEG_HD uint32_t philox_u32_at(uint64_t seed, uint64_t call, uint64_t i) {
  return philox4x32_10(seed, i / 4, call).v[i % 4];
}

SEG_HD float philox_uniform_f32(uint64_t seed, uint64_t call, uint64_t i) {
  return u32_to_unit_f32(philox_u32_at(seed, call, i));
}

// Element i of an f64 uniform draw uses lanes (2k, 2k+1) of block i / 2.
SEG_HD double philox_uniform_f64(uint64_t seed, uint64_t call, uint64_t i) {
  Philox4 r = philox4x32_10(seed, i / 2, call);
  int lane = static_cast<int>(i % 2) * 2;
  return u32x2_to_unit_f64(r.v[lane], r.v[lane + 1]);
}

// Standard normal by Box-Muller: lanes (0,1) give elements 4k and 4k+1 (cos, sin), lanes (2,3)
// give 4k+2 and 4k+3. Computed in double and rounded, so both backends agree to the last f32 bit
// except in rare ties of the libraries' transcendental functions.
SEG_HD float philox_normal_f32(uint64_t seed, uint64_t call, uint64_t i) {
  Philox4 r = philox4x32_10(seed, i / 4, call);
  int pair = static_cast<int>((i % 4) / 2) * 2;
  double u1 = static_cast<double>(u32_to_open_unit_f32(r.v[pair]));
  double u2 = static_cast<double>(u32_to_unit_f32(r.v[pair + 1]));
  double radius = std::sqrt(-2.0 * std::log(u1));
  double angle = 6.283185307179586476925 * u2;
  return static_cast<float>((i % 2 == 0) ? radius * std::cos(angle) : radius * std::sin(angle));
}

SEG_HD double philox_normal_f64(uint64_t seed, uint64_t call, uint64_t i) {
  Philox4 r = philox4x32_10(seed, i, call);
  double u1 = 1.0 - u32x2_to_unit_f64(r.v[0], r.v[1]);  // (0, 1]
  double u2 = u32x2_to_unit_f64(r.v[2], r.v[3]);
  return std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586476925 * u2);
}

}  // namespace seg
