// Synthetic Cityscapes: procedural street scenes in the layout and naming of the real dataset.
//
// Design decisions a reader cannot see from the code:
// - One scene per annotated image. All of its randomness comes from Philox streams
//   (kernels/common/philox.h) keyed by the dataset seed, with the counter's high word naming (split,
//   image index, purpose): an image depends on nothing else, so the thread count and the order of
//   work never change a byte. Texture noise is a cheap integer hash seeded from those streams.
// - World: X to the right, Y up, Z along the street; the camera drives forward along Z and is at
//   Z = 0 in the annotated frame. Snippet frame offset t (0..29, whatever the frame numbers) is
//   time s = (t - 19) / 17 s. A scene is a flat ground plane (road with lanes, parking strips,
//   verges, sidewalks, front gardens, a cross street) evaluated analytically, plus "prims": axis-aligned rectangles in 3D (building faces, vehicle
//   boxes, billboards for people and tree crowns), each with a label, a 2D shape inside its
//   rectangle (ellipse, capsule, triangle, noisy blob, ...) and a procedural paint. Vehicles,
//   cyclists and pedestrians move linearly (smooth motion; colours fixed per object).
// - Vertical world lines stay vertical in the image (the camera only yaws), so the camera depth of a
//   vertical plane is constant per image column: rasterising is a column loop over a row span.
// - Deferred rendering: a visibility pass keeps the nearest prim per pixel (z-buffer), a decal pass
//   darkens the ground under objects (contact and sun shadows), then each pixel is shaded once.
//   Periodic patterns (windows, lane dashes, tiles, slats) are box-filtered over the pixel footprint
//   and noise octaves finer than two pixels are dropped: small images show averages, not aliasing.
//   Thin objects (poles) are widened to one pixel so they do not break up into dashes.
// - Labels come only from data/labels.h. Void ids on purpose: 0 for surfaces farther than 150 m
//   (too far to annotate), 1 for the ego vehicle's hood, 4 for street furniture, 9 for parking
//   strips; labelTrainIds go through the table; the color PNGs are RGB (png.h writes no RGBA).
#include "data/synthetic_cityscapes.h"

#include <algorithm>
#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <exception>
#include <limits>
#include <mutex>
#include <system_error>
#include <thread>
#include <unistd.h>

#include "data/png.h"
#include "engine/error.h"
#include "kernels/common/philox.h"

namespace seg::data {

namespace {

// ---------------------------------------------------------------------------------------------
// Label ids (data/labels.h)

constexpr uint8_t kUnlabeled = 0, kEgoVehicle = 1, kStatic = 4, kRoad = 7, kSidewalk = 8, kParking = 9,
                  kBuilding = 11, kWall = 12, kFence = 13, kPole = 17, kTrafficLight = 19, kTrafficSign = 20,
                  kVegetation = 21, kTerrain = 22, kSky = 23, kPerson = 24, kRider = 25, kCar = 26, kTruck = 27,
                  kBus = 28, kTrain = 31, kMotorcycle = 32, kBicycle = 33;
static_assert(kCityscapesLabels[kEgoVehicle].name == "ego vehicle" && kCityscapesLabels[kStatic].name == "static" &&
              kCityscapesLabels[kParking].name == "parking" && kCityscapesLabels[kWall].name == "wall" &&
              kCityscapesLabels[kPole].name == "pole" && kCityscapesLabels[kTrafficSign].name == "traffic sign" &&
              kCityscapesLabels[kTerrain].name == "terrain" && kCityscapesLabels[kRider].name == "rider" &&
              kCityscapesLabels[kTrain].name == "train" && kCityscapesLabels[kBicycle].name == "bicycle");

// ---------------------------------------------------------------------------------------------
// Constants of the world (metres, seconds)

constexpr float kPi = 3.14159265358979f;
constexpr float kNear = 0.3f;                // nearer surfaces are not drawn
constexpr float kFarLabelDistance = 150.0f;  // farther surfaces are labelled 0 (unlabeled)
constexpr float kStreetBegin = -60.0f;       // world Z range of the modelled street
constexpr float kStreetEnd = 330.0f;         // a row of buildings closes the street here
constexpr float kHoodHeight = 0.115f;        // the ego vehicle's hood: fraction of the image height
constexpr float kSensorNoise = 1.6f / 255.0f;  // uniform per-pixel noise amplitude, new each frame

inline float frame_time(int frame) { return static_cast<float>(frame - kAnnotatedFrameOffset) / kSnippetFps; }

// ---------------------------------------------------------------------------------------------
// Small vector maths (also used for colours)

struct V3 {
  float x = 0, y = 0, z = 0;
};
inline V3 operator+(V3 a, V3 b) { return {a.x + b.x, a.y + b.y, a.z + b.z}; }
inline V3 operator-(V3 a, V3 b) { return {a.x - b.x, a.y - b.y, a.z - b.z}; }
inline V3 operator*(V3 a, float s) { return {a.x * s, a.y * s, a.z * s}; }
inline V3 operator*(V3 a, V3 b) { return {a.x * b.x, a.y * b.y, a.z * b.z}; }
inline float dot(V3 a, V3 b) { return a.x * b.x + a.y * b.y + a.z * b.z; }
inline V3 normalize(V3 a) { return a * (1.0f / std::sqrt(std::max(dot(a, a), 1e-20f))); }
inline V3 mix(V3 a, V3 b, float t) { return a + (b - a) * t; }
inline float clamp01(float x) { return std::min(1.0f, std::max(0.0f, x)); }
inline float smoothstep(float e0, float e1, float x) {
  const float t = clamp01((x - e0) / (e1 - e0));
  return t * t * (3.0f - 2.0f * t);
}
inline V3 grey(float g) { return {g, g, g}; }

// ---------------------------------------------------------------------------------------------
// Texture noise and box-filtered patterns

inline uint32_t hash_u32(uint32_t x) {
  x ^= x >> 16;
  x *= 0x7feb352dU;
  x ^= x >> 15;
  x *= 0x846ca68bU;
  x ^= x >> 16;
  return x;
}
inline uint32_t hash_2d(int32_t i, int32_t j, uint32_t seed) {
  return hash_u32(static_cast<uint32_t>(i) * 0x8da6b343U ^ hash_u32(static_cast<uint32_t>(j) * 0xd8163841U ^ seed));
}
inline float hash_unit(int32_t i, int32_t j, uint32_t seed) {
  return static_cast<float>(hash_2d(i, j, seed) >> 8) * (1.0f / 16777216.0f);
}

// Smooth value noise in [0, 1).
float value_noise(float x, float y, uint32_t seed) {
  const float fx = std::floor(x), fy = std::floor(y);
  const int32_t ix = static_cast<int32_t>(fx), iy = static_cast<int32_t>(fy);
  float tx = x - fx, ty = y - fy;
  tx = tx * tx * (3.0f - 2.0f * tx);
  ty = ty * ty * (3.0f - 2.0f * ty);
  const float a = hash_unit(ix, iy, seed), b = hash_unit(ix + 1, iy, seed);
  const float c = hash_unit(ix, iy + 1, seed), d = hash_unit(ix + 1, iy + 1, seed);
  return a + (b - a) * tx + (c - a) * ty + (a - b - c + d) * tx * ty;
}

// Fractal noise in about [-0.5, 0.5]. `footprint` is the pixel size in the units of (x, y): an
// octave fades out as its wavelength drops from four to two pixels, so nothing finer than the
// sampling rate is drawn.
float fbm(float x, float y, uint32_t seed, int octaves, float footprint) {
  float sum = 0.0f, amp = 0.5f, freq = 1.0f;
  for (int o = 0; o < octaves; ++o) {
    const float w = clamp01(0.5f / (std::max(footprint, 1e-6f) * freq) - 1.0f);
    if (w <= 0.0f) break;
    sum += amp * w * (value_noise(x * freq, y * freq, seed + static_cast<uint32_t>(o) * 0x9E3779B9U) - 0.5f);
    amp *= 0.5f;
    freq *= 2.0f;
  }
  return sum;
}

// Integral over [0, x] of a pulse train that is 1 on [k p, k p + duty p).
inline float pulse_integral(float x, float period, float duty) {
  const float n = std::floor(x / period);
  return n * duty * period + std::min(x - n * period, duty * period);
}
// The pulse train averaged over the pixel footprint [x - w/2, x + w/2] (a box filter).
inline float filtered_pulse(float x, float w, float period, float duty) {
  w = std::max(w, 1e-3f * period);
  return clamp01((pulse_integral(x + 0.5f * w, period, duty) - pulse_integral(x - 0.5f * w, period, duty)) / w);
}
// The fraction of the footprint [x - w/2, x + w/2] inside [a, b].
inline float filtered_box(float x, float w, float a, float b) {
  w = std::max(w, 1e-5f);
  return clamp01((std::min(x + 0.5f * w, b) - std::max(x - 0.5f * w, a)) / w);
}

// ---------------------------------------------------------------------------------------------
// Deterministic draws: one Philox stream per (seed, split, image, purpose)

enum StreamPurpose : uint64_t {
  kStreamLayout = 1,
  kStreamLight,
  kStreamBuildings,
  kStreamFurniture,
  kStreamTraffic,
  kStreamPeople,
  kStreamTexture,
};

class Rng {
 public:
  Rng(uint64_t seed, uint64_t stream) : seed_(seed), stream_(stream) {}
  float uniform() { return philox_uniform_f32(seed_, stream_, next_++); }
  float uniform(float lo, float hi) { return lo + (hi - lo) * uniform(); }
  int integer(int lo, int hi) {  // inclusive
    const int n = hi - lo + 1;
    return lo + std::min(n - 1, static_cast<int>(uniform() * static_cast<float>(n)));
  }
  bool chance(float p) { return uniform() < p; }
  float sign() { return chance(0.5f) ? 1.0f : -1.0f; }
  uint32_t bits() { return philox_u32_at(seed_, stream_, next_++); }
  template <class T, size_t N>
  const T& pick(const std::array<T, N>& values) {
    return values[static_cast<size_t>(integer(0, static_cast<int>(N) - 1))];
  }
  V3 jitter(V3 c, float amount) {  // a colour varied in brightness and a little in hue
    const float b = uniform(1.0f - amount, 1.0f + amount);
    return V3{c.x * b * uniform(0.96f, 1.04f), c.y * b * uniform(0.96f, 1.04f), c.z * b * uniform(0.96f, 1.04f)};
  }

 private:
  uint64_t seed_, stream_;
  uint64_t next_ = 0;
};

uint64_t scene_stream(Split split, int index, StreamPurpose purpose) {
  return (static_cast<uint64_t>(split) << 60) | (static_cast<uint64_t>(index) << 8) | purpose;
}

// ---------------------------------------------------------------------------------------------
// Prims: axis-aligned rectangles in 3D with a shape, a label and a paint

// Plane axes: a prim lies in the plane {axis} = c; (u, v) are the other two world coordinates:
// X-plane (u = Z, v = Y), Y-plane (u = X, v = Z), Z-plane (u = X, v = Y).
enum Axis : uint8_t { kAxisX = 0, kAxisY = 1, kAxisZ = 2 };

enum Shape : uint8_t {
  kShapeRect,
  kShapeEllipse,       // inscribed in the rectangle
  kShapeRing,          // ellipse minus an inner ellipse of relative radius sp[0]
  kShapeSegment,       // capsule: points within sp[4] of the segment (sp[0], sp[1]) - (sp[2], sp[3])
  kShapeTriangleUp,    // apex at the top centre
  kShapeTriangleDown,  // apex at the bottom centre
  kShapeDiamond,
  kShapeBlob,          // ellipse with a noisy outline: noise frequency sp[0] (1/m), depth sp[1]
  kShapeTrapezoid,     // the top edge is inset by sp[0] at u0 and sp[1] at u1
  kShapeRoundTop,      // rectangle with a half-ellipse on top
};

enum Paint : uint8_t {
  kPaintFlat,        // albedo with a little noise
  kPaintFacade,      // pp: floor height, window period, window width fraction, window height fraction
  kPaintGlass,       // vehicle windows, pillars in the albedo (the body colour); pp[0] role
  kPaintCarBody,     // pp[0] role (side, front, rear, top, van side, van rear), pp[1] +1: front at u1
  kPaintTire,        // tyre with a rim
  kPaintFoliage,
  kPaintBark,
  kPaintMetal,       // poles: cylinder shading across u
  kPaintSign,        // pp[0] sign type
  kPaintLightHousing,  // pp[0] 1: lamps face the camera, pp[1] lit lamp (0 red, 1 amber, 2 green)
  kPaintLamp,        // emissive
  kPaintFence,       // pp[0] style
  kPaintWall,        // pp[0] style
  kPaintBusBody,     // pp[0] role, pp[1] +1: front at u1, pp[2] 1: tram
  kPaintTruckBox,    // pp[0] role
  kPaintTruckCab,    // pp[0] role
  kPaintPoster,
};

enum FaceRole : int { kRoleSide = 0, kRoleFront = 1, kRoleRear = 2, kRoleTop = 3 };

enum PrimFlags : uint8_t {
  kFlagMinWidth = 1,   // widened to at least one pixel in u
  kFlagMinHeight = 2,  // widened to at least one pixel in v
};

struct Prim {
  float c = 0, u0 = 0, u1 = 0, v0 = 0, v1 = 0;
  float sp[5] = {};  // shape parameters
  float pp[4] = {};  // paint parameters
  V3 albedo;
  V3 origin;         // texture origin: moving objects carry their texture along
  float bias = 0;    // metres nearer in the depth test (decorations over coplanar parts)
  uint32_t seed = 0;
  uint8_t axis = kAxisZ;
  int8_t facing = 0;  // +1/-1: the outward normal along the axis, back faces are culled; 0: two-sided
  uint8_t shape = kShapeRect, paint = kPaintFlat, label = kUnlabeled, flags = 0;
};

Prim make_prim(uint8_t axis, int8_t facing, float c, float u0, float u1, float v0, float v1, uint8_t label,
               uint8_t paint, V3 albedo) {
  Prim p;
  p.axis = axis;
  p.facing = facing;
  p.c = c;
  p.u0 = std::min(u0, u1);
  p.u1 = std::max(u0, u1);
  p.v0 = std::min(v0, v1);
  p.v1 = std::max(v0, v1);
  p.label = label;
  p.paint = paint;
  p.albedo = albedo;
  return p;
}

// A capsule from (au, av) to (bu, bv) of radius r in the plane axis = c (two-sided).
Prim make_segment(uint8_t axis, float c, float au, float av, float bu, float bv, float r, uint8_t label, V3 albedo) {
  Prim p = make_prim(axis, 0, c, std::min(au, bu) - r, std::max(au, bu) + r, std::min(av, bv) - r,
                     std::max(av, bv) + r, label, kPaintFlat, albedo);
  p.shape = kShapeSegment;
  p.sp[0] = au;
  p.sp[1] = av;
  p.sp[2] = bu;
  p.sp[3] = bv;
  p.sp[4] = r;
  return p;
}

// Ground shadows: soft ellipses or rectangles on the ground plane.
struct Decal {
  float x0 = 0, x1 = 0, z0 = 0, z1 = 0;
  float strength = 0.5f;  // 1 - the darkest factor
  bool ellipse = true;
};

// ---------------------------------------------------------------------------------------------
// Scenes

struct Lighting {
  V3 sun_dir{0, 1, 0};  // towards the sun, unit length
  V3 sun;               // direct light (zero when overcast)
  V3 ambient;           // sky light
  V3 zenith, horizon;   // sky colours
  V3 cloud_colour;
  float cloud_cover = 0.3f, cloud_scale = 1.0f;
  float fog_distance = 400.0f;
  float exposure = 1.0f;
  V3 tint{1, 1, 1};
  uint32_t cloud_seed = 0;
  bool sunny = true;
};

enum LotKind : int { kLotBuilding, kLotGap, kLotPark };

// A stretch of one side of the street beyond the sidewalk.
struct Lot {
  float z0 = 0, z1 = 0;
  int kind = kLotBuilding;
  float front = 0;   // |X| of the building front
  float height = 0;  // building height (0: none)
  float depth = 12;  // building depth behind the front
  uint8_t ground = kTerrain;  // label of the ground between the sidewalk and the front
};

// The cross-section of one side of the street, from the road edge outwards.
struct Side {
  float sign = 1;     // -1 left, +1 right of the road centre
  float park = 0;     // parking strip width (0: none)
  float verge = 0;    // grass verge between the curb and the sidewalk
  float walk = 3;     // sidewalk width
  float lot_x = 0;    // |X| where the sidewalk ends
  std::vector<Lot> lots;  // sorted by z0, non-overlapping
  float max_front = 0;
};

struct Crossing {
  float z0 = 0, z1 = 0;  // the cross street's band along Z, sidewalks included
  float walk = 3;        // its sidewalk width
};
struct Zebra {
  float z0 = 0, z1 = 0;
};

struct PersonLook {
  V3 skin, hair, top, legs, shoes;
  float height = 1.75f;
  bool long_hair = false;
};

enum class VehicleKind : uint8_t { Car, Van, Truck, Bus, Tram, Motorcycle, Bicycle };

// Any vehicle, parked (speed 0) or moving at constant speed along its heading.
struct Vehicle {
  VehicleKind kind = VehicleKind::Car;
  float x = 0, z = 0;     // centre at s = 0, on the ground
  float speed = 0;        // m/s along the heading
  uint8_t axis = kAxisZ;  // heading along Z or X
  float dir = 1;          // +1 / -1 along the axis
  float length = 4.4f, width = 1.8f, height = 1.5f;
  V3 colour, colour2;
  uint32_t seed = 0;
  bool ridden = false;    // bicycles and motorcycles
  PersonLook rider;
  float phase = 0;        // pedalling phase at s = 0
};

struct Walker {
  float x = 0, z = 0;     // at s = 0
  float vx = 0, vz = 0;
  float phase = 0;        // gait phase at s = 0
  PersonLook look;
};

struct Scene {
  int width = 0, height = 0;
  uint32_t tex_seed = 0, noise_seed = 0;
  // Camera: position (cam_x, cam_h, v_ego * s), yaw (yaw0 + yaw_rate * s), focal length and principal point in pixels.
  float f = 0, ppx = 0, ppy = 0, cam_h = 1.3f, cam_x = 0, yaw0 = 0, yaw_rate = 0, v_ego = 8;
  // Road
  int lanes = 2, lanes_left = 1, cam_lane = 1;
  float lane_w = 3.3f, road_half = 3.3f;
  bool centre_double = false;
  bool rails = false;
  float rail_x = 0;
  float urban = 0.5f;  // 0: suburban, 1: downtown
  Side side[2];
  std::vector<Crossing> crossings;
  std::vector<Zebra> zebras;
  V3 asphalt, walk_colour, curb_colour, park_colour, grass_colour;
  float tile = 0.4f;
  int park_style = 0;
  Lighting light;
  std::vector<Prim> statics;
  std::vector<Decal> static_decals;
  std::vector<Vehicle> vehicles;
  std::vector<Walker> walkers;
};

float lane_centre(const Scene& sc, int lane) { return -sc.road_half + (static_cast<float>(lane) + 0.5f) * sc.lane_w; }

const Crossing* crossing_at(const Scene& sc, float z, float margin = 0.0f) {
  for (const Crossing& c : sc.crossings)
    if (z >= c.z0 - margin && z <= c.z1 + margin) return &c;
  return nullptr;
}

bool near_zebra(const Scene& sc, float z, float margin) {
  for (const Zebra& zb : sc.zebras)
    if (z >= zb.z0 - margin && z <= zb.z1 + margin) return true;
  return false;
}

// Where a moving object's shadow falls: the ground offset of a point at height h.
V3 shadow_offset(const Lighting& light, float h) {
  if (!light.sunny) return {};
  const float k = h / std::max(light.sun_dir.y, 0.2f);
  return {-light.sun_dir.x * k, 0, -light.sun_dir.z * k};
}

void add_shadow(std::vector<Decal>& decals, const Lighting& light, float x0, float x1, float z0, float z1, float h,
                float strength, bool ellipse) {
  // Contact shadow under the object, plus (in sunshine) the cast shadow shifted away from the sun.
  decals.push_back(Decal{x0, x1, z0, z1, strength * 0.9f, ellipse});
  if (light.sunny) {
    const V3 o = shadow_offset(light, h * 0.5f);
    decals.push_back(Decal{std::min(x0, x0 + o.x), std::max(x1, x1 + o.x), std::min(z0, z0 + o.z),
                           std::max(z1, z1 + o.z), strength * 0.75f, ellipse});
  }
}

// --- Palettes (display colours in [0, 1])

constexpr std::array<V3, 12> kFacadeColours = {{{0.78f, 0.72f, 0.62f}, {0.86f, 0.83f, 0.76f}, {0.62f, 0.62f, 0.62f},
                                                {0.45f, 0.45f, 0.47f}, {0.60f, 0.35f, 0.28f}, {0.80f, 0.66f, 0.46f},
                                                {0.70f, 0.75f, 0.78f}, {0.90f, 0.89f, 0.86f}, {0.82f, 0.67f, 0.64f},
                                                {0.66f, 0.60f, 0.50f}, {0.52f, 0.49f, 0.44f}, {0.74f, 0.70f, 0.55f}}};
constexpr std::array<V3, 11> kCarColours = {{{0.88f, 0.88f, 0.90f}, {0.07f, 0.07f, 0.08f}, {0.66f, 0.68f, 0.71f},
                                             {0.40f, 0.41f, 0.43f}, {0.10f, 0.14f, 0.32f}, {0.58f, 0.08f, 0.07f},
                                             {0.20f, 0.35f, 0.60f}, {0.12f, 0.24f, 0.17f}, {0.68f, 0.63f, 0.54f},
                                             {0.85f, 0.75f, 0.25f}, {0.25f, 0.25f, 0.26f}}};
constexpr std::array<V3, 6> kLeafColours = {{{0.20f, 0.32f, 0.10f}, {0.24f, 0.36f, 0.12f}, {0.16f, 0.27f, 0.09f},
                                             {0.28f, 0.38f, 0.14f}, {0.22f, 0.30f, 0.13f}, {0.40f, 0.38f, 0.12f}}};
constexpr std::array<V3, 6> kSkinColours = {{{0.87f, 0.72f, 0.60f}, {0.80f, 0.62f, 0.50f}, {0.64f, 0.46f, 0.34f},
                                             {0.45f, 0.31f, 0.22f}, {0.93f, 0.78f, 0.67f}, {0.72f, 0.55f, 0.42f}}};
constexpr std::array<V3, 5> kHairColours = {{{0.10f, 0.08f, 0.06f}, {0.30f, 0.20f, 0.12f}, {0.55f, 0.42f, 0.25f},
                                             {0.70f, 0.68f, 0.65f}, {0.20f, 0.14f, 0.10f}}};
constexpr std::array<V3, 12> kClothColours = {{{0.12f, 0.12f, 0.14f}, {0.80f, 0.80f, 0.78f}, {0.55f, 0.10f, 0.10f},
                                               {0.15f, 0.25f, 0.50f}, {0.45f, 0.45f, 0.42f}, {0.60f, 0.50f, 0.35f},
                                               {0.20f, 0.40f, 0.25f}, {0.85f, 0.60f, 0.20f}, {0.35f, 0.20f, 0.40f},
                                               {0.70f, 0.30f, 0.45f}, {0.25f, 0.30f, 0.35f}, {0.90f, 0.85f, 0.40f}}};
constexpr std::array<V3, 6> kTrouserColours = {{{0.15f, 0.20f, 0.35f}, {0.10f, 0.10f, 0.11f}, {0.35f, 0.33f, 0.30f},
                                                {0.55f, 0.48f, 0.36f}, {0.25f, 0.30f, 0.45f}, {0.45f, 0.45f, 0.47f}}};

PersonLook random_look(Rng& r) {
  PersonLook p;
  p.skin = r.jitter(r.pick(kSkinColours), 0.05f);
  p.hair = r.jitter(r.pick(kHairColours), 0.1f);
  p.top = r.jitter(r.pick(kClothColours), 0.1f);
  p.legs = r.jitter(r.pick(kTrouserColours), 0.1f);
  p.shoes = r.jitter(r.chance(0.6f) ? V3{0.08f, 0.08f, 0.08f} : V3{0.75f, 0.75f, 0.72f}, 0.1f);
  p.height = r.uniform(1.55f, 1.92f);
  p.long_hair = r.chance(0.35f);
  return p;
}

// --- Layout, lighting

void make_layout(Scene& sc, Rng& r) {
  const float w = static_cast<float>(sc.width), h = static_cast<float>(sc.height);
  sc.v_ego = r.chance(0.2f) ? r.uniform(2.0f, 5.0f) : r.uniform(6.0f, 12.5f);
  sc.cam_h = r.uniform(1.2f, 1.35f);
  sc.f = w * r.uniform(1.0f, 1.12f);
  sc.ppx = w * (0.5f + r.uniform(-0.02f, 0.02f));
  sc.ppy = h * r.uniform(0.40f, 0.47f);
  sc.yaw0 = r.uniform(-0.05f, 0.05f);
  sc.yaw_rate = r.uniform(-0.02f, 0.02f);
  const float lanes = r.uniform();
  sc.lanes = lanes < 0.55f ? 2 : (lanes < 0.75f ? 3 : 4);
  sc.lanes_left = sc.lanes / 2;
  sc.lane_w = r.uniform(3.0f, 3.6f);
  sc.road_half = static_cast<float>(sc.lanes) * sc.lane_w * 0.5f;
  sc.centre_double = sc.lanes >= 4 || r.chance(0.3f);
  const int right_lanes = sc.lanes - sc.lanes_left;
  sc.cam_lane = (right_lanes == 1 || r.chance(0.7f)) ? sc.lanes - 1 : r.integer(sc.lanes_left, sc.lanes - 2);
  sc.cam_x = lane_centre(sc, sc.cam_lane) + r.uniform(-0.25f, 0.25f);
  sc.urban = r.uniform();
  for (int s = 0; s < 2; ++s) {
    Side& sd = sc.side[s];
    sd.sign = s == 0 ? -1.0f : 1.0f;
    sd.park = r.chance(0.45f) ? r.uniform(2.0f, 2.4f) : 0.0f;
    sd.verge = r.chance(0.3f) ? r.uniform(0.8f, 2.2f) : 0.0f;
    sd.walk = r.uniform(2.5f, 5.0f);
    sd.lot_x = sc.road_half + sd.park + sd.verge + sd.walk;
  }
  if (r.chance(0.5f)) {
    Crossing c;
    c.walk = r.uniform(2.5f, 4.0f);
    c.z0 = r.uniform(22.0f, 75.0f);
    c.z1 = c.z0 + 2.0f * c.walk + r.uniform(7.0f, 12.0f);
    sc.crossings.push_back(c);
  }
  if (r.chance(0.3f)) {
    Crossing c;
    c.walk = r.uniform(2.5f, 4.0f);
    c.z0 = r.uniform(150.0f, 220.0f);
    c.z1 = c.z0 + 2.0f * c.walk + r.uniform(7.0f, 12.0f);
    sc.crossings.push_back(c);
  }
  for (const Crossing& c : sc.crossings) {
    sc.zebras.push_back(Zebra{c.z0 + 0.4f, c.z0 + c.walk - 0.4f});
    sc.zebras.push_back(Zebra{c.z1 - c.walk + 0.4f, c.z1 - 0.4f});
  }
  if (!crossing_at(sc, 50.0f, 40.0f) && r.chance(0.35f)) {
    const float z = r.uniform(25.0f, 70.0f);
    sc.zebras.push_back(Zebra{z, z + 4.0f});
  }
  sc.rails = r.chance(0.2f);
  sc.rail_x = lane_centre(sc, 0);
  sc.asphalt = r.jitter(V3{0.33f, 0.33f, 0.35f}, 0.15f);
  constexpr std::array<V3, 4> kWalkColours = {
      {{0.62f, 0.60f, 0.57f}, {0.60f, 0.50f, 0.48f}, {0.55f, 0.55f, 0.56f}, {0.66f, 0.63f, 0.56f}}};
  sc.walk_colour = r.jitter(r.pick(kWalkColours), 0.08f);
  sc.curb_colour = r.jitter(V3{0.70f, 0.70f, 0.69f}, 0.05f);
  sc.park_style = r.integer(0, 1);
  sc.park_colour = sc.park_style == 0 ? sc.asphalt * 1.08f : r.jitter(V3{0.45f, 0.43f, 0.42f}, 0.1f);
  sc.grass_colour = r.chance(0.8f) ? r.jitter(V3{0.34f, 0.44f, 0.20f}, 0.12f) : r.jitter(V3{0.52f, 0.50f, 0.32f}, 0.1f);
  sc.tile = r.uniform(0.3f, 0.5f);
}

void make_lighting(Scene& sc, Rng& r) {
  Lighting& L = sc.light;
  const float weather = r.uniform();
  const bool overcast = weather >= 0.6f && weather < 0.9f, low_sun = weather >= 0.9f;
  L.sunny = !overcast;
  const float elevation = (low_sun ? r.uniform(8.0f, 20.0f) : r.uniform(25.0f, 60.0f)) * kPi / 180.0f;
  const float azimuth = r.uniform(0.0f, 2.0f * kPi);
  L.sun_dir = V3{std::cos(elevation) * std::sin(azimuth), std::sin(elevation), std::cos(elevation) * std::cos(azimuth)};
  if (overcast) {
    L.sun = {};
    L.ambient = V3{0.92f, 0.93f, 0.95f} * r.uniform(0.8f, 1.0f);
    L.zenith = r.jitter(V3{0.66f, 0.69f, 0.73f}, 0.08f);
    L.horizon = r.jitter(V3{0.82f, 0.83f, 0.85f}, 0.05f);
    L.cloud_colour = r.jitter(V3{0.74f, 0.75f, 0.77f}, 0.08f);
    L.cloud_cover = r.uniform(0.75f, 1.0f);
    L.fog_distance = r.uniform(200.0f, 450.0f);
  } else if (low_sun) {
    L.sun = V3{1.0f, 0.78f, 0.55f} * r.uniform(0.6f, 0.75f);
    L.ambient = V3{0.45f, 0.48f, 0.58f} * r.uniform(0.9f, 1.05f);
    L.zenith = r.jitter(V3{0.30f, 0.42f, 0.70f}, 0.08f);
    L.horizon = r.jitter(V3{0.93f, 0.80f, 0.66f}, 0.05f);
    L.cloud_colour = V3{1.0f, 0.88f, 0.78f};
    L.cloud_cover = r.uniform(0.1f, 0.5f);
    L.fog_distance = r.uniform(300.0f, 700.0f);
  } else {
    L.sun = V3{1.0f, 0.96f, 0.88f} * r.uniform(0.55f, 0.7f);
    L.ambient = V3{0.55f, 0.58f, 0.65f} * r.uniform(0.85f, 1.0f);
    L.zenith = r.jitter(V3{0.25f, 0.45f, 0.78f}, 0.1f);
    L.horizon = r.jitter(V3{0.70f, 0.79f, 0.89f}, 0.05f);
    L.cloud_colour = V3{0.97f, 0.97f, 0.97f};
    L.cloud_cover = r.uniform(0.0f, 0.55f);
    L.fog_distance = r.uniform(350.0f, 900.0f);
  }
  L.cloud_scale = r.uniform(0.6f, 1.6f);
  L.cloud_seed = r.bits();
  L.exposure = r.uniform(0.88f, 1.12f);
  const float temperature = r.uniform(-1.0f, 1.0f);
  L.tint = V3{1.0f + 0.06f * temperature, 1.0f, 1.0f - 0.06f * temperature};
}

// --- Buildings, lots, vegetation, walls and fences

void add_tree(Scene& sc, Rng& r, float x, float z, float size) {
  const float trunk_h = r.uniform(1.8f, 3.2f) * size, crown = r.uniform(1.6f, 2.8f) * size;
  const V3 leaf = r.jitter(r.pick(kLeafColours), 0.12f);
  Prim trunk = make_prim(kAxisZ, 0, z, x - 0.11f * size, x + 0.11f * size, 0.0f, trunk_h + crown * 0.6f,
                         kVegetation, kPaintBark, r.jitter(V3{0.30f, 0.26f, 0.22f}, 0.15f));
  trunk.flags = kFlagMinWidth;
  trunk.seed = r.bits();
  sc.statics.push_back(trunk);
  const float cy = trunk_h + crown;
  const int blobs = r.integer(4, 7);
  for (int i = 0; i < blobs; ++i) {
    const float ox = i == 0 ? 0.0f : r.uniform(-0.7f, 0.7f) * crown;
    const float oy = i == 0 ? 0.0f : r.uniform(-0.5f, 0.6f) * crown;
    const float rr = i == 0 ? crown : r.uniform(0.45f, 0.7f) * crown;
    Prim b = make_prim(kAxisZ, 0, z + r.uniform(-0.4f, 0.4f) * crown, x + ox - rr, x + ox + rr, cy + oy - rr * 0.9f,
                       cy + oy + rr * 0.9f, kVegetation, kPaintFoliage, r.jitter(leaf, 0.1f));
    b.shape = kShapeBlob;
    b.sp[0] = 1.8f / rr;
    b.sp[1] = 0.35f;
    b.seed = r.bits();
    sc.statics.push_back(b);
  }
  const V3 o = shadow_offset(sc.light, cy);
  sc.static_decals.push_back(Decal{x - 0.4f, x + 0.4f, z - 0.4f, z + 0.4f, 0.3f, true});
  if (sc.light.sunny)
    sc.static_decals.push_back(Decal{x + o.x - crown, x + o.x + crown, z + o.z - crown, z + o.z + crown, 0.35f, true});
}

// A wall, fence or hedge along Z at |X| = xa on side `sign`, from z0 to z1.
void add_barrier(Scene& sc, Rng& r, float sign, float xa, float z0, float z1, float height, int kind) {
  const float x = sign * xa;
  const int8_t toward_road = static_cast<int8_t>(-sign);
  if (kind == 0) {  // wall: a thin box (front, top, ends)
    const int style = r.integer(0, 2);
    const V3 colour = style == 1 ? r.jitter(V3{0.55f, 0.30f, 0.24f}, 0.1f)
                                 : r.jitter(r.pick(kFacadeColours) * 0.9f, 0.1f);
    const float t = 0.25f;
    const uint32_t seed = r.bits();
    Prim front = make_prim(kAxisX, toward_road, x, z0, z1, 0.0f, height, kWall, kPaintWall, colour);
    Prim top = make_prim(kAxisY, 1, height, std::min(x, x + sign * t), std::max(x, x + sign * t), z0, z1, kWall,
                         kPaintWall, colour * 1.1f);
    Prim end0 = make_prim(kAxisZ, -1, z0, x, x + sign * t, 0.0f, height, kWall, kPaintWall, colour);
    Prim end1 = make_prim(kAxisZ, 1, z1, x, x + sign * t, 0.0f, height, kWall, kPaintWall, colour);
    for (Prim* p : {&front, &top, &end0, &end1}) {
      p->pp[0] = static_cast<float>(style);
      p->seed = seed;
      sc.statics.push_back(*p);
    }
  } else if (kind == 1) {  // fence: one two-sided plane
    const int style = r.integer(0, 2);
    const V3 colour = style == 0 ? r.jitter(V3{0.45f, 0.33f, 0.22f}, 0.15f)
                                 : r.jitter(style == 1 ? V3{0.25f, 0.27f, 0.27f} : V3{0.55f, 0.57f, 0.56f}, 0.15f);
    Prim fence = make_prim(kAxisX, 0, x, z0, z1, 0.0f, height, kFence, kPaintFence, colour);
    fence.pp[0] = static_cast<float>(style);
    fence.seed = r.bits();
    sc.statics.push_back(fence);
  } else {  // hedge: a box of foliage
    const V3 leaf = r.jitter(r.pick(kLeafColours), 0.1f);
    const float t = r.uniform(0.6f, 1.0f);
    const uint32_t seed = r.bits();
    Prim front = make_prim(kAxisX, toward_road, x, z0, z1, 0.0f, height, kVegetation, kPaintFoliage, leaf);
    Prim top = make_prim(kAxisY, 1, height, std::min(x, x + sign * t), std::max(x, x + sign * t), z0, z1,
                         kVegetation, kPaintFoliage, leaf * 1.1f);
    Prim end0 = make_prim(kAxisZ, -1, z0, x, x + sign * t, 0.0f, height, kVegetation, kPaintFoliage, leaf);
    for (Prim* p : {&front, &top, &end0}) {
      p->seed = seed;
      sc.statics.push_back(*p);
    }
  }
}

// A building: the front facing the road and both ends (the roof is never visible from the road).
void add_building(Scene& sc, Rng& r, float sign, float front, float z0, float z1, float height, float depth) {
  const V3 colour = r.jitter(r.pick(kFacadeColours), 0.1f);
  Prim p = make_prim(kAxisX, static_cast<int8_t>(-sign), sign * front, z0, z1, 0.0f, height, kBuilding, kPaintFacade,
                     colour);
  p.pp[0] = r.uniform(2.9f, 3.6f);   // floor height
  p.pp[1] = r.uniform(1.6f, 3.2f);   // window period
  p.pp[2] = r.uniform(0.35f, 0.6f);  // window width fraction
  p.pp[3] = r.uniform(0.4f, 0.6f);   // window height fraction
  p.seed = r.bits();
  sc.statics.push_back(p);
  Prim e0 = p, e1 = p;
  e0.axis = e1.axis = kAxisZ;
  e0.facing = -1;
  e1.facing = 1;
  e0.c = z0;
  e1.c = z1;
  e0.u0 = e1.u0 = std::min(sign * front, sign * (front + depth));
  e0.u1 = e1.u1 = std::max(sign * front, sign * (front + depth));
  e0.albedo = e1.albedo = colour * 0.97f;
  sc.statics.push_back(e0);
  sc.statics.push_back(e1);
}

void make_buildings(Scene& sc, Rng& r) {
  for (Side& sd : sc.side) {
    float z = kStreetBegin;
    while (z < kStreetEnd - 5.0f) {
      bool in_crossing = false;
      for (const Crossing& c : sc.crossings)
        if (z >= c.z0 && z < c.z1) {
          z = c.z1;
          in_crossing = true;
        }
      if (in_crossing) continue;
      float next_crossing = kStreetEnd - 5.0f;
      for (const Crossing& c : sc.crossings)
        if (c.z0 > z) next_crossing = std::min(next_crossing, c.z0);
      Lot lot;
      const float kind = r.uniform();
      lot.kind = kind < 0.6f + 0.25f * sc.urban ? kLotBuilding : (kind < 0.9f ? kLotGap : kLotPark);
      const float width = lot.kind == kLotBuilding ? r.uniform(8.0f, 26.0f)
                                                   : (lot.kind == kLotGap ? r.uniform(3.0f, 9.0f) : r.uniform(12.0f, 35.0f));
      lot.z0 = z;
      lot.z1 = std::min(z + width, next_crossing);
      if (lot.z1 - lot.z0 < 3.0f && lot.kind == kLotBuilding) lot.kind = kLotGap;
      lot.front = sd.lot_x;
      if (lot.kind == kLotBuilding) {
        if (r.chance(0.35f - 0.2f * sc.urban)) lot.front += r.uniform(1.5f, 5.0f);
        lot.height = r.uniform(7.0f + 8.0f * sc.urban, 14.0f + 14.0f * sc.urban);
        lot.ground = r.chance(0.6f) ? kTerrain : kSidewalk;
      }
      sd.lots.push_back(lot);
      z = lot.z1;
    }
    for (size_t i = 0; i < sd.lots.size(); ++i) {
      const Lot& lot = sd.lots[i];
      const float len = lot.z1 - lot.z0;
      const bool at_crossing = crossing_at(sc, lot.z1 + 0.5f) || crossing_at(sc, lot.z0 - 0.5f);
      sd.lots[i].depth = at_crossing ? 25.0f : 12.0f;
      if (lot.kind == kLotBuilding) {
        add_building(sc, r, sd.sign, lot.front, lot.z0, lot.z1, lot.height, lot.depth);
        if (lot.front > sd.lot_x + 0.5f) {  // front garden
          const float draw = r.uniform();
          if (draw < 0.85f)
            add_barrier(sc, r, sd.sign, sd.lot_x, lot.z0, lot.z1, r.uniform(0.6f, 1.4f), draw < 0.35f ? 2 : (draw < 0.6f ? 1 : 0));
          if (r.chance(0.3f)) add_tree(sc, r, sd.sign * (sd.lot_x + 1.0f), r.uniform(lot.z0 + 1.0f, lot.z1 - 1.0f), 0.7f);
        }
      } else {
        // Gaps and parks: something behind, trees, a fence or wall along the sidewalk.
        const bool park = lot.kind == kLotPark;
        if (r.chance(park ? 0.5f : 0.7f)) {
          const float back = sd.lot_x + (park ? r.uniform(25.0f, 50.0f) : r.uniform(8.0f, 20.0f));
          add_building(sc, r, sd.sign, back, lot.z0 - 6.0f, lot.z1 + 6.0f, r.uniform(8.0f, 24.0f), 12.0f);
        }
        const int trees = park ? std::max(2, static_cast<int>(len / 6.0f)) : (r.chance(0.7f) ? r.integer(1, 2) : 0);
        for (int t = 0; t < trees; ++t)
          add_tree(sc, r, sd.sign * (sd.lot_x + r.uniform(2.0f, park ? 15.0f : 6.0f)), r.uniform(lot.z0, lot.z1),
                   r.uniform(0.8f, 1.3f));
        if (r.chance(park ? 0.6f : 0.7f))
          add_barrier(sc, r, sd.sign, sd.lot_x, lot.z0, lot.z1, r.uniform(0.8f, 1.8f), r.chance(0.55f) ? 1 : 0);
      }
      sd.max_front = std::max(sd.max_front, lot.front + lot.depth);
    }
    for (const Crossing& c : sc.crossings)  // the far end of the cross street
      add_building(sc, r, sd.sign, sd.lot_x + r.uniform(35.0f, 60.0f), c.z0 - 5.0f, c.z1 + 5.0f, r.uniform(10.0f, 25.0f),
                   12.0f);
  }
  // The far end of the street: a row of buildings across it.
  float x = -140.0f;
  while (x < 140.0f) {
    const float w = r.uniform(15.0f, 40.0f);
    Prim p = make_prim(kAxisZ, -1, kStreetEnd, x, x + w, 0.0f, r.uniform(12.0f, 35.0f), kBuilding, kPaintFacade,
                       r.jitter(r.pick(kFacadeColours), 0.1f));
    p.pp[0] = 3.2f;
    p.pp[1] = 2.5f;
    p.pp[2] = 0.45f;
    p.pp[3] = 0.5f;
    p.seed = r.bits();
    sc.statics.push_back(p);
    x += w;
  }
}

// --- Street furniture: street lamps, signs, traffic lights, static objects, curb fences

void add_pole(Scene& sc, float x, float z, float height, float width) {
  Prim p = make_prim(kAxisZ, 0, z, x - 0.5f * width, x + 0.5f * width, 0.0f, height, kPole, kPaintMetal,
                     V3{0.45f, 0.46f, 0.47f});
  p.flags = kFlagMinWidth;
  sc.statics.push_back(p);
}

// A traffic light housing (a box) centred at (x, z) with its bottom at y; `lamps`: lamps face the camera.
void add_light_housing(Scene& sc, float x, float y, float z, bool lamps, int lit) {
  const float w = 0.34f, h = 0.95f, d = 0.28f;
  const V3 dark{0.10f, 0.10f, 0.11f};
  Prim front = make_prim(kAxisZ, -1, z - 0.5f * d, x - 0.5f * w, x + 0.5f * w, y, y + h, kTrafficLight,
                         kPaintLightHousing, dark);
  front.pp[0] = lamps ? 1.0f : 0.0f;
  front.pp[1] = static_cast<float>(lit);
  sc.statics.push_back(front);
  sc.statics.push_back(make_prim(kAxisX, -1, x - 0.5f * w, z - 0.5f * d, z + 0.5f * d, y, y + h, kTrafficLight,
                                 kPaintFlat, dark));
  sc.statics.push_back(make_prim(kAxisX, 1, x + 0.5f * w, z - 0.5f * d, z + 0.5f * d, y, y + h, kTrafficLight,
                                 kPaintFlat, dark));
}

void add_traffic_light(Scene& sc, Rng& r, float x, float z, bool facing_camera, int lit, bool overhead) {
  const float height = r.uniform(2.4f, 3.0f);
  add_pole(sc, x, z, height + 0.95f, 0.13f);
  add_light_housing(sc, x, height, z - 0.2f, facing_camera, lit);
  if (overhead) {  // an arm over the road with a second light above the lanes
    const float reach = std::min(std::abs(x) - 1.0f, r.uniform(3.0f, 5.5f));
    const float xe = x - (x > 0 ? reach : -reach);
    Prim arm = make_prim(kAxisZ, 0, z, std::min(x, xe), std::max(x, xe), height + 2.55f, height + 2.7f, kPole,
                         kPaintMetal, V3{0.45f, 0.46f, 0.47f});
    arm.flags = kFlagMinHeight;
    sc.statics.push_back(arm);
    add_pole(sc, x, z, height + 2.7f, 0.16f);
    add_light_housing(sc, xe, height + 1.6f, z - 0.2f, facing_camera, lit);
  }
}

void add_sign(Scene& sc, Rng& r, float x, float z) {
  const float top = r.uniform(2.2f, 2.9f);
  add_pole(sc, x, z, top + 0.05f, 0.07f);
  const int count = r.chance(0.3f) ? 2 : 1;
  float y = top;
  for (int i = 0; i < count; ++i) {
    const int type = r.integer(0, 5);
    const float size = r.uniform(0.55f, 0.75f);
    Prim s = make_prim(kAxisZ, 0, z - 0.05f, x - 0.5f * size, x + 0.5f * size, y - size, y, kTrafficSign, kPaintSign,
                       V3{0.9f, 0.9f, 0.9f});
    s.shape = (type == 0 || type == 1) ? kShapeEllipse
                                       : (type == 2 ? kShapeTriangleUp
                                                    : (type == 3 ? kShapeRect : (type == 4 ? kShapeDiamond : kShapeTriangleDown)));
    s.pp[0] = static_cast<float>(type);
    sc.statics.push_back(s);
    y -= size + 0.1f;
  }
}

void add_static_object(Scene& sc, Rng& r, float sign, float x, float z) {
  const int kind = r.integer(0, 3);
  auto box = [&](float w, float h, float d, V3 colour, uint8_t paint) {
    const float x0 = x - 0.5f * w, x1 = x + 0.5f * w, z0 = z - 0.5f * d, z1 = z + 0.5f * d;
    sc.statics.push_back(make_prim(kAxisZ, -1, z0, x0, x1, 0.0f, h, kStatic, paint, colour));
    sc.statics.push_back(make_prim(kAxisX, static_cast<int8_t>(-sign), sign > 0 ? x0 : x1, z0, z1, 0.0f, h, kStatic,
                                   paint, colour * 0.9f));
    sc.statics.push_back(make_prim(kAxisY, 1, h, x0, x1, z0, z1, kStatic, paint, colour * 1.1f));
    sc.static_decals.push_back(Decal{x0 - 0.1f, x1 + 0.1f, z0 - 0.1f, z1 + 0.1f, 0.4f, false});
  };
  if (kind == 0) {  // litter bin
    box(0.5f, 0.9f, 0.5f, r.jitter(r.chance(0.5f) ? V3{0.20f, 0.30f, 0.22f} : V3{0.85f, 0.45f, 0.10f}, 0.1f), kPaintFlat);
  } else if (kind == 1) {  // electrical cabinet
    box(0.8f, 1.25f, 0.4f, r.jitter(V3{0.55f, 0.58f, 0.55f}, 0.1f), kPaintFlat);
  } else if (kind == 2) {  // bench along the street
    box(0.55f, 0.45f, 1.7f, r.jitter(V3{0.40f, 0.30f, 0.20f}, 0.15f), kPaintFlat);
  } else {  // advertising column
    Prim c = make_prim(kAxisZ, 0, z, x - 0.6f, x + 0.6f, 0.0f, 3.0f, kStatic, kPaintPoster, V3{0.3f, 0.4f, 0.3f});
    c.shape = kShapeRoundTop;
    c.seed = r.bits();
    sc.statics.push_back(c);
    sc.static_decals.push_back(Decal{x - 0.7f, x + 0.7f, z - 0.7f, z + 0.7f, 0.4f, true});
  }
}

void make_furniture(Scene& sc, Rng& r) {
  const float kFurnitureEnd = 260.0f;
  for (Side& sd : sc.side) {
    const float curb = sc.road_half + sd.park;
    if (r.chance(0.45f + 0.4f * (1.0f - sc.urban))) {  // a row of trees along the curb
      const float x = sd.sign * (curb + (sd.verge > 0.0f ? 0.5f * sd.verge : 0.7f));
      const float spacing = r.uniform(8.0f, 14.0f);
      for (float z = kStreetBegin + r.uniform(0.0f, spacing); z < kFurnitureEnd; z += spacing * r.uniform(0.85f, 1.15f))
        if (!crossing_at(sc, z, 3.0f) && !near_zebra(sc, z, 3.0f)) add_tree(sc, r, x, z, r.uniform(0.8f, 1.25f));
    }
    if (r.chance(0.7f)) {  // street lamps: a pole with an arm over the road
      const float x = sd.sign * (curb + sd.verge + 0.35f);
      const float spacing = r.uniform(25.0f, 40.0f);
      const float height = r.uniform(6.5f, 9.0f);
      for (float z = kStreetBegin + r.uniform(0.0f, spacing); z < kFurnitureEnd; z += spacing) {
        if (crossing_at(sc, z, 2.0f)) continue;
        add_pole(sc, x, z, height, 0.16f);
        const float xe = x - sd.sign * 1.6f;
        Prim arm = make_prim(kAxisZ, 0, z, std::min(x, xe), std::max(x, xe), height - 0.12f, height, kPole, kPaintMetal,
                             V3{0.45f, 0.46f, 0.47f});
        arm.flags = kFlagMinHeight;
        sc.statics.push_back(arm);
        Prim head = make_prim(kAxisZ, 0, z - 0.02f, xe - 0.3f, xe + 0.3f, height - 0.3f, height - 0.05f, kPole, kPaintLamp,
                              V3{0.35f, 0.36f, 0.37f});
        sc.statics.push_back(head);
      }
    }
    const int signs = r.integer(1, 4);
    for (int i = 0; i < signs; ++i) {
      const float z = r.uniform(-5.0f, 110.0f);
      if (!crossing_at(sc, z, 1.0f)) add_sign(sc, r, sd.sign * (curb + sd.verge + 0.35f), z);
    }
    if (r.chance(0.15f)) {  // a railing between sidewalk and road
      const float z0 = r.uniform(0.0f, 60.0f);
      const float z1 = z0 + r.uniform(10.0f, 30.0f);
      if (!crossing_at(sc, z0, 1.0f) && !crossing_at(sc, z1, 1.0f))
        add_barrier(sc, r, sd.sign, curb + sd.verge + 0.15f, z0, z1, 1.0f, 1);
    }
    const int objects = r.integer(1, 4);
    for (int i = 0; i < objects; ++i) {
      const float z = r.uniform(-5.0f, 120.0f);
      if (crossing_at(sc, z, 1.5f)) continue;
      const float x = sd.sign * (r.chance(0.5f) ? sd.lot_x - r.uniform(0.5f, 1.0f) : curb + sd.verge + r.uniform(0.5f, 1.0f));
      add_static_object(sc, r, sd.sign, x, z);
    }
  }
  // Traffic lights at the crossings and the zebras.
  for (const Crossing& c : sc.crossings) {
    const int lit = r.integer(0, 2);
    for (const Side& sd : sc.side) {
      const float x = sd.sign * (sc.road_half + sd.park + sd.verge + 0.5f);
      add_traffic_light(sc, r, x, c.z0 - 0.6f, true, lit, sd.sign > 0 && r.chance(0.5f));
      add_traffic_light(sc, r, x, c.z1 + 0.6f, false, lit, false);
      if (r.chance(0.5f)) add_sign(sc, r, sd.sign * (sd.lot_x + 0.3f), c.z0 - 2.0f);
    }
  }
  for (size_t i = 0; i < sc.zebras.size(); ++i) {
    const Zebra& zb = sc.zebras[i];
    if (crossing_at(sc, 0.5f * (zb.z0 + zb.z1))) continue;
    const int lit = r.integer(0, 2);
    for (const Side& sd : sc.side)
      add_traffic_light(sc, r, sd.sign * (sc.road_half + sd.park + sd.verge + 0.5f), zb.z0 - 0.8f, true, lit, false);
  }
}

// --- Traffic: moving lanes, parked vehicles, cross-street queues, two-wheelers

Vehicle make_vehicle(Rng& r, VehicleKind kind) {
  Vehicle v;
  v.kind = kind;
  v.seed = r.bits();
  v.colour = r.jitter(r.pick(kCarColours), 0.08f);
  v.colour2 = r.jitter(r.chance(0.6f) ? V3{0.88f, 0.88f, 0.86f} : r.pick(kCarColours), 0.08f);
  switch (kind) {
    case VehicleKind::Car:
      v.length = r.uniform(3.9f, 4.9f);
      v.width = r.uniform(1.72f, 1.9f);
      v.height = r.chance(0.2f) ? r.uniform(1.65f, 1.8f) : r.uniform(1.42f, 1.6f);
      break;
    case VehicleKind::Van:
      v.length = r.uniform(4.8f, 5.6f);
      v.width = 1.95f;
      v.height = r.uniform(1.9f, 2.3f);
      break;
    case VehicleKind::Truck:
      v.length = r.uniform(7.0f, 10.0f);
      v.width = 2.45f;
      v.height = r.uniform(3.0f, 3.6f);
      break;
    case VehicleKind::Bus: {
      constexpr std::array<V3, 5> kBusColours = {{{0.90f, 0.80f, 0.25f}, {0.88f, 0.87f, 0.82f}, {0.70f, 0.12f, 0.10f},
                                                  {0.15f, 0.30f, 0.60f}, {0.20f, 0.50f, 0.30f}}};
      v.colour = r.jitter(r.pick(kBusColours), 0.06f);
      v.length = r.chance(0.3f) ? 18.0f : 12.0f;
      v.width = 2.55f;
      v.height = 3.1f;
      break;
    }
    case VehicleKind::Tram: {
      constexpr std::array<V3, 4> kTramColours = {
          {{0.85f, 0.15f, 0.12f}, {0.92f, 0.85f, 0.30f}, {0.20f, 0.35f, 0.65f}, {0.88f, 0.88f, 0.86f}}};
      v.colour = r.jitter(r.pick(kTramColours), 0.06f);
      v.length = r.uniform(25.0f, 32.0f);
      v.width = 2.4f;
      v.height = 3.4f;
      break;
    }
    case VehicleKind::Motorcycle:
      v.length = 2.1f;
      v.width = 0.8f;
      v.height = 1.2f;
      break;
    case VehicleKind::Bicycle:
      v.colour = r.jitter(r.pick(kClothColours), 0.1f);
      v.length = 1.75f;
      v.width = 0.6f;
      v.height = 1.1f;
      break;
  }
  v.rider = random_look(r);
  v.phase = r.uniform(0.0f, 2.0f * kPi);
  return v;
}

VehicleKind draw_lane_kind(Rng& r) {
  const float d = r.uniform();
  if (d < 0.84f) return VehicleKind::Car;
  if (d < 0.92f) return VehicleKind::Van;
  if (d < 0.95f) return VehicleKind::Truck;
  if (d < 0.97f) return VehicleKind::Bus;
  return VehicleKind::Motorcycle;
}

void make_traffic(Scene& sc, Rng& r) {
  const float s_first = frame_time(0), s_last = frame_time(kSnippetLength - 1);
  const float density = r.uniform(0.1f, 0.8f);
  // Lane speeds: every vehicle of a lane keeps its lane's speed, so none runs into another.
  std::vector<float> lane_speed(static_cast<size_t>(sc.lanes));
  for (int lane = 0; lane < sc.lanes; ++lane) {
    const bool oncoming = lane < sc.lanes_left;
    lane_speed[static_cast<size_t>(lane)] =
        oncoming ? r.uniform(6.0f, 13.0f)
                 : (lane == sc.cam_lane ? sc.v_ego * r.uniform(0.85f, 1.1f) : sc.v_ego * r.uniform(0.6f, 1.3f));
  }
  auto lane_dir = [&](int lane) { return lane < sc.lanes_left ? -1.0f : 1.0f; };
  // A vehicle in the camera's lane must stay ahead of the camera through the whole snippet.
  auto clear_of_camera = [&](int lane, float centre, float length) {
    if (lane != sc.cam_lane) return true;
    const float v = lane_speed[static_cast<size_t>(lane)];
    for (float s : {s_first, s_last})
      if (centre + v * s - sc.v_ego * s - 0.5f * length < 10.0f) return false;
    return true;
  };
  std::vector<std::vector<Vehicle>> lanes(static_cast<size_t>(sc.lanes));
  auto place = [&](int lane, Vehicle v, float centre) {
    v.x = lane_centre(sc, lane) + r.uniform(-0.2f, 0.2f);
    v.z = centre;
    v.dir = lane_dir(lane);
    v.speed = lane_speed[static_cast<size_t>(lane)];
    lanes[static_cast<size_t>(lane)].push_back(v);
  };
  // The rarer classes first, where the annotated frame sees them.
  const int other_lane = sc.lanes_left > 0 && sc.cam_lane != sc.lanes - 1 ? sc.lanes - 1 : sc.lanes_left > 0 ? 0 : sc.cam_lane;
  if (sc.rails && r.chance(0.75f)) {
    Vehicle tram = make_vehicle(r, VehicleKind::Tram);
    lane_speed[0] = r.uniform(5.0f, 10.0f);
    place(0, tram, r.uniform(25.0f, 80.0f));
  }
  if (r.chance(0.3f)) {
    const int lane = sc.rails ? (sc.lanes > 2 ? sc.lanes - 1 : sc.cam_lane) : r.integer(0, sc.lanes - 1);
    Vehicle bus = make_vehicle(r, VehicleKind::Bus);
    const float centre = r.uniform(18.0f, 60.0f) + 0.5f * bus.length;
    if (clear_of_camera(lane, centre, bus.length)) place(lane, bus, centre);
  }
  bool truck_parked = false;
  if (r.chance(0.35f)) {
    Vehicle truck = make_vehicle(r, VehicleKind::Truck);
    const int lane = sc.rails && other_lane == 0 ? sc.cam_lane : other_lane;
    const float centre = r.uniform(15.0f, 55.0f) + 0.5f * truck.length;
    if ((sc.side[1].park > 0.0f && r.chance(0.4f)) || !clear_of_camera(lane, centre, truck.length)) {
      truck_parked = true;
    } else {
      place(lane, truck, centre);
    }
  }
  // Fill the lanes around them.
  for (int lane = 0; lane < sc.lanes; ++lane) {
    if (sc.rails && lane == 0) continue;  // the tram's lane
    std::vector<Vehicle>& list = lanes[static_cast<size_t>(lane)];
    const std::vector<Vehicle> reserved = list;
    float z = kStreetBegin + r.uniform(0.0f, 20.0f);
    while (z < 200.0f) {
      Vehicle v = make_vehicle(r, draw_lane_kind(r));
      const float centre = z + r.uniform(6.0f, 14.0f) + (1.0f - density) * r.uniform(0.0f, 60.0f) + 0.5f * v.length;
      bool overlaps = false;
      for (const Vehicle& o : reserved)
        if (std::abs(o.z - centre) < 0.5f * (o.length + v.length) + 3.0f) overlaps = true;
      if (!overlaps && clear_of_camera(lane, centre, v.length)) place(lane, v, centre);
      z = centre + 0.5f * v.length;
    }
  }
  for (const std::vector<Vehicle>& list : lanes) sc.vehicles.insert(sc.vehicles.end(), list.begin(), list.end());
  // Parked along the parking strips, in the driving direction of their side.
  for (const Side& sd : sc.side) {
    if (sd.park <= 0.0f) continue;
    const float x = sd.sign * (sc.road_half + 0.5f * sd.park);
    bool need_truck = truck_parked && sd.sign > 0;
    float z = kStreetBegin + r.uniform(0.0f, 5.0f);
    while (z < 200.0f) {
      VehicleKind kind = VehicleKind::Car;
      const float d = r.uniform();
      if (need_truck && z > 12.0f) {
        kind = VehicleKind::Truck;
      } else if (d < 0.08f) {
        kind = VehicleKind::Van;
      } else if (d < 0.12f) {
        kind = VehicleKind::Motorcycle;
      }
      Vehicle v = make_vehicle(r, kind);
      const float centre = z + r.uniform(0.6f, 2.5f) + 0.5f * v.length;
      z = centre + 0.5f * v.length;
      if (crossing_at(sc, centre, 0.5f * v.length + 5.0f) || near_zebra(sc, centre, 0.5f * v.length + 4.0f)) continue;
      if (kind != VehicleKind::Truck && r.chance(0.35f)) continue;  // an empty bay
      if (kind == VehicleKind::Truck) need_truck = false;
      v.x = x + (kind == VehicleKind::Motorcycle ? sd.sign * 0.4f : 0.0f);
      v.z = centre;
      v.dir = sd.sign > 0 ? 1.0f : -1.0f;
      v.speed = 0.0f;
      sc.vehicles.push_back(v);
    }
  }
  // Cars queued in the cross streets, seen from the side.
  for (const Crossing& c : sc.crossings) {
    if (c.z0 > 100.0f) continue;
    for (const Side& sd : sc.side) {
      if (!r.chance(0.6f)) continue;
      const int n = r.integer(1, 3);
      const float dir = -sd.sign;  // towards the main road
      const float mid = 0.5f * (c.z0 + c.z1), lane_w = 0.5f * (c.z1 - c.z0 - 2.0f * c.walk);
      const float z = mid + (dir < 0 ? 0.5f : -0.5f) * lane_w;
      float x = sc.road_half + sd.park + sd.verge + r.uniform(2.0f, 4.0f);
      for (int i = 0; i < n; ++i) {
        Vehicle v = make_vehicle(r, r.chance(0.85f) ? VehicleKind::Car : VehicleKind::Van);
        v.axis = kAxisX;
        v.dir = dir;
        v.x = sd.sign * (x + 0.5f * v.length);
        v.z = z;
        v.speed = 0.0f;
        sc.vehicles.push_back(v);
        x += v.length + r.uniform(1.0f, 3.0f);
      }
    }
  }
  // Two-wheelers: cyclists at the road edge, a motorcycle, parked bicycles.
  if (r.chance(0.6f)) {
    const int n = r.integer(1, 2);
    for (int i = 0; i < n; ++i) {
      Vehicle b = make_vehicle(r, VehicleKind::Bicycle);
      b.ridden = true;
      const bool oncoming = r.chance(0.3f);
      b.dir = oncoming ? -1.0f : 1.0f;
      b.x = oncoming ? -sc.road_half + 0.9f : sc.road_half - 0.9f;
      b.z = r.uniform(12.0f, 45.0f);
      b.speed = r.uniform(3.5f, 6.5f);
      sc.vehicles.push_back(b);
    }
  }
  if (r.chance(0.45f)) {
    Vehicle m = make_vehicle(r, VehicleKind::Motorcycle);
    const bool moving = r.chance(0.6f) || sc.side[1].park <= 0.0f;
    if (moving) {
      const int lane = r.integer(0, sc.lanes - 1);
      m.ridden = true;
      m.x = lane_centre(sc, lane) + r.uniform(-0.6f, 0.6f);
      m.dir = lane_dir(lane);
      m.speed = lane < sc.lanes_left ? r.uniform(7.0f, 13.0f) : sc.v_ego * r.uniform(0.9f, 1.3f);
      m.z = r.uniform(14.0f, 45.0f);
      if (lane == sc.cam_lane) m.z += 10.0f;
    } else {
      m.x = sc.road_half + 0.5f * sc.side[1].park;
      m.z = r.uniform(10.0f, 40.0f);
    }
    sc.vehicles.push_back(m);
  }
  if (r.chance(0.5f)) {  // a bicycle rack on the sidewalk
    const Side& sd = sc.side[static_cast<size_t>(r.integer(0, 1))];
    const float z = r.uniform(10.0f, 60.0f);
    const int n = r.integer(1, 4);
    for (int i = 0; i < n; ++i) {
      Vehicle b = make_vehicle(r, VehicleKind::Bicycle);
      b.axis = kAxisX;
      b.dir = r.sign();
      b.x = sd.sign * (sd.lot_x - 1.2f);
      b.z = z + 0.7f * static_cast<float>(i);
      sc.vehicles.push_back(b);
    }
  }
}

void make_people(Scene& sc, Rng& r) {
  auto walk_x = [&](const Side& sd) {
    return sd.sign * (sc.road_half + sd.park + sd.verge + r.uniform(0.5f, std::max(0.6f, sd.walk - 0.5f)));
  };
  const int n = r.integer(2, 5 + static_cast<int>(9.0f * sc.urban));
  for (int i = 0; i < n; ++i) {
    const Side& sd = sc.side[static_cast<size_t>(r.integer(0, 1))];
    Walker w;
    w.x = walk_x(sd);
    w.z = r.uniform(10.0f, 80.0f);
    if (!r.chance(0.25f)) w.vz = r.sign() * r.uniform(0.9f, 1.6f);
    w.phase = r.uniform(0.0f, 2.0f * kPi);
    w.look = random_look(r);
    sc.walkers.push_back(w);
    if (r.chance(0.3f)) {  // a companion
      Walker c = w;
      c.x += (std::abs(w.x) > sc.road_half + sd.park + sd.verge + 1.0f ? -0.6f : 0.6f) * sd.sign;
      c.z += r.uniform(-0.3f, 0.3f);
      c.phase += r.uniform(0.5f, 2.5f);
      c.look = random_look(r);
      sc.walkers.push_back(c);
    }
  }
  for (const Crossing& c : sc.crossings) {  // walking along the cross streets' sidewalks
    if (c.z0 > 100.0f) continue;
    for (const Side& sd : sc.side) {
      if (!r.chance(0.5f)) continue;
      Walker w;
      w.x = sd.sign * (sd.lot_x + r.uniform(1.0f, 10.0f));
      w.z = r.chance(0.5f) ? c.z0 + 0.5f * c.walk : c.z1 - 0.5f * c.walk;
      w.vx = r.sign() * r.uniform(0.9f, 1.5f);
      w.phase = r.uniform(0.0f, 2.0f * kPi);
      w.look = random_look(r);
      sc.walkers.push_back(w);
    }
  }
  for (const Zebra& zb : sc.zebras) {  // waiting at the curb
    if (zb.z0 > 100.0f || !r.chance(0.5f)) continue;
    const Side& sd = sc.side[static_cast<size_t>(r.integer(0, 1))];
    const int k = r.integer(1, 2);
    for (int i = 0; i < k; ++i) {
      Walker w;
      w.x = sd.sign * (sc.road_half + sd.park + sd.verge + 0.4f + 0.6f * static_cast<float>(i));
      w.z = r.uniform(zb.z0, zb.z1);
      w.look = random_look(r);
      sc.walkers.push_back(w);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Frames: the camera and the prims at time s

struct Camera {
  V3 pos, fwd, right;
  float f = 1, ppx = 0, ppy = 0;
  int width = 0, height = 0;
};

Camera camera_at(const Scene& sc, float s) {
  Camera c;
  c.pos = V3{sc.cam_x, sc.cam_h, sc.v_ego * s};
  const float yaw = sc.yaw0 + sc.yaw_rate * s;
  c.fwd = V3{std::sin(yaw), 0.0f, std::cos(yaw)};
  c.right = V3{std::cos(yaw), 0.0f, -std::sin(yaw)};
  c.f = sc.f;
  c.ppx = sc.ppx;
  c.ppy = sc.ppy;
  c.width = sc.width;
  c.height = sc.height;
  return c;
}

struct FrameScene {
  Camera cam;
  std::vector<Prim> prims;
  std::vector<Decal> decals;
};

// Pose of a vehicle: where its local axes (longitudinal l along the heading, lateral a) lie in the world.
struct VehiclePose {
  uint8_t axis = kAxisZ, lat_axis = kAxisX;
  float dir = 1, lon = 0, lat = 0;
  float wl(float l) const { return lon + dir * l; }
  float wa(float a) const { return lat + a; }
  void box(float a0, float a1, float y0, float y1, float l0, float l1, V3& lo, V3& hi) const {
    const float la = std::min(wl(l0), wl(l1)), lb = std::max(wl(l0), wl(l1));
    if (axis == kAxisZ) {
      lo = V3{lat + a0, y0, la};
      hi = V3{lat + a1, y1, lb};
    } else {
      lo = V3{la, y0, lat + a0};
      hi = V3{lb, y1, lat + a1};
    }
  }
};

enum BoxFaces : int { kFaceSides = 1, kFaceFront = 2, kFaceRear = 4, kFaceTop = 8, kFaceAll = 15 };

// The vertical faces and the top of the box lo..hi; each face's paint parameters carry its role
// (side, front, rear, top), the heading (pp[1]) and `pp2`.
void add_box(std::vector<Prim>& out, V3 lo, V3 hi, uint8_t label, uint8_t paint, V3 albedo, const VehiclePose& ps,
             uint32_t seed, V3 origin, int faces = kFaceAll, float pp2 = 0.0f) {
  auto push = [&](Prim p) {
    const int role = p.axis == kAxisY ? kRoleTop
                                      : (p.axis == ps.axis ? ((p.facing > 0) == (ps.dir > 0) ? kRoleFront : kRoleRear)
                                                           : kRoleSide);
    const int bit = role == kRoleTop ? kFaceTop : role == kRoleFront ? kFaceFront : role == kRoleRear ? kFaceRear : kFaceSides;
    if (!(faces & bit)) return;
    p.pp[0] = static_cast<float>(role);
    p.pp[1] = ps.dir;
    p.pp[2] = pp2;
    p.seed = seed;
    p.origin = origin;
    out.push_back(p);
  };
  push(make_prim(kAxisX, -1, lo.x, lo.z, hi.z, lo.y, hi.y, label, paint, albedo));
  push(make_prim(kAxisX, 1, hi.x, lo.z, hi.z, lo.y, hi.y, label, paint, albedo));
  push(make_prim(kAxisZ, -1, lo.z, lo.x, hi.x, lo.y, hi.y, label, paint, albedo));
  push(make_prim(kAxisZ, 1, hi.z, lo.x, hi.x, lo.y, hi.y, label, paint, albedo));
  push(make_prim(kAxisY, 1, hi.y, lo.x, hi.x, lo.z, hi.z, label, paint, albedo));
}

// A wheel on each side at longitudinal position l, and the tyres' rectangles seen from front or rear.
void add_wheels(std::vector<Prim>& out, const VehiclePose& ps, float l, float half_width, float radius, uint8_t label,
                V3 origin) {
  const V3 tyre{0.05f, 0.05f, 0.055f};
  for (float a : {-1.0f, 1.0f}) {
    Prim w = make_prim(ps.lat_axis, static_cast<int8_t>(a), ps.wa(a * (half_width + 0.01f)), ps.wl(l) - radius,
                       ps.wl(l) + radius, 0.0f, 2.0f * radius, label, kPaintTire, tyre);
    w.shape = kShapeEllipse;
    w.origin = origin;
    out.push_back(w);
    Prim t = make_prim(ps.axis, 0, ps.wl(l), ps.wa(a * (half_width - 0.32f)), ps.wa(a * (half_width - 0.04f)), 0.0f,
                       std::min(0.34f, radius), label, kPaintFlat, tyre);
    t.origin = origin;
    out.push_back(t);
  }
}

enum class PersonPose { Walk, RideBicycle, RideMotorcycle };

// A person drawn with capsules and ellipses in the plane `plane` = c, centred at u, feet at y0.
// side: seen from the side facing dir (+u or -u); else from the front, or the back when `away`.
void add_person(std::vector<Prim>& out, const PersonLook& lk, uint8_t label, uint8_t plane, float c, float u, float y0,
                float dir, bool side, bool away, float phase, float stride, PersonPose pose, V3 origin) {
  const float H = lk.height;
  auto limb = [&](float au, float av, float bu, float bv, float radius, V3 colour, float bias) {
    Prim p = make_segment(plane, c, au, av, bu, bv, radius, label, colour);
    p.bias = bias;
    p.origin = origin;
    p.flags = kFlagMinWidth;
    out.push_back(p);
  };
  auto ellipse = [&](float cu, float cv, float ru, float rv, V3 colour, float bias) {
    Prim p = make_prim(plane, 0, c, cu - ru, cu + ru, cv - rv, cv + rv, label, kPaintFlat, colour);
    p.shape = kShapeEllipse;
    p.bias = bias;
    p.origin = origin;
    out.push_back(p);
  };
  const bool riding = pose != PersonPose::Walk;
  const float hip_y = riding ? y0 + (pose == PersonPose::RideBicycle ? 0.95f : 0.85f) : y0 + 0.50f * H;
  const float shoulder_y = hip_y + 0.30f * H;
  const float lean = riding && side ? dir * 0.12f * H : 0.0f;  // riders lean forward over the handlebar
  const float head_y = shoulder_y + 0.11f * H;
  if (!side) {
    for (float k : {-1.0f, 1.0f}) {
      const float ph = phase + (k > 0 ? 0.0f : kPi);
      if (!riding) {
        const float lift = stride * 0.05f * H * std::max(0.0f, std::sin(ph));
        limb(u + k * 0.05f * H, hip_y, u + k * 0.055f * H, y0 + 0.04f * H + lift, 0.034f * H, lk.legs, 0.0f);
        limb(u + k * 0.055f * H, y0 + 0.025f * H + lift, u + k * 0.06f * H, y0 + 0.02f * H + lift, 0.028f * H, lk.shoes, 0.004f);
      } else {
        const float foot_y = pose == PersonPose::RideBicycle ? y0 + 0.3f + 0.13f * std::sin(ph) : y0 + 0.38f;
        const float knee_y = 0.5f * (hip_y + foot_y) + 0.05f * H;
        limb(u + k * 0.06f * H, hip_y, u + k * 0.1f * H, knee_y, 0.04f * H, lk.legs, -0.01f);
        limb(u + k * 0.1f * H, knee_y, u + k * 0.08f * H, foot_y, 0.035f * H, lk.legs, -0.01f);
      }
      const float hand_y = riding ? hip_y + 0.08f * H : y0 + 0.48f * H + 0.015f * H * std::sin(ph) * stride;
      const float hand_u = u + k * (riding ? 0.2f * H : 0.15f * H);
      limb(u + k * 0.12f * H, shoulder_y - 0.03f * H, hand_u, hand_y, 0.03f * H, lk.top, 0.01f);
      ellipse(hand_u, hand_y - 0.01f * H, 0.025f * H, 0.03f * H, lk.skin, 0.012f);
    }
    limb(u - 0.045f * H, hip_y + 0.03f * H, u + 0.045f * H, hip_y + 0.03f * H, 0.05f * H, lk.legs, 0.002f);
    limb(u, hip_y + 0.09f * H, u, shoulder_y - 0.04f * H, 0.1f * H, lk.top, 0.005f);
    limb(u, shoulder_y - 0.03f * H, u, shoulder_y + 0.04f * H, 0.03f * H, lk.skin, 0.003f);
    ellipse(u, head_y, 0.06f * H, 0.072f * H, lk.skin, 0.006f);
    if (away) {
      ellipse(u, head_y + 0.004f * H, 0.064f * H, 0.076f * H, lk.hair, 0.008f);
      if (lk.long_hair) limb(u, head_y, u, head_y - 0.12f * H, 0.055f * H, lk.hair, 0.009f);
    } else {
      ellipse(u, head_y + 0.03f * H, 0.062f * H, 0.048f * H, lk.hair, 0.008f);
    }
    if (pose == PersonPose::RideMotorcycle)  // a helmet
      ellipse(u, head_y + 0.01f * H, 0.075f * H, 0.085f * H, lk.top * 0.6f, 0.01f);
  } else {
    const float hip_u = u;
    const float shoulder_u = u + lean;
    if (!riding) {
      for (float k : {-1.0f, 1.0f}) {
        const float swing = k * stride * 0.13f * H * std::sin(phase);
        limb(hip_u, hip_y, hip_u + dir * swing, y0 + 0.04f * H, 0.042f * H, lk.legs, k * 0.004f);
        limb(hip_u + dir * swing, y0 + 0.025f * H, hip_u + dir * (swing + 0.05f * H), y0 + 0.025f * H, 0.025f * H, lk.shoes,
            k * 0.004f + 0.001f);
        const float hand = -k * stride * 0.09f * H * std::sin(phase);
        limb(shoulder_u, shoulder_y - 0.04f * H, shoulder_u + dir * hand, y0 + 0.47f * H, 0.03f * H, lk.top, k * 0.012f);
      }
    } else {
      // Pedals circle around the bottom bracket just ahead of the hips; hands on the handlebar.
      for (float k : {-1.0f, 1.0f}) {
        const float ph = phase + (k > 0 ? 0.0f : kPi);
        const float pedal_r = pose == PersonPose::RideBicycle ? 0.17f : 0.0f;
        const float foot_u = u + dir * (0.15f + pedal_r * std::cos(ph));
        const float foot_y = y0 + (pose == PersonPose::RideBicycle ? 0.3f : 0.38f) + pedal_r * std::sin(ph);
        const float knee_u = 0.5f * (hip_u + foot_u) + dir * 0.14f * H;
        const float knee_y = 0.5f * (hip_y + foot_y) + 0.06f * H;
        limb(hip_u, hip_y, knee_u, knee_y, 0.045f * H, lk.legs, k * 0.004f);
        limb(knee_u, knee_y, foot_u, foot_y, 0.038f * H, lk.legs, k * 0.004f);
      }
      limb(shoulder_u, shoulder_y - 0.03f * H, u + dir * 0.55f, y0 + (pose == PersonPose::RideBicycle ? 1.0f : 1.05f), 0.03f * H,
          lk.top, 0.012f);
    }
    limb(hip_u, hip_y + 0.04f * H, shoulder_u, shoulder_y - 0.04f * H, 0.075f * H, lk.top, 0.006f);
    const float head_u = shoulder_u + dir * 0.02f * H;
    ellipse(head_u, head_y, 0.065f * H, 0.072f * H, lk.skin, 0.006f);
    ellipse(head_u - dir * 0.012f * H, head_y + 0.02f * H, 0.062f * H, 0.056f * H,
            pose == PersonPose::RideMotorcycle ? lk.top * 0.6f : lk.hair, 0.008f);
  }
}

void add_walker(const Scene& sc, const Walker& w, float s, FrameScene& fs) {
  const float x = w.x + w.vx * s, z = w.z + w.vz * s;
  const float speed = std::sqrt(w.vx * w.vx + w.vz * w.vz);
  const bool side = std::abs(w.vx) > std::abs(w.vz);
  // Gait: about 1.8 steps per second at 1.3 m/s, proportional to the speed.
  const float phase = w.phase + s * 2.0f * kPi * 0.7f * speed;
  const float stride = std::min(1.0f, speed / 1.3f);
  add_person(fs.prims, w.look, kPerson, kAxisZ, z, x, 0.0f, w.vx >= 0.0f ? 1.0f : -1.0f, side, w.vz > 0.0f, phase,
             stride, PersonPose::Walk, V3{x, 0.0f, z});
  const float r = 0.25f;
  add_shadow(fs.decals, sc.light, x - r, x + r, z - r, z + r, w.look.height, 0.35f, true);
}

void add_two_wheeler(const Scene& sc, const Vehicle& v, const VehiclePose& ps, float s, V3 origin, FrameScene& fs) {
  const bool bike = v.kind == VehicleKind::Bicycle;
  const uint8_t label = bike ? kBicycle : kMotorcycle;
  const uint8_t plane = ps.lat_axis;  // the side view lies in the plane across the lateral axis
  const float c = ps.lat;
  auto limb = [&](float l0, float y0, float l1, float y1, float radius, V3 colour, float bias) {
    Prim p = make_segment(plane, c, ps.wl(l0), y0, ps.wl(l1), y1, radius, label, colour);
    p.bias = bias;
    p.origin = origin;
    p.flags = kFlagMinWidth;
    fs.prims.push_back(p);
  };
  auto disc = [&](float l, float y, float radius, Shape shape, V3 colour, float bias) {
    Prim p = make_prim(plane, 0, c, ps.wl(l) - radius, ps.wl(l) + radius, y - radius, y + radius, label, kPaintFlat, colour);
    p.shape = shape;
    p.sp[0] = 0.8f;
    p.bias = bias;
    p.origin = origin;
    fs.prims.push_back(p);
  };
  const V3 tyre{0.06f, 0.06f, 0.065f};
  if (bike) {
    const float r = 0.34f;
    disc(-0.52f, r, r, kShapeRing, tyre, 0.0f);
    disc(0.52f, r, r, kShapeRing, tyre, 0.0f);
    const float fr = 0.022f;
    limb(-0.52f, r, -0.18f, 0.86f, fr, v.colour, 0.01f);
    limb(-0.18f, 0.86f, -0.02f, 0.3f, fr, v.colour, 0.01f);
    limb(-0.02f, 0.3f, -0.52f, r, fr, v.colour, 0.01f);
    limb(-0.02f, 0.3f, 0.4f, 0.78f, fr * 1.2f, v.colour, 0.01f);
    limb(-0.18f, 0.86f, 0.42f, 0.88f, fr, v.colour, 0.01f);
    limb(0.42f, 0.88f, 0.52f, r, fr, v.colour, 0.01f);
    limb(-0.28f, 0.93f, -0.1f, 0.93f, 0.035f, V3{0.08f, 0.08f, 0.08f}, 0.012f);
    limb(0.42f, 0.88f, 0.38f, 1.02f, fr, V3{0.3f, 0.3f, 0.3f}, 0.01f);
  } else {
    const float r = 0.32f;
    disc(-0.7f, r, r, kShapeEllipse, tyre, 0.0f);
    disc(0.7f, r, r, kShapeEllipse, tyre, 0.0f);
    disc(-0.7f, r, r * 0.55f, kShapeEllipse, V3{0.4f, 0.4f, 0.42f}, 0.01f);
    disc(0.7f, r, r * 0.55f, kShapeEllipse, V3{0.4f, 0.4f, 0.42f}, 0.01f);
    limb(-0.55f, 0.72f, 0.35f, 0.8f, 0.2f, v.colour, 0.015f);
    Prim engine = make_prim(plane, 0, c, std::min(ps.wl(-0.25f), ps.wl(0.25f)), std::max(ps.wl(-0.25f), ps.wl(0.25f)),
                            0.25f, 0.6f, label, kPaintFlat, V3{0.2f, 0.2f, 0.21f});
    engine.bias = 0.012f;
    engine.origin = origin;
    fs.prims.push_back(engine);
    limb(0.55f, 1.0f, 0.7f, r, 0.04f, V3{0.5f, 0.5f, 0.5f}, 0.011f);
    limb(0.5f, 1.05f, 0.6f, 1.08f, 0.03f, V3{0.1f, 0.1f, 0.1f}, 0.011f);
  }
  if (v.ridden) {
    const float phase = v.phase + s * v.speed * 1.2f;
    const PersonPose pose = bike ? PersonPose::RideBicycle : PersonPose::RideMotorcycle;
    if (ps.axis == kAxisZ) {  // seen from behind or from the front: the rider across the heading
      add_person(fs.prims, v.rider, kRider, kAxisZ, ps.wl(-0.1f) - 0.02f, ps.lat, 0.0f, 1.0f, false, ps.dir > 0, phase, 1.0f,
                 pose, origin);
    } else {
      add_person(fs.prims, v.rider, kRider, plane, c - 0.05f, ps.wl(-0.15f), 0.0f, ps.dir, true, false, phase, 1.0f, pose,
                 origin);
    }
  }
  V3 lo, hi;
  ps.box(-0.3f, 0.3f, 0.0f, 0.0f, -0.5f * v.length, 0.5f * v.length, lo, hi);
  add_shadow(fs.decals, sc.light, lo.x, hi.x, lo.z, hi.z, v.height, 0.4f, true);
}

void add_vehicle(const Scene& sc, const Vehicle& v, float s, FrameScene& fs) {
  VehiclePose ps;
  ps.axis = v.axis;
  ps.lat_axis = v.axis == kAxisZ ? kAxisX : kAxisZ;
  ps.dir = v.dir;
  const float travel = v.speed * v.dir * s;
  ps.lon = (v.axis == kAxisZ ? v.z : v.x) + travel;
  ps.lat = v.axis == kAxisZ ? v.x : v.z;
  const V3 origin = v.axis == kAxisZ ? V3{ps.lat, 0.0f, ps.lon} : V3{ps.lon, 0.0f, ps.lat};
  // Skip what is far behind the camera or beyond the street.
  const float rel = origin.z - fs.cam.pos.z;
  if (rel < -25.0f || rel > kStreetEnd) return;
  if (v.kind == VehicleKind::Bicycle || v.kind == VehicleKind::Motorcycle) {
    add_two_wheeler(sc, v, ps, s, origin, fs);
    return;
  }
  const float L = v.length, W = v.width, H = v.height;
  std::vector<Prim>& out = fs.prims;
  V3 lo, hi;
  if (v.kind == VehicleKind::Car || v.kind == VehicleKind::Van) {
    const bool van = v.kind == VehicleKind::Van;
    const float body_top = van ? 1.05f : std::min(1.0f, 0.64f * H);
    ps.box(-0.5f * W, 0.5f * W, 0.28f, body_top, -0.5f * L, 0.5f * L, lo, hi);
    add_box(out, lo, hi, kCar, kPaintCarBody, v.colour, ps, v.seed, origin);
    // Cabin: sloped windscreen and rear window (trapezoid sides), vertical glass half-way up the slopes.
    const float hatch = static_cast<float>(v.seed % 3) * 0.3f;
    const float rear = van ? -0.5f * L + 0.05f : -0.5f * L + 0.3f + hatch;
    const float front = van ? 0.5f * L - 0.75f : 0.5f * L - 1.05f;
    const float slope_front = van ? 0.45f : 0.75f, slope_rear = van ? 0.0f : 0.45f;
    const float inset = 0.08f;
    ps.box(-0.5f * W + inset, 0.5f * W - inset, body_top, H, rear + 0.5f * slope_rear, front - 0.5f * slope_front, lo, hi);
    add_box(out, lo, hi, kCar, kPaintGlass, v.colour, ps, v.seed, origin, kFaceFront | kFaceRear, van ? 1.0f : 0.0f);
    ps.box(-0.5f * W + inset, 0.5f * W - inset, body_top, H, rear + slope_rear, front - slope_front, lo, hi);
    add_box(out, lo, hi, kCar, kPaintCarBody, v.colour, ps, v.seed, origin, kFaceTop);
    for (float a : {-1.0f, 1.0f}) {
      Prim side = make_prim(ps.lat_axis, static_cast<int8_t>(a), ps.wa(a * (0.5f * W - inset)), ps.wl(rear), ps.wl(front),
                            body_top, H, kCar, kPaintGlass, v.colour);
      side.shape = kShapeTrapezoid;
      side.sp[0] = ps.dir > 0 ? slope_rear : slope_front;  // inset at u0
      side.sp[1] = ps.dir > 0 ? slope_front : slope_rear;  // inset at u1
      side.pp[0] = kRoleSide;
      side.pp[1] = ps.dir;
      side.pp[2] = van ? 1.0f : 0.0f;
      side.seed = v.seed;
      side.origin = origin;
      out.push_back(side);
    }
    const float radius = van ? 0.34f : 0.31f;
    for (float l : {-0.5f * L + 0.8f, 0.5f * L - 0.85f}) add_wheels(out, ps, l, 0.5f * W, radius, kCar, origin);
  } else if (v.kind == VehicleKind::Bus || v.kind == VehicleKind::Tram) {
    const bool tram = v.kind == VehicleKind::Tram;
    const uint8_t label = tram ? kTrain : kBus;
    const float bottom = tram ? 0.4f : 0.3f;
    ps.box(-0.5f * W, 0.5f * W, bottom, H, -0.5f * L, 0.5f * L, lo, hi);
    add_box(out, lo, hi, label, kPaintBusBody, v.colour, ps, v.seed, origin, kFaceAll, tram ? 1.0f : 0.0f);
    if (tram) {
      for (float k : {-1.0f, 1.0f}) {  // pantograph
        Prim p = make_segment(ps.lat_axis, ps.lat, ps.wl(k * 0.8f), H, ps.wl(0.0f), H + 0.9f, 0.03f, label,
                              V3{0.2f, 0.2f, 0.2f});
        p.flags = kFlagMinWidth;
        p.origin = origin;
        out.push_back(p);
      }
      Prim bogie = make_prim(ps.axis, 0, ps.wl(-0.5f * L + 1.5f), ps.wa(-0.5f * W + 0.2f), ps.wa(0.5f * W - 0.2f), 0.0f,
                             bottom, label, kPaintFlat, V3{0.08f, 0.08f, 0.08f});
      bogie.origin = origin;
      out.push_back(bogie);
      bogie.c = ps.wl(0.5f * L - 1.5f);
      out.push_back(bogie);
    } else {
      for (float l : {-0.5f * L + 2.8f, 0.5f * L - 2.6f}) add_wheels(out, ps, l, 0.5f * W, 0.5f, label, origin);
    }
  } else {  // truck: cab, cargo box, chassis
    ps.box(-0.5f * W + 0.05f, 0.5f * W - 0.05f, 0.55f, 2.9f, 0.5f * L - 2.2f, 0.5f * L, lo, hi);
    add_box(out, lo, hi, kTruck, kPaintTruckCab, v.colour, ps, v.seed, origin);
    ps.box(-0.5f * W, 0.5f * W, 0.95f, H, -0.5f * L, 0.5f * L - 2.35f, lo, hi);
    add_box(out, lo, hi, kTruck, kPaintTruckBox, v.colour2, ps, v.seed, origin);
    ps.box(-0.5f * W + 0.3f, 0.5f * W - 0.3f, 0.45f, 0.95f, -0.5f * L + 0.3f, 0.5f * L - 2.2f, lo, hi);
    add_box(out, lo, hi, kTruck, kPaintFlat, V3{0.12f, 0.12f, 0.12f}, ps, v.seed, origin, kFaceAll & ~kFaceTop);
    for (float l : {-0.5f * L + 1.3f, 0.5f * L - 1.1f}) add_wheels(out, ps, l, 0.5f * W - 0.05f, 0.5f, kTruck, origin);
    if (L > 8.5f) add_wheels(out, ps, -0.5f * L + 2.4f, 0.5f * W - 0.05f, 0.5f, kTruck, origin);
  }
  ps.box(-0.5f * W - 0.1f, 0.5f * W + 0.1f, 0.0f, 0.0f, -0.5f * L - 0.1f, 0.5f * L + 0.1f, lo, hi);
  add_shadow(fs.decals, sc.light, lo.x, hi.x, lo.z, hi.z, H, 0.6f, false);
}

// Thin prims are widened to one pixel at their depth, so distant poles do not break into dashes.
void enforce_min_size(Prim& p, const Camera& cam) {
  V3 centre;
  const float cu = 0.5f * (p.u0 + p.u1), cv = 0.5f * (p.v0 + p.v1);
  if (p.axis == kAxisX) centre = V3{p.c, cv, cu};
  else if (p.axis == kAxisY) centre = V3{cu, p.c, cv};
  else centre = V3{cu, cv, p.c};
  const float z = dot(centre - cam.pos, cam.fwd);
  if (z <= kNear) return;
  const float pixel = 1.05f * z / cam.f;
  if (p.shape == kShapeSegment) {
    if (p.sp[4] < 0.5f * pixel) {
      p.sp[4] = 0.5f * pixel;
      p.u0 = std::min(p.sp[0], p.sp[2]) - p.sp[4];
      p.u1 = std::max(p.sp[0], p.sp[2]) + p.sp[4];
      p.v0 = std::min(p.sp[1], p.sp[3]) - p.sp[4];
      p.v1 = std::max(p.sp[1], p.sp[3]) + p.sp[4];
    }
    return;
  }
  if ((p.flags & kFlagMinWidth) && p.u1 - p.u0 < pixel) {
    p.u0 = cu - 0.5f * pixel;
    p.u1 = cu + 0.5f * pixel;
  }
  if ((p.flags & kFlagMinHeight) && p.v1 - p.v0 < pixel) {
    p.v0 = cv - 0.5f * pixel;
    p.v1 = cv + 0.5f * pixel;
  }
}

void build_frame(const Scene& sc, float s, FrameScene& fs) {
  fs.cam = camera_at(sc, s);
  fs.prims = sc.statics;
  fs.decals = sc.static_decals;
  for (const Vehicle& v : sc.vehicles) add_vehicle(sc, v, s, fs);
  for (const Walker& w : sc.walkers) add_walker(sc, w, s, fs);
  for (Prim& p : fs.prims)
    if (p.flags != 0) enforce_min_size(p, fs.cam);
}

Scene make_scene(uint64_t seed, Split split, int index, int width, int height) {
  Scene sc;
  sc.width = width;
  sc.height = height;
  Rng texture(seed, scene_stream(split, index, kStreamTexture));
  sc.tex_seed = texture.bits();
  sc.noise_seed = texture.bits();
  Rng layout(seed, scene_stream(split, index, kStreamLayout));
  make_layout(sc, layout);
  Rng light(seed, scene_stream(split, index, kStreamLight));
  make_lighting(sc, light);
  Rng buildings(seed, scene_stream(split, index, kStreamBuildings));
  make_buildings(sc, buildings);
  Rng furniture(seed, scene_stream(split, index, kStreamFurniture));
  make_furniture(sc, furniture);
  Rng traffic(seed, scene_stream(split, index, kStreamTraffic));
  make_traffic(sc, traffic);
  Rng people(seed, scene_stream(split, index, kStreamPeople));
  make_people(sc, people);
  return sc;
}

// ---------------------------------------------------------------------------------------------
// Rendering

constexpr int32_t kIdSky = -1, kIdGround = -2, kIdHood = -3;

bool inside_shape(const Prim& p, float u, float v) {
  const float cu = 0.5f * (p.u0 + p.u1), cv = 0.5f * (p.v0 + p.v1);
  const float ru = 0.5f * (p.u1 - p.u0), rv = 0.5f * (p.v1 - p.v0);
  switch (p.shape) {
    case kShapeRect:
      return true;
    case kShapeEllipse: {
      const float a = (u - cu) / ru, b = (v - cv) / rv;
      return a * a + b * b <= 1.0f;
    }
    case kShapeRing: {
      const float a = (u - cu) / ru, b = (v - cv) / rv, r2 = a * a + b * b;
      return r2 <= 1.0f && r2 >= p.sp[0] * p.sp[0];
    }
    case kShapeSegment: {
      const float du = p.sp[2] - p.sp[0], dv = p.sp[3] - p.sp[1];
      const float len2 = du * du + dv * dv;
      const float t = len2 > 0.0f ? clamp01(((u - p.sp[0]) * du + (v - p.sp[1]) * dv) / len2) : 0.0f;
      const float eu = u - (p.sp[0] + t * du), ev = v - (p.sp[1] + t * dv);
      return eu * eu + ev * ev <= p.sp[4] * p.sp[4];
    }
    case kShapeTriangleUp:
      return std::abs(u - cu) <= ru * (p.v1 - v) / (p.v1 - p.v0);
    case kShapeTriangleDown:
      return std::abs(u - cu) <= ru * (v - p.v0) / (p.v1 - p.v0);
    case kShapeDiamond:
      return std::abs(u - cu) / ru + std::abs(v - cv) / rv <= 1.0f;
    case kShapeBlob: {
      const float a = (u - cu) / ru, b = (v - cv) / rv, r2 = a * a + b * b;
      if (r2 > 1.0f) return false;
      const float limit = 1.0f - p.sp[1] * value_noise(u * p.sp[0], v * p.sp[0], p.seed);
      return r2 <= limit * limit;
    }
    case kShapeTrapezoid: {
      const float t = (v - p.v0) / (p.v1 - p.v0);
      return u >= p.u0 + p.sp[0] * t && u <= p.u1 - p.sp[1] * t;
    }
    case kShapeRoundTop: {
      if (v <= p.v1 - ru) return true;
      const float a = (u - cu) / ru, b = (v - (p.v1 - ru)) / ru;
      return a * a + b * b <= 1.0f;
    }
  }
  return false;
}

// Per-frame buffers of one worker, reused from frame to frame.
struct RenderWork {
  FrameScene fs;
  std::vector<float> col_dx, col_dz, row_b;  // ray direction per column (x, z) and row (y); forward component 1
  std::vector<float> depth;                  // (h, w) camera depth of the visible surface
  std::vector<int32_t> id;                   // (h, w) prim index or kIdSky / kIdGround / kIdHood
  std::vector<float> shade;                  // (h, w) ground darkening by decals (1: none)
};

void prim_corners(const Prim& p, V3 (&c)[4]) {
  if (p.axis == kAxisX) {
    c[0] = {p.c, p.v0, p.u0}, c[1] = {p.c, p.v0, p.u1}, c[2] = {p.c, p.v1, p.u1}, c[3] = {p.c, p.v1, p.u0};
  } else if (p.axis == kAxisY) {
    c[0] = {p.u0, p.c, p.v0}, c[1] = {p.u1, p.c, p.v0}, c[2] = {p.u1, p.c, p.v1}, c[3] = {p.u0, p.c, p.v1};
  } else {
    c[0] = {p.u0, p.v0, p.c}, c[1] = {p.u1, p.v0, p.c}, c[2] = {p.u1, p.v1, p.c}, c[3] = {p.u0, p.v1, p.c};
  }
}

// The pixel rectangle covered by a planar quad (clipped at the near plane); false when empty.
bool screen_bbox(const V3 (&corners)[4], const Camera& cam, int& x0, int& x1, int& y0, int& y1) {
  float cx[4], cy[4], cz[4];
  for (int i = 0; i < 4; ++i) {
    const V3 q = corners[i] - cam.pos;
    cx[i] = dot(q, cam.right);
    cy[i] = q.y;
    cz[i] = dot(q, cam.fwd);
  }
  float min_x = std::numeric_limits<float>::max(), max_x = -min_x, min_y = min_x, max_y = -min_x;
  int n = 0;
  auto add = [&](float x, float y, float z) {
    const float sx = cam.ppx + cam.f * x / z, sy = cam.ppy - cam.f * y / z;
    min_x = std::min(min_x, sx);
    max_x = std::max(max_x, sx);
    min_y = std::min(min_y, sy);
    max_y = std::max(max_y, sy);
    ++n;
  };
  for (int i = 0; i < 4; ++i) {
    const int j = (i + 1) % 4;
    const bool in_i = cz[i] >= kNear, in_j = cz[j] >= kNear;
    if (in_i) add(cx[i], cy[i], cz[i]);
    if (in_i != in_j) {
      const float t = (kNear - cz[i]) / (cz[j] - cz[i]);
      add(cx[i] + t * (cx[j] - cx[i]), cy[i] + t * (cy[j] - cy[i]), kNear);
    }
  }
  if (n == 0) return false;
  const float w = static_cast<float>(cam.width), h = static_cast<float>(cam.height);
  x0 = static_cast<int>(std::ceil(std::clamp(min_x - 0.5f, -1.0f, w + 1.0f)));
  x1 = static_cast<int>(std::floor(std::clamp(max_x - 0.5f, -1.0f, w + 1.0f)));
  y0 = static_cast<int>(std::ceil(std::clamp(min_y - 0.5f, -1.0f, h + 1.0f)));
  y1 = static_cast<int>(std::floor(std::clamp(max_y - 0.5f, -1.0f, h + 1.0f)));
  x0 = std::max(x0, 0);
  y0 = std::max(y0, 0);
  x1 = std::min(x1, cam.width - 1);
  y1 = std::min(y1, cam.height - 1);
  return x0 <= x1 && y0 <= y1;
}

void rasterize(const Prim& p, int32_t index, RenderWork& w) {
  const Camera& cam = w.fs.cam;
  const float cam_axis = p.axis == kAxisX ? cam.pos.x : (p.axis == kAxisY ? cam.pos.y : cam.pos.z);
  if (p.facing != 0 && (cam_axis - p.c) * static_cast<float>(p.facing) <= 0.0f) return;  // back face
  V3 corners[4];
  prim_corners(p, corners);
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  if (!screen_bbox(corners, cam, x0, x1, y0, y1)) return;
  const int width = cam.width;
  if (p.axis == kAxisY) {
    for (int py = y0; py <= y1; ++py) {
      const float b = w.row_b[static_cast<size_t>(py)];
      if (std::abs(b) < 1e-7f) continue;
      const float z = (p.c - cam.pos.y) / b;
      if (z < kNear) continue;
      const float zt = z - p.bias;
      for (int px = x0; px <= x1; ++px) {
        const float u = cam.pos.x + z * w.col_dx[static_cast<size_t>(px)];
        const float v = cam.pos.z + z * w.col_dz[static_cast<size_t>(px)];
        if (u < p.u0 || u > p.u1 || v < p.v0 || v > p.v1 || !inside_shape(p, u, v)) continue;
        const size_t i = static_cast<size_t>(py) * static_cast<size_t>(width) + static_cast<size_t>(px);
        if (zt < w.depth[i]) {
          w.depth[i] = zt;
          w.id[i] = index;
        }
      }
    }
    return;
  }
  const float h = static_cast<float>(cam.height);
  for (int px = x0; px <= x1; ++px) {
    const float dx = w.col_dx[static_cast<size_t>(px)], dz = w.col_dz[static_cast<size_t>(px)];
    const float d = p.axis == kAxisX ? dx : dz;
    if (std::abs(d) < 1e-7f) continue;
    const float z = (p.c - cam_axis) / d;
    if (z < kNear) continue;
    const float u = p.axis == kAxisX ? cam.pos.z + z * dz : cam.pos.x + z * dx;
    if (u < p.u0 || u > p.u1) continue;
    // Rows whose height v = cam.y + z * b lies in [v0, v1], with b = (ppy - py - 0.5) / f.
    const float ya = cam.ppy - 0.5f - cam.f * (p.v1 - cam.pos.y) / z;
    const float yb = cam.ppy - 0.5f - cam.f * (p.v0 - cam.pos.y) / z;
    const int r0 = std::max(y0, static_cast<int>(std::ceil(std::clamp(ya, -1.0f, h + 1.0f))));
    const int r1 = std::min(y1, static_cast<int>(std::floor(std::clamp(yb, -1.0f, h + 1.0f))));
    const float zt = z - p.bias;
    for (int py = r0; py <= r1; ++py) {
      const size_t i = static_cast<size_t>(py) * static_cast<size_t>(width) + static_cast<size_t>(px);
      if (zt >= w.depth[i]) continue;
      const float v = cam.pos.y + z * w.row_b[static_cast<size_t>(py)];
      if (!inside_shape(p, u, v)) continue;
      w.depth[i] = zt;
      w.id[i] = index;
    }
  }
}

void rasterize_decal(const Decal& d, RenderWork& w) {
  const Camera& cam = w.fs.cam;
  const V3 corners[4] = {{d.x0, 0, d.z0}, {d.x1, 0, d.z0}, {d.x1, 0, d.z1}, {d.x0, 0, d.z1}};
  int x0 = 0, x1 = 0, y0 = 0, y1 = 0;
  if (!screen_bbox(corners, cam, x0, x1, y0, y1)) return;
  const float cx = 0.5f * (d.x0 + d.x1), cz = 0.5f * (d.z0 + d.z1);
  const float rx = std::max(0.5f * (d.x1 - d.x0), 1e-3f), rz = std::max(0.5f * (d.z1 - d.z0), 1e-3f);
  for (int py = y0; py <= y1; ++py) {
    for (int px = x0; px <= x1; ++px) {
      const size_t i = static_cast<size_t>(py) * static_cast<size_t>(cam.width) + static_cast<size_t>(px);
      if (w.id[i] != kIdGround) continue;
      const float z = w.depth[i];
      const float a = (cam.pos.x + z * w.col_dx[static_cast<size_t>(px)] - cx) / rx;
      const float b = (cam.pos.z + z * w.col_dz[static_cast<size_t>(px)] - cz) / rz;
      // Soft edges: full strength inside, fading over the outer 30% (ellipse) or 15% (rectangle).
      const float r = d.ellipse ? std::sqrt(a * a + b * b) : std::max(std::abs(a), std::abs(b));
      const float k = d.ellipse ? 1.0f - smoothstep(0.7f, 1.0f, r) : 1.0f - smoothstep(0.85f, 1.0f, r);
      if (k > 0.0f) w.shade[i] = std::min(w.shade[i], 1.0f - d.strength * k);
    }
  }
}

// --- Lighting and the sky

// Whether the ray from P towards the sun hits a building of the street side the sun shines from
// (a slab test against each candidate building's box).
bool in_building_shadow(const Scene& sc, V3 P) {
  const Lighting& L = sc.light;
  const V3 l = L.sun_dir;
  if (!L.sunny || std::abs(l.x) < 1e-3f) return false;
  const Side& sd = sc.side[l.x > 0.0f ? 1 : 0];
  const float t_near = (sd.sign * sd.lot_x - P.x) / l.x, t_far = (sd.sign * sd.max_front - P.x) / l.x;
  if (std::max(t_near, t_far) <= 0.0f) return false;
  const float ta = std::max(0.0f, std::min(t_near, t_far)), tb = std::max(t_near, t_far);
  const float za = P.z + ta * l.z, zb = P.z + tb * l.z;
  const float zlo = std::min(za, zb), zhi = std::max(za, zb);
  auto it = std::lower_bound(sd.lots.begin(), sd.lots.end(), zlo, [](const Lot& lot, float z) { return lot.z1 < z; });
  for (; it != sd.lots.end() && it->z0 <= zhi; ++it) {
    if (it->kind != kLotBuilding) continue;
    const float x0 = sd.sign * it->front, x1 = sd.sign * (it->front + it->depth);
    float t0 = std::min((x0 - P.x) / l.x, (x1 - P.x) / l.x), t1 = std::max((x0 - P.x) / l.x, (x1 - P.x) / l.x);
    t1 = std::min(t1, (it->height - P.y) / std::max(l.y, 1e-4f));
    if (std::abs(l.z) > 1e-6f) {
      const float s0 = (it->z0 - P.z) / l.z, s1 = (it->z1 - P.z) / l.z;
      t0 = std::max(t0, std::min(s0, s1));
      t1 = std::min(t1, std::max(s0, s1));
    } else if (P.z < it->z0 || P.z > it->z1) {
      continue;
    }
    if (t1 > std::max(t0, 1e-3f)) return true;
  }
  return false;
}

V3 lighting(const Scene& sc, V3 P, V3 n) {
  const Lighting& L = sc.light;
  V3 c = L.ambient * (0.78f + 0.22f * n.y);
  if (L.sunny) {
    const float k = dot(n, L.sun_dir);
    if (k > 0.0f && !in_building_shadow(sc, P)) c = c + L.sun * k;
  }
  return c;
}

V3 sky_colour(const Scene& sc, V3 d, float pixel_angle) {
  const Lighting& L = sc.light;
  const V3 n = normalize(d);
  const float e = n.y;
  V3 c = mix(L.horizon, L.zenith, std::sqrt(clamp01(e * 2.2f)));
  if (L.sunny) {
    const float sd = std::max(0.0f, dot(n, L.sun_dir));
    c = c + L.sun * (0.5f * std::pow(sd, 300.0f) + 0.12f * std::pow(sd, 6.0f));
  }
  if (e > 0.004f) {
    // Clouds on a plane high above: coordinates of the ray's hit, scaled; footprint grows at grazing angles.
    const float k = L.cloud_scale / e;
    const float foot = L.cloud_scale * pixel_angle / (e * e);
    const float raw = fbm(n.x * k, n.z * k, L.cloud_seed, 6, foot) + 0.5f;
    const float t0 = 0.65f - 0.5f * L.cloud_cover;
    const float density = smoothstep(t0, t0 + 0.2f, raw) * smoothstep(0.0f, 0.08f, e);
    const V3 cloud = L.cloud_colour * (1.0f - 0.3f * smoothstep(t0 + 0.1f, t0 + 0.4f, raw));
    c = mix(c, cloud, density * 0.95f);
  }
  return c;
}

// --- The ground

struct GroundSample {
  V3 albedo;
  uint8_t label = kRoad;
};

const Lot* lot_at(const Side& sd, float z) {
  auto it = std::lower_bound(sd.lots.begin(), sd.lots.end(), z, [](const Lot& l, float zz) { return l.z1 < zz; });
  return it != sd.lots.end() && it->z0 <= z ? &*it : nullptr;
}

V3 grass(const Scene& sc, float X, float Z, float foot) {
  const float n = fbm(X * 2.0f, Z * 2.0f, sc.tex_seed + 7u, 5, foot * 2.0f);
  const float patches = fbm(X * 0.15f, Z * 0.15f, sc.tex_seed + 8u, 2, foot * 0.15f);
  return mix(sc.grass_colour, V3{0.45f, 0.40f, 0.30f}, clamp01(patches * 1.5f)) * (1.0f + 0.45f * n);
}

V3 paving(const Scene& sc, V3 base, float X, float Z, float fx, float fz) {
  const float joints = std::max(filtered_pulse(X, fx, sc.tile, 0.08f), filtered_pulse(Z, fz, sc.tile, 0.08f));
  const float n = fbm(X * 3.0f, Z * 3.0f, sc.tex_seed + 3u, 4, std::max(fx, fz) * 3.0f);
  return base * (1.0f - 0.22f * joints) * (1.0f + 0.15f * n);
}

V3 asphalt(const Scene& sc, float X, float Z, float fx, float fz) {
  const float foot = std::max(fx, fz);
  const float fine = fbm(X * 1.5f, Z * 1.5f, sc.tex_seed + 1u, 6, foot * 1.5f);
  const float stains = fbm(X * 0.1f, Z * 0.05f, sc.tex_seed + 2u, 3, foot * 0.1f);
  return sc.asphalt * (1.0f + 0.22f * fine) * (1.0f + 0.3f * stains);
}

GroundSample ground_at(const Scene& sc, float X, float Z, float fx, float fz) {
  const V3 kPaint{0.86f, 0.86f, 0.83f};
  const float d = std::abs(X);
  const Side& sd = sc.side[X < 0.0f ? 0 : 1];
  const Crossing* crossing = crossing_at(sc, Z);
  auto line = [&](float centre, float width) { return filtered_box(X, fx, centre - 0.5f * width, centre + 0.5f * width); };
  if (d < sc.road_half ||
      (crossing && Z > crossing->z0 + crossing->walk && Z < crossing->z1 - crossing->walk)) {  // road
    V3 c = asphalt(sc, X, Z, fx, fz);
    const bool interior = crossing && Z > crossing->z0 + crossing->walk && Z < crossing->z1 - crossing->walk;
    float m = 0.0f;
    if (!interior && d < sc.road_half) {
      for (int i = 1; i < sc.lanes; ++i) {
        const float xb = -sc.road_half + static_cast<float>(i) * sc.lane_w;
        if (i == sc.lanes_left) {
          m = std::max(m, sc.centre_double ? std::max(line(xb - 0.1f, 0.1f), line(xb + 0.1f, 0.1f))
                                           : line(xb, 0.12f) * filtered_pulse(Z, fz, 9.0f, 0.4f));
        } else {
          m = std::max(m, line(xb, 0.12f) * filtered_pulse(Z - 3.0f, fz, 12.0f, 0.25f));
        }
      }
      for (const Side& s2 : sc.side)
        if (s2.park <= 0.0f) m = std::max(m, line(s2.sign * (sc.road_half - 0.3f), 0.12f));
      for (int i = 0; i < sc.lanes; ++i) {  // tyre tracks
        const float dl = std::abs(X - lane_centre(sc, i));
        c = c * (1.0f - 0.08f * filtered_box(dl, fx, 0.55f, 0.95f));
      }
    }
    if (d < sc.road_half) {
      const float centre_x = -sc.road_half + static_cast<float>(sc.lanes_left) * sc.lane_w;
      for (const Zebra& zb : sc.zebras) {
        if (Z < zb.z0 - 2.0f - fz || Z > zb.z1 + fz) continue;
        m = std::max(m, filtered_box(Z, fz, zb.z0, zb.z1) * filtered_pulse(X + 0.25f, fx, 1.0f, 0.5f));
        m = std::max(m, filtered_box(Z, fz, zb.z0 - 1.6f, zb.z0 - 1.1f) * filtered_box(X, fx, centre_x, sc.road_half));
      }
    }
    if (sc.rails) {
      const float rail = std::max(line(sc.rail_x - 0.72f, 0.07f), line(sc.rail_x + 0.72f, 0.07f));
      c = mix(c, V3{0.50f, 0.50f, 0.52f}, rail * 0.8f);
    }
    return GroundSample{mix(c, kPaint, m * 0.9f), kRoad};
  }
  // Beyond the road: the cross street's sidewalk corners, or this side's strips.
  const float curb_x = sc.road_half + sd.park;
  if (crossing) {
    V3 c = paving(sc, sc.walk_colour, X, Z, fx, fz);
    c = mix(c, sc.curb_colour, std::max(filtered_box(Z, fz, crossing->z0 + crossing->walk - 0.2f, crossing->z0 + crossing->walk),
                                        filtered_box(Z, fz, crossing->z1 - crossing->walk, crossing->z1 - crossing->walk + 0.2f)));
    return GroundSample{c, kSidewalk};
  }
  if (d < curb_x) {  // parking strip; no parking (road) close to crossings and zebras
    if (crossing_at(sc, Z, 6.0f) || near_zebra(sc, Z, 3.0f)) return GroundSample{asphalt(sc, X, Z, fx, fz), kRoad};
    V3 c = sc.park_style == 0 ? asphalt(sc, X, Z, fx, fz) * 1.08f : paving(sc, sc.park_colour, X * 2.0f, Z * 2.0f, fx * 2.0f, fz * 2.0f);
    const float bays = filtered_pulse(Z, fz, 5.5f, 0.1f / 5.5f) * filtered_box(d, fx, sc.road_half, curb_x);
    const float edge = line(sd.sign * (sc.road_half + 0.05f), 0.1f);
    c = mix(c, kPaint, std::max(bays, edge) * 0.85f);
    return GroundSample{c, kParking};
  }
  if (d < curb_x + sd.verge) {
    V3 c = grass(sc, X, Z, std::max(fx, fz));
    c = mix(c, sc.curb_colour, filtered_box(d, fx, curb_x, curb_x + 0.2f));
    return GroundSample{c, kTerrain};
  }
  if (d < sd.lot_x) {
    V3 c = paving(sc, sc.walk_colour, X, Z, fx, fz);
    const float kerb = sd.verge > 0.0f ? filtered_box(d, fx, curb_x + sd.verge, curb_x + sd.verge + 0.1f)
                                       : filtered_box(d, fx, curb_x, curb_x + 0.25f);
    c = mix(c, sc.curb_colour, kerb);
    return GroundSample{c, kSidewalk};
  }
  const Lot* lot = lot_at(sd, Z);
  const uint8_t label = lot ? lot->ground : kTerrain;
  if (label == kSidewalk) return GroundSample{paving(sc, sc.walk_colour * 0.95f, X, Z, fx, fz), kSidewalk};
  return GroundSample{grass(sc, X, Z, std::max(fx, fz)), kTerrain};
}

// --- Paints

struct Surface {
  V3 albedo;
  V3 emissive;
};

V3 windows_glass(const Scene& sc, uint32_t seed, int32_t i, int32_t j, float variation) {
  const float h = hash_unit(i, j, seed);
  V3 g = mix(V3{0.10f, 0.12f, 0.15f}, sc.light.horizon * 0.75f, 0.3f);
  if (h < 0.15f) g = mix(g, V3{0.55f, 0.50f, 0.42f}, variation);        // curtains
  else if (h > 0.85f) g = mix(g, sc.light.horizon * 0.9f, variation);    // a bright reflection
  else g = g * (1.0f + variation * (h - 0.5f) * 0.4f);
  return g;
}

Surface paint(const Scene& sc, const Prim& p, V3 P, float u, float v, float fu, float fv) {
  const V3 a = p.albedo;
  const float lu = u - p.u0, lv = v - p.v0;  // from the prim's corner
  const float foot = std::max(fu, fv);
  const int role = static_cast<int>(p.pp[0]);
  switch (p.paint) {
    case kPaintFlat: {
      const V3 o = P - p.origin;
      return {a * (1.0f + 0.12f * fbm(o.x * 4.0f + o.z * 4.0f, o.y * 4.0f, p.seed + 11u, 3, foot * 4.0f)), {}};
    }
    case kPaintFacade: {
      const float floor_h = p.pp[0], period = p.pp[1], duty = p.pp[2], win = p.pp[3];
      const float length = p.u1 - p.u0, height = p.v1;
      V3 wall = a * (1.0f + 0.16f * fbm(u * 0.7f, v * 0.7f, p.seed, 4, foot * 0.7f));
      wall = wall * (1.0f - 0.15f * filtered_pulse(v + 0.15f, fv, floor_h, 0.06f));           // string courses
      wall = mix(wall, a * 0.72f, filtered_box(v, fv, height - 0.6f, height + 1.0f));          // cornice
      wall = mix(wall, a * 0.78f, filtered_box(v, fv, -1.0f, 0.5f));                           // plinth
      const float shift = 0.5f * period * (1.0f - duty) + std::fmod(length, period) * 0.5f;
      const float wu = filtered_pulse(lu - shift, fu, period, duty) * filtered_box(lu, fu, 0.8f, length - 0.8f);
      const float wv = filtered_pulse(v - floor_h * (1.0f - win) * 0.6f, fv, floor_h, win) *
                       filtered_box(v, fv, floor_h, height - 1.0f);
      const float variation = clamp01(1.5f - 2.0f * fu / period) * clamp01(1.5f - 2.0f * fv / floor_h);
      const int32_t wi = static_cast<int32_t>(std::floor((lu - shift) / period));
      const int32_t wj = static_cast<int32_t>(std::floor(v / floor_h));
      V3 glass = windows_glass(sc, p.seed, wi, wj, variation);
      // Ground floor: shop windows or a door, depending on the building.
      const bool shop = (p.seed & 1u) != 0;
      const float gu = shop ? filtered_pulse(lu - 0.6f, fu, 4.0f, 0.78f) : filtered_pulse(lu - shift, fu, period, duty);
      const float gv = shop ? filtered_box(v, fv, 0.5f, floor_h - 0.5f) : filtered_box(v, fv, 0.9f, floor_h - 0.6f);
      const float ground = gu * gv * filtered_box(lu, fu, 0.8f, length - 0.8f);
      const V3 shop_glass = mix(V3{0.12f, 0.13f, 0.15f}, V3{0.45f, 0.40f, 0.32f}, 0.4f);
      V3 c = mix(wall, glass, wu * wv);
      c = mix(c, shop ? shop_glass : glass, ground);
      return {c, {}};
    }
    case kPaintGlass: {
      const float t = clamp01(lv / (p.v1 - p.v0));
      V3 g = mix(V3{0.05f, 0.06f, 0.08f}, sc.light.horizon * 0.55f, 0.12f + 0.35f * t);
      float body = filtered_box(lv, fv, -1.0f, 0.07f) + filtered_box(v, fv, p.v1 - 0.05f, p.v1 + 1.0f);  // frame
      if (role == kRoleSide) {
        const float left = p.u0 + p.sp[0] * t, right = p.u1 - p.sp[1] * t, mid = 0.5f * (left + right);
        body += filtered_box(u, fu, left - 1.0f, left + 0.1f) + filtered_box(u, fu, right - 0.1f, right + 1.0f) +
                filtered_box(u, fu, mid - 0.06f, mid + 0.06f);
        if (p.pp[2] > 0.0f) {  // van: windows only in the front part
          const float front_start = p.pp[1] > 0 ? p.u1 - 0.35f * (p.u1 - p.u0) : p.u0;
          const float front_end = p.pp[1] > 0 ? p.u1 : p.u0 + 0.35f * (p.u1 - p.u0);
          body += 1.0f - filtered_box(u, fu, front_start, front_end);
        }
      } else if (role == kRoleRear && p.pp[2] > 0.0f) {  // van: rear windows in the upper half
        body += 1.0f - filtered_box(lv, fv, 0.45f * (p.v1 - p.v0), p.v1 - p.v0);
        body += filtered_box(u, fu, 0.5f * (p.u0 + p.u1) - 0.04f, 0.5f * (p.u0 + p.u1) + 0.04f);
      }
      return {mix(g, a * (0.85f + 0.2f * t), clamp01(body)), {}};
    }
    case kPaintCarBody: {
      const float t = clamp01(lv / (p.v1 - p.v0));
      V3 c = a * (0.82f + 0.28f * t) + sc.light.horizon * (0.10f * t * t);
      if (role == kRoleTop) return {a * 1.02f + sc.light.horizon * 0.08f, {}};
      c = mix(c, a * 0.45f + grey(0.04f), filtered_box(lv, fv, -1.0f, 0.12f));  // bumper / sill
      const float cu = 0.5f * (p.u0 + p.u1), half = 0.5f * (p.u1 - p.u0);
      const float du = std::abs(u - cu);
      V3 e;
      if (role == kRoleSide) {
        const float len = p.u1 - p.u0;
        const float seams = filtered_box(lu, fu, 0.40f * len - 0.015f, 0.40f * len + 0.015f) +
                            filtered_box(lu, fu, 0.62f * len - 0.015f, 0.62f * len + 0.015f);
        c = c * (1.0f - 0.5f * clamp01(seams) * filtered_box(lv, fv, 0.1f, 10.0f));
        c = mix(c, grey(0.08f), filtered_box(lv, fv, 0.30f, 0.36f) * 0.6f);  // rubbing strip
      } else if (role == kRoleRear) {
        const float lamp = filtered_box(du, fu, half - 0.32f, half - 0.03f) * filtered_box(v, fv, p.v1 - 0.28f, p.v1 - 0.08f);
        c = mix(c, V3{0.65f, 0.05f, 0.04f}, lamp);
        e = V3{0.15f, 0.0f, 0.0f} * lamp;
        const float plate = filtered_box(du, fu, 0.0f, 0.26f) * filtered_box(lv, fv, 0.16f, 0.28f);
        c = mix(c, V3{0.88f, 0.88f, 0.84f}, plate);
      } else if (role == kRoleFront) {
        const float lamp = filtered_box(du, fu, half - 0.35f, half - 0.05f) * filtered_box(v, fv, p.v1 - 0.26f, p.v1 - 0.1f);
        c = mix(c, V3{0.80f, 0.82f, 0.80f}, lamp);
        e = V3{0.12f, 0.12f, 0.1f} * lamp;
        c = mix(c, grey(0.06f), filtered_box(du, fu, 0.0f, 0.35f) * filtered_box(v, fv, p.v1 - 0.3f, p.v1 - 0.12f));
        c = mix(c, V3{0.88f, 0.88f, 0.84f}, filtered_box(du, fu, 0.0f, 0.26f) * filtered_box(lv, fv, 0.14f, 0.26f));
      }
      return {c, e};
    }
    case kPaintTire: {
      const float cu = 0.5f * (p.u0 + p.u1), cv = 0.5f * (p.v0 + p.v1);
      const float x = (u - cu) / (0.5f * (p.u1 - p.u0)), y = (v - cv) / (0.5f * (p.v1 - p.v0));
      const float r = std::sqrt(x * x + y * y);
      return {mix(a, V3{0.42f, 0.42f, 0.44f}, 1.0f - smoothstep(0.5f, 0.6f, r)), {}};
    }
    case kPaintFoliage: {
      const V3 o = P - p.origin;
      const float n = fbm(o.x * 1.8f + o.z * 1.8f, o.y * 1.8f, p.seed, 6, foot * 1.8f);
      const float t = clamp01(lv / (p.v1 - p.v0));
      return {a * (0.6f + 0.5f * t) * (1.0f + 1.2f * n), {}};
    }
    case kPaintBark:
      return {a * (1.0f + 0.3f * fbm(u * 8.0f, v * 1.5f, p.seed, 3, foot * 8.0f)), {}};
    case kPaintMetal: {
      const float x = (u - 0.5f * (p.u0 + p.u1)) / std::max(0.5f * (p.u1 - p.u0), 1e-4f);
      return {a * (0.75f + 0.35f * (1.0f - x * x)), {}};
    }
    case kPaintSign: {
      const float cu = 0.5f * (p.u0 + p.u1), cv = 0.5f * (p.v0 + p.v1);
      const float x = (u - cu) / (0.5f * (p.u1 - p.u0)), y = (v - cv) / (0.5f * (p.v1 - p.v0));
      const float r = std::sqrt(x * x + y * y);
      const V3 red{0.75f, 0.08f, 0.08f}, white{0.92f, 0.92f, 0.92f}, blue{0.08f, 0.28f, 0.68f};
      const V3 yellow{0.95f, 0.75f, 0.10f}, black{0.05f, 0.05f, 0.05f};
      switch (static_cast<int>(p.pp[0])) {
        case 0:  // prohibition
          return {r > 0.72f ? red : (std::abs(y) < 0.15f && std::abs(x) < 0.55f ? black : white), {}};
        case 1:  // mandatory direction
          return {(std::abs(x) < 0.13f && y > -0.6f && y < 0.2f) || (y >= 0.2f && y < 0.62f && std::abs(x) < 0.62f - y) ? white
                                                                                                                   : blue,
                  {}};
        case 2: {  // warning triangle
          const float inner = std::abs(x) <= 0.62f * (1.0f - (y + 0.7f) / 1.4f) && y > -0.7f;
          return {inner ? (std::abs(x) < 0.08f && y > -0.4f && y < 0.25f ? black : white) : red, {}};
        }
        case 3:  // information (parking)
          return {std::abs(x) < 0.8f && std::abs(y) < 0.8f && ((std::abs(x + 0.15f) < 0.12f && std::abs(y) < 0.55f) ||
                                                               (x > -0.15f && x < 0.35f && y > 0.0f && y < 0.55f))
                      ? white
                      : blue,
                  {}};
        case 4:  // priority road
          return {std::abs(x) + std::abs(y) > 0.72f ? white : yellow, {}};
        default: {  // yield
          const bool inner = std::abs(x) <= 0.6f * ((y + 0.55f) / 1.4f) && y < 0.75f;
          return {inner ? white : red, {}};
        }
      }
    }
    case kPaintLightHousing: {
      if (p.pp[0] <= 0.0f) return {a, {}};
      const float cu = 0.5f * (p.u0 + p.u1), cv = 0.5f * (p.v0 + p.v1), ru = 0.5f * (p.u1 - p.u0);
      const V3 lit_colour[3] = {{1.0f, 0.15f, 0.08f}, {1.0f, 0.65f, 0.08f}, {0.15f, 1.0f, 0.45f}};
      for (int k = 0; k < 3; ++k) {
        const float lc = cv + (1.0f - static_cast<float>(k)) * 0.62f * (0.5f * (p.v1 - p.v0));
        const float du = u - cu, dv = v - lc;
        if (du * du + dv * dv < 0.5f * ru * ru) {
          const bool lit = k == static_cast<int>(p.pp[1]);
          return lit ? Surface{lit_colour[k] * 0.5f, lit_colour[k] * 0.6f} : Surface{lit_colour[k] * 0.12f, {}};
        }
      }
      return {a, {}};
    }
    case kPaintLamp:
      return {a, filtered_box(v, fv, p.v0, p.v0 + 0.08f) > 0.5f ? V3{0.3f, 0.3f, 0.25f} : V3{}};
    case kPaintFence: {
      const int style = static_cast<int>(p.pp[0]);
      const V3 behind = V3{0.20f, 0.24f, 0.18f};
      const float posts = filtered_pulse(u, fu, 2.5f, 0.04f);
      float cover = 0.0f;
      if (style == 0) {
        cover = filtered_pulse(u, fu, 0.14f, 0.75f);
      } else if (style == 1) {
        cover = std::max(filtered_pulse(u, fu, 0.13f, 0.22f),
                         std::max(filtered_box(v, fv, p.v1 - 0.08f, p.v1), filtered_box(v, fv, p.v0 + 0.1f, p.v0 + 0.18f)));
      } else {
        cover = 0.35f + 0.65f * std::max(filtered_pulse(u + v, fu + fv, 0.08f, 0.15f), filtered_pulse(u - v, fu + fv, 0.08f, 0.15f));
      }
      V3 c = mix(behind, a * (1.0f + 0.15f * fbm(u * 3.0f, v * 3.0f, p.seed, 3, foot * 3.0f)), std::max(cover, posts));
      return {c, {}};
    }
    case kPaintWall: {
      const int style = static_cast<int>(p.pp[0]);
      V3 c = a * (1.0f + 0.18f * fbm(u * 1.5f + P.x, v * 1.5f, p.seed, 4, foot * 1.5f));
      if (style == 1) {  // brick
        const float rows = filtered_pulse(v, fv, 0.075f, 0.15f);
        const float row = std::floor(v / 0.075f);
        const float offset = std::fmod(row, 2.0f) * 0.12f;
        const float fade = clamp01(1.0f - fv / 0.075f);
        const float heads = filtered_pulse(u + offset, fu, 0.24f, 0.06f) * fade;
        c = mix(c, grey(0.75f), std::max(rows, heads) * 0.6f);
      } else if (style == 2) {  // concrete blocks
        c = mix(c, c * 0.7f, std::max(filtered_pulse(v, fv, 0.5f, 0.04f), filtered_pulse(u, fu, 1.0f, 0.02f)));
      }
      c = mix(c, c * 1.15f, filtered_box(v, fv, p.v1 - 0.08f, p.v1 + 1.0f));  // coping
      return {c, {}};
    }
    case kPaintBusBody: {
      const bool tram = p.pp[2] > 0.0f;
      V3 c = a * (1.0f + 0.05f * fbm(u, v, p.seed, 2, foot));
      if (role == kRoleTop) return {c, {}};
      const float cu = 0.5f * (p.u0 + p.u1), du = std::abs(u - cu), half = 0.5f * (p.u1 - p.u0);
      const V3 glass = mix(V3{0.06f, 0.07f, 0.09f}, sc.light.horizon * 0.5f, 0.3f);
      float w = 0.0f;
      V3 e;
      if (role == kRoleSide) {
        w = filtered_box(v, fv, tram ? 1.3f : 1.25f, tram ? 2.6f : 2.55f) * filtered_pulse(lu - 0.4f, fu, 1.55f, 0.85f) *
            filtered_box(lu, fu, 0.4f, p.u1 - p.u0 - 0.4f);
        if (tram) c = mix(c, a * 0.35f, filtered_box(v, fv, -1.0f, 0.85f));  // skirt
      } else if (role == kRoleFront) {
        w = filtered_box(v, fv, 1.0f, 2.7f) * filtered_box(du, fu, 0.0f, half - 0.12f);
        const float sign = filtered_box(v, fv, 2.78f, 2.98f) * filtered_box(du, fu, 0.0f, half - 0.3f);
        c = mix(c, V3{0.1f, 0.1f, 0.1f}, sign);
        e = V3{0.45f, 0.30f, 0.05f} * sign;
        c = mix(c, V3{0.85f, 0.85f, 0.8f}, filtered_box(du, fu, half - 0.4f, half - 0.1f) * filtered_box(v, fv, 0.5f, 0.7f));
      } else {
        w = filtered_box(v, fv, 1.7f, 2.6f) * filtered_box(du, fu, 0.0f, half - 0.3f);
        const float lamp = filtered_box(du, fu, half - 0.3f, half - 0.08f) * filtered_box(v, fv, 0.6f, 1.0f);
        c = mix(c, V3{0.65f, 0.05f, 0.04f}, lamp);
        e = V3{0.15f, 0.0f, 0.0f} * lamp;
      }
      return {mix(c, glass, w), e};
    }
    case kPaintTruckBox: {
      V3 c = a * (1.0f + 0.06f * fbm(u, v, p.seed, 2, foot));
      if (role == kRoleSide) c = c * (1.0f - 0.25f * filtered_pulse(lu, fu, 0.8f, 0.03f));
      if (role == kRoleRear) {
        const float cu = 0.5f * (p.u0 + p.u1);
        c = c * (1.0f - 0.5f * filtered_box(u, fu, cu - 0.02f, cu + 0.02f));
      }
      c = mix(c, a * 0.6f, filtered_box(lv, fv, -1.0f, 0.1f));
      return {c, {}};
    }
    case kPaintTruckCab: {
      V3 c = a * (0.85f + 0.2f * clamp01(lv / (p.v1 - p.v0)));
      const V3 glass = mix(V3{0.06f, 0.07f, 0.09f}, sc.light.horizon * 0.5f, 0.3f);
      const float cu = 0.5f * (p.u0 + p.u1), du = std::abs(u - cu), half = 0.5f * (p.u1 - p.u0);
      if (role == kRoleFront) {
        c = mix(c, glass, filtered_box(v, fv, 1.7f, 2.65f) * filtered_box(du, fu, 0.0f, half - 0.1f));
        c = mix(c, grey(0.1f), filtered_box(v, fv, 0.9f, 1.4f) * filtered_box(du, fu, 0.0f, half - 0.4f));
      } else if (role == kRoleSide) {
        const float front_u = p.pp[1] > 0 ? p.u1 : p.u0;
        c = mix(c, glass, filtered_box(v, fv, 1.65f, 2.6f) * filtered_box(std::abs(u - front_u), fu, 0.15f, 1.3f));
      }
      c = mix(c, grey(0.12f), filtered_box(lv, fv, -1.0f, 0.15f));
      return {c, {}};
    }
    case kPaintPoster: {
      const int32_t i = static_cast<int32_t>(std::floor((u - p.u0) / 0.45f));
      const int32_t j = static_cast<int32_t>(std::floor(v / 0.7f));
      const float h = hash_unit(i, j, p.seed);
      V3 c = kClothColours[static_cast<size_t>(h * 12.0f) % 12] * 0.9f + grey(0.08f);
      c = mix(c, V3{0.15f, 0.25f, 0.18f}, std::max(filtered_box(v, fv, -1.0f, 0.3f), filtered_box(v, fv, 2.55f, 9.0f)));
      return {c, {}};
    }
    default:
      return {a, {}};
  }
}

// Outward normal for lighting; two-sided prims face the camera.
V3 prim_normal(const Prim& p, const Camera& cam) {
  float s = static_cast<float>(p.facing);
  const float cam_axis = p.axis == kAxisX ? cam.pos.x : (p.axis == kAxisY ? cam.pos.y : cam.pos.z);
  if (s == 0.0f) s = cam_axis > p.c ? 1.0f : -1.0f;
  V3 n = p.axis == kAxisX ? V3{s, 0, 0} : (p.axis == kAxisY ? V3{0, s, 0} : V3{0, 0, s});
  if (p.paint == kPaintFoliage) n = normalize(n + V3{0.0f, 0.7f, 0.0f});  // rounder crowns
  return n;
}

V3 hood_colour(const Scene& sc, float t) {  // t: 0 at the hood's top edge, 1 at the image bottom
  const V3 base{0.05f, 0.05f, 0.06f};
  const V3 reflection = mix(sc.light.horizon * 0.55f, sc.asphalt * 0.45f, clamp01(t * 1.6f));
  return base + reflection * (0.55f - 0.3f * t) + grey(0.12f * std::exp(-t * t * 900.0f));
}

// Renders one snippet frame into `out` (RGB and labelIds).
void render_frame(const Scene& sc, int frame, RenderWork& w, SyntheticFrame& out) {
  const int width = sc.width, height = sc.height;
  const size_t n = static_cast<size_t>(width) * static_cast<size_t>(height);
  build_frame(sc, frame_time(frame), w.fs);
  const Camera& cam = w.fs.cam;
  w.col_dx.resize(static_cast<size_t>(width));
  w.col_dz.resize(static_cast<size_t>(width));
  w.row_b.resize(static_cast<size_t>(height));
  for (int px = 0; px < width; ++px) {
    const float a = (static_cast<float>(px) + 0.5f - cam.ppx) / cam.f;
    w.col_dx[static_cast<size_t>(px)] = cam.right.x * a + cam.fwd.x;
    w.col_dz[static_cast<size_t>(px)] = cam.right.z * a + cam.fwd.z;
  }
  for (int py = 0; py < height; ++py) w.row_b[static_cast<size_t>(py)] = (cam.ppy - static_cast<float>(py) - 0.5f) / cam.f;
  // Visibility: ground and sky, then the prims, then the hood in front of everything.
  w.depth.assign(n, std::numeric_limits<float>::infinity());
  w.id.assign(n, kIdSky);
  w.shade.assign(n, 1.0f);
  for (int py = 0; py < height; ++py) {
    const float b = w.row_b[static_cast<size_t>(py)];
    if (b >= -1e-6f) continue;
    const float z = -cam.pos.y / b;
    for (size_t i = static_cast<size_t>(py) * static_cast<size_t>(width), e = i + static_cast<size_t>(width); i < e; ++i) {
      w.depth[i] = z;
      w.id[i] = kIdGround;
    }
  }
  for (size_t k = 0; k < w.fs.prims.size(); ++k) rasterize(w.fs.prims[k], static_cast<int32_t>(k), w);
  std::vector<float> hood_top(static_cast<size_t>(width));
  for (int px = 0; px < width; ++px) {
    const float t = (static_cast<float>(px) + 0.5f) / static_cast<float>(width) * 2.0f - 1.0f;
    hood_top[static_cast<size_t>(px)] = static_cast<float>(height) * (1.0f - kHoodHeight * (1.0f - 0.45f * t * t));
    for (int py = 0; py < height; ++py) {
      if (static_cast<float>(py) + 0.5f <= hood_top[static_cast<size_t>(px)]) continue;
      const size_t i = static_cast<size_t>(py) * static_cast<size_t>(width) + static_cast<size_t>(px);
      w.id[i] = kIdHood;
      w.depth[i] = 0.0f;
    }
  }
  for (const Decal& d : w.fs.decals) rasterize_decal(d, w);
  // Shading, fog, exposure, sensor noise.
  out.width = width;
  out.height = height;
  out.rgb.resize(n * 3);
  out.label_ids.resize(n);
  const Lighting& L = sc.light;
  const float pixel_angle = 1.0f / cam.f;
  const uint32_t noise_seed = sc.noise_seed ^ (static_cast<uint32_t>(frame) * 0x9E3779B9U);
  for (int py = 0; py < height; ++py) {
    const float b = w.row_b[static_cast<size_t>(py)];
    for (int px = 0; px < width; ++px) {
      const size_t i = static_cast<size_t>(py) * static_cast<size_t>(width) + static_cast<size_t>(px);
      const V3 d{w.col_dx[static_cast<size_t>(px)], b, w.col_dz[static_cast<size_t>(px)]};
      const int32_t id = w.id[i];
      V3 c;
      uint8_t label = kUnlabeled;
      float z = 0.0f;
      if (id == kIdHood) {
        const float top = hood_top[static_cast<size_t>(px)];
        c = hood_colour(sc, (static_cast<float>(py) + 0.5f - top) / std::max(1.0f, static_cast<float>(height) - top));
        label = kEgoVehicle;
      } else if (id == kIdSky) {
        c = sky_colour(sc, d, pixel_angle);
        label = kSky;
      } else if (id == kIdGround) {
        z = w.depth[i];
        const V3 P = cam.pos + d * z;
        const float fx = z * pixel_angle, fz = fx / std::max(-b, 1e-4f);
        const GroundSample g = ground_at(sc, P.x, P.z, fx, fz);
        c = g.albedo * lighting(sc, P, V3{0, 1, 0}) * w.shade[i];
        label = g.label;
      } else {
        const Prim& p = w.fs.prims[static_cast<size_t>(id)];
        const float cam_axis = p.axis == kAxisX ? cam.pos.x : (p.axis == kAxisY ? cam.pos.y : cam.pos.z);
        const float dd = p.axis == kAxisX ? d.x : (p.axis == kAxisY ? d.y : d.z);
        z = (p.c - cam_axis) / dd;
        const V3 P = cam.pos + d * z;
        const float u = p.axis == kAxisX ? P.z : P.x, v = p.axis == kAxisY ? P.z : P.y;
        // Footprints: one pixel at depth z, stretched where the surface is seen at a grazing angle.
        const float base = z * pixel_angle;
        const float hor = std::sqrt(d.x * d.x + d.z * d.z);
        float fu = base, fv = base;
        if (p.axis == kAxisX) fu = base * std::min(hor / std::max(std::abs(d.x), 1e-4f), 50.0f);
        if (p.axis == kAxisZ) fu = base * std::min(hor / std::max(std::abs(d.z), 1e-4f), 50.0f);
        if (p.axis == kAxisY) fv = base * std::min(1.0f / std::max(std::abs(d.y), 1e-4f), 50.0f);
        const Surface s = paint(sc, p, P, u, v, fu, fv);
        const V3 normal = prim_normal(p, cam);
        float occlusion = 1.0f;
        if (p.axis != kAxisY && (p.label == kBuilding || p.label == kWall)) occlusion = 0.8f + 0.2f * clamp01(P.y / 1.5f);
        c = s.albedo * lighting(sc, P, normal) * occlusion + s.emissive;
        label = p.label;
      }
      if (id != kIdHood && id != kIdSky) {
        c = mix(c, L.horizon, 1.0f - std::exp(-z / L.fog_distance));
        if (z > kFarLabelDistance) label = kUnlabeled;
      }
      // Exposure, colour temperature, vignetting, sensor noise.
      const float xn = (static_cast<float>(px) + 0.5f) / static_cast<float>(width) * 2.0f - 1.0f;
      const float yn = (static_cast<float>(py) + 0.5f) / static_cast<float>(height) * 2.0f - 1.0f;
      c = c * L.tint * (L.exposure * (1.0f - 0.12f * (xn * xn + yn * yn)));
      const uint32_t hbits = hash_2d(px, py, noise_seed);
      const float noise[3] = {static_cast<float>(hbits & 1023u) / 511.5f - 1.0f,
                              static_cast<float>((hbits >> 10) & 1023u) / 511.5f - 1.0f,
                              static_cast<float>((hbits >> 20) & 1023u) / 511.5f - 1.0f};
      const float rgb[3] = {c.x, c.y, c.z};
      for (int k = 0; k < 3; ++k)
        out.rgb[i * 3 + static_cast<size_t>(k)] =
            static_cast<uint8_t>(clamp01(rgb[k] + kSensorNoise * noise[k]) * 255.0f + 0.5f);
      out.label_ids[i] = label;
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Files

constexpr std::array<Split, kNumSplits> kSplits = {Split::train, Split::val,
                                                                         Split::test};

int split_count(const SyntheticOptions& o, Split split) {
  return split == Split::train ? o.num_train : (split == Split::val ? o.num_val : o.num_test);
}

struct ItemResult {
  int64_t files = 0, bytes = 0;
  std::array<int64_t, kNumLabelIds> label_pixels{};
};

int64_t size_of_file(const std::filesystem::path& path) {
  std::error_code ec;
  const auto size = std::filesystem::file_size(path, ec);
  SEG_CHECK(!ec, path.string(), ": cannot read the size of the file just written (", ec.message(), ")");
  return static_cast<int64_t>(size);
}

// Copies a file atomically (temporary file, then rename): the sequence's annotated frame is the annotated image's bytes.
void copy_file_atomic(const std::filesystem::path& from, const std::filesystem::path& to) {
  const std::filesystem::path tmp = to.string() + ".tmp." + std::to_string(::getpid());
  std::error_code ec;
  std::filesystem::copy_file(from, tmp, std::filesystem::copy_options::overwrite_existing, ec);
  if (!ec) std::filesystem::rename(tmp, to, ec);
  if (ec) {
    std::error_code ignored;
    std::filesystem::remove(tmp, ignored);
    SEG_CHECK(false, to.string(), ": cannot copy ", from.string(), " there (", ec.message(), ")");
  }
}

ItemResult write_item(const SyntheticOptions& o, Split split, int index, RenderWork& work) {
  ItemResult result;
  const Scene sc = make_scene(o.seed, split, index, o.width, o.height);
  const SyntheticImageId id = synthetic_image_id(split, index, split_count(o, split));
  const std::string city(id.city), split_dir(split_name(split));
  const std::filesystem::path image_dir = o.out_dir / "leftImg8bit" / split_dir / city;
  const std::filesystem::path gt_dir = o.out_dir / "gtFine" / split_dir / city;
  const std::filesystem::path seq_dir = o.out_dir / "leftImg8bit_sequence" / split_dir / city;
  const std::string annotated = frame_stem(city, id.sequence, id.frame) + "_";
  const int start = id.frame - kAnnotatedFrameOffset;  // the frame number of offset 0
  SyntheticFrame frame;
  auto emit = [&](const std::filesystem::path& path, int channels, const uint8_t* data) {
    if (channels == 3) write_png_rgb(path, frame.width, frame.height, data);
    else write_png_grey8(path, frame.width, frame.height, data);
    result.files += 1;
    result.bytes += size_of_file(path);
  };
  const int first = o.sequences ? 0 : kAnnotatedFrameOffset, last = o.sequences ? kSnippetLength - 1 : kAnnotatedFrameOffset;
  // Offset 19 (the annotated frame) first: its image file is then copied byte for byte into the
  // sequence. `f` is the offset in the snippet, which alone (with the scene) decides the pixels.
  std::vector<int> order{kAnnotatedFrameOffset};
  for (int f = first; f <= last; ++f)
    if (f != kAnnotatedFrameOffset) order.push_back(f);
  for (int f : order) {
    render_frame(sc, f, work, frame);
    if (f == kAnnotatedFrameOffset) {
      const std::filesystem::path image = image_dir / (annotated + "leftImg8bit.png");
      emit(image, 3, frame.rgb.data());
      const size_t n = frame.label_ids.size();
      const std::array<uint8_t, 256> to_train = label_id_to_train_id_table();
      std::vector<uint8_t> train(n), colour(n * 3);
      for (size_t i = 0; i < n; ++i) {
        const uint8_t l = frame.label_ids[i];
        train[i] = to_train[l];
        const Rgb c = kCityscapesLabels[l].color;
        colour[i * 3] = c.r;
        colour[i * 3 + 1] = c.g;
        colour[i * 3 + 2] = c.b;
        result.label_pixels[l] += 1;
      }
      emit(gt_dir / (annotated + "gtFine_labelIds.png"), 1, frame.label_ids.data());
      emit(gt_dir / (annotated + "gtFine_labelTrainIds.png"), 1, train.data());
      emit(gt_dir / (annotated + "gtFine_color.png"), 3, colour.data());
      if (o.sequences) {
        const std::filesystem::path seq = seq_dir / (annotated + "leftImg8bit.png");
        copy_file_atomic(image, seq);
        result.files += 1;
        result.bytes += size_of_file(seq);
      }
    } else {
      emit(seq_dir / (frame_stem(city, id.sequence, start + f) + "_leftImg8bit.png"), 3, frame.rgb.data());
    }
  }
  return result;
}

// --- Command line

struct IntOption {
  std::string_view name;
  int64_t lo, hi;
};

int64_t parse_integer(const std::string& option, const std::string& text, int64_t lo, int64_t hi) {
  int64_t value = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  SEG_CHECK(!text.empty() && ec != std::errc::invalid_argument && ptr == end, "make_synthetic_cityscapes: ", option, " '",
            text, "' is not an integer");
  SEG_CHECK(ec != std::errc::result_out_of_range && value >= lo && value <= hi, "make_synthetic_cityscapes: ", option, " ",
            text, " is out of range [", lo, ", ", hi, "]");
  return value;
}

uint64_t parse_seed(const std::string& text) {
  uint64_t value = 0;
  const char* begin = text.data();
  const char* end = begin + text.size();
  const auto [ptr, ec] = std::from_chars(begin, end, value);
  SEG_CHECK(!text.empty() && ec != std::errc::invalid_argument && ptr == end, "make_synthetic_cityscapes: --seed '", text,
            "' is not a non-negative integer");
  SEG_CHECK(ec != std::errc::result_out_of_range, "make_synthetic_cityscapes: --seed ", text, " does not fit in 64 bits");
  return value;
}

constexpr int kMaxImagesPerSplit = 100000;
constexpr int kMaxThreads = 1024;

}  // namespace

// ---------------------------------------------------------------------------------------------
// Public API

const std::vector<std::string_view>& cityscapes_cities(Split split) {
  static const std::vector<std::string_view> kTrain = {
      "aachen", "bochum",  "bremen",          "cologne",    "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
      "jena",   "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen",   "ulm",    "weimar",  "zurich"};
  static const std::vector<std::string_view> kVal = {"frankfurt", "lindau", "munster"};
  static const std::vector<std::string_view> kTest = {"berlin", "bielefeld", "bonn", "leverkusen", "mainz", "munich"};
  return split == Split::train ? kTrain : (split == Split::val ? kVal : kTest);
}

int synthetic_num_cities(Split split, int count) {
  if (count <= 0) return 0;
  const int available = static_cast<int>(cityscapes_cities(split).size());
  return std::min({available, count, 3 + count / 200});
}

SyntheticImageId synthetic_image_id(Split split, int index, int count) {
  SEG_CHECK(index >= 0 && index < count, "synthetic_image_id: index ", index, " outside a split of ", count, " images");
  const int64_t cities = synthetic_num_cities(split, count);
  const int64_t city = static_cast<int64_t>(index) * cities / count;
  const int64_t first = (city * count + cities - 1) / cities;  // the city's first image
  const int k = static_cast<int>(index - first);  // the image's place in its city
  const int per_sequence = static_cast<int>(kSyntheticAnnotatedFrames.size());
  return SyntheticImageId{cityscapes_cities(split)[static_cast<size_t>(city)], k / per_sequence,
                          kSyntheticAnnotatedFrames[static_cast<size_t>(k % per_sequence)]};
}

void validate_synthetic_options(const SyntheticOptions& o) {
  SEG_CHECK(!o.out_dir.empty(), "synthetic cityscapes: no output directory given (--out DIR)");
  SEG_CHECK(o.width >= kSyntheticMinWidth && o.width <= kSyntheticMaxWidth, "synthetic cityscapes: width ", o.width,
            " is outside [", kSyntheticMinWidth, ", ", kSyntheticMaxWidth, "]");
  SEG_CHECK(o.height >= kSyntheticMinHeight && o.height <= kSyntheticMaxHeight, "synthetic cityscapes: height ", o.height,
            " is outside [", kSyntheticMinHeight, ", ", kSyntheticMaxHeight, "]");
  SEG_CHECK(o.width % 2 == 0 && o.height % 2 == 0, "synthetic cityscapes: the size ", o.width, "x", o.height,
            " must be even in both directions");
  for (Split split : kSplits) {
    const int n = split_count(o, split);
    SEG_CHECK(n >= 0 && n <= kMaxImagesPerSplit, "synthetic cityscapes: ", n, " ", split_name(split),
              " images is outside [0, ", kMaxImagesPerSplit, "]");
  }
  SEG_CHECK(o.num_train + o.num_val + o.num_test > 0,
            "synthetic cityscapes: nothing to write (0 train, 0 val and 0 test images)");
  SEG_CHECK(o.threads >= 0 && o.threads <= kMaxThreads, "synthetic cityscapes: ", o.threads, " threads is outside [0, ",
            kMaxThreads, "] (0: one per hardware thread)");
  std::error_code ec;
  SEG_CHECK(!std::filesystem::exists(o.out_dir, ec) || std::filesystem::is_directory(o.out_dir, ec),
            "synthetic cityscapes: ", o.out_dir.string(), " exists and is not a directory");
}

std::vector<SyntheticFrame> render_synthetic_snippet(uint64_t seed, Split split, int index, int width,
                                                     int height, const std::vector<int>& frames) {
  SEG_CHECK(width >= kSyntheticMinWidth && width <= kSyntheticMaxWidth && height >= kSyntheticMinHeight &&
                height <= kSyntheticMaxHeight && width % 2 == 0 && height % 2 == 0,
            "render_synthetic_snippet: size ", width, "x", height, " must be even and within ", kSyntheticMinWidth, "x",
            kSyntheticMinHeight, "..", kSyntheticMaxWidth, "x", kSyntheticMaxHeight);
  SEG_CHECK(index >= 0, "render_synthetic_snippet: negative image index ", index);
  const Scene sc = make_scene(seed, split, index, width, height);
  RenderWork work;
  std::vector<SyntheticFrame> out(frames.size());
  for (size_t k = 0; k < frames.size(); ++k) {
    SEG_CHECK(frames[k] >= 0 && frames[k] < kSnippetLength, "render_synthetic_snippet: frame ", frames[k],
              " is outside 0..", kSnippetLength - 1);
    render_frame(sc, frames[k], work, out[k]);
  }
  return out;
}

SyntheticSummary write_synthetic_cityscapes(const SyntheticOptions& o, const SyntheticProgress& progress) {
  validate_synthetic_options(o);
  const auto start = std::chrono::steady_clock::now();
  SyntheticSummary summary;
  struct Item {
    Split split;
    int index;
  };
  std::vector<Item> items;
  for (Split split : kSplits) {
    const int n = split_count(o, split);
    const size_t s = static_cast<size_t>(split);
    summary.images[s] = n;
    summary.cities[s] = synthetic_num_cities(split, n);
    for (int i = 0; i < n; ++i) items.push_back(Item{split, i});
    // Directories first, in this thread.
    for (int c = 0; c < summary.cities[s]; ++c) {
      const std::string city(cityscapes_cities(split)[static_cast<size_t>(c)]);
      std::vector<std::filesystem::path> dirs = {o.out_dir / "leftImg8bit" / split_name(split) / city,
                                                 o.out_dir / "gtFine" / split_name(split) / city};
      if (o.sequences) dirs.push_back(o.out_dir / "leftImg8bit_sequence" / split_name(split) / city);
      for (const std::filesystem::path& dir : dirs) {
        std::error_code ec;
        std::filesystem::create_directories(dir, ec);
        SEG_CHECK(!ec, dir.string(), ": cannot create the directory (", ec.message(), ")");
      }
    }
  }
  const unsigned hardware = std::max(1u, std::thread::hardware_concurrency());
  const int threads = std::max(1, std::min(o.threads > 0 ? o.threads : static_cast<int>(hardware), static_cast<int>(items.size())));
  summary.threads = threads;
  std::atomic<size_t> next{0};
  std::atomic<bool> failed{false};
  std::mutex mutex;  // guards the summary, the progress callback and `error`
  std::exception_ptr error;
  int64_t done = 0;
  const int64_t total = static_cast<int64_t>(items.size());
  auto worker = [&]() {
    RenderWork work;
    while (!failed.load()) {
      const size_t k = next.fetch_add(1);
      if (k >= items.size()) break;
      try {
        const ItemResult r = write_item(o, items[k].split, items[k].index, work);
        std::lock_guard<std::mutex> lock(mutex);
        summary.files += r.files;
        summary.bytes += r.bytes;
        for (int l = 0; l < kNumLabelIds; ++l) summary.label_pixels[static_cast<size_t>(l)] += r.label_pixels[static_cast<size_t>(l)];
        ++done;
        if (progress) progress(done, total);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex);
        if (!error) error = std::current_exception();
        failed.store(true);
      }
    }
  };
  std::vector<std::thread> pool;
  for (int t = 1; t < threads; ++t) pool.emplace_back(worker);
  worker();
  for (std::thread& t : pool) t.join();
  if (error) std::rethrow_exception(error);
  summary.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  return summary;
}

std::string synthetic_cityscapes_usage() {
  return "usage: make_synthetic_cityscapes --out DIR [--width W] [--height H] [--train N] [--val N] [--test N]\n"
         "                                 [--seed S] [--threads T] [--no-sequences]\n"
         "Writes a synthetic dataset in the layout and naming of Cityscapes (leftImg8bit, gtFine labelIds /\n"
         "labelTrainIds / color, leftImg8bit_sequence with 30 frames per image, the 20th annotated; images\n"
         "annotated at frames 000019, 000049 and 000313, three per sequence).\n"
         "  --out DIR         dataset root (created if missing; files of the same names are replaced)\n"
         "  --width W         image width, even, 16..2048 (default 256)\n"
         "  --height H        image height, even, 8..1024 (default 128)\n"
         "  --train N         training images (default 6)\n"
         "  --val N           validation images (default 3)\n"
         "  --test N          test images (default 0)\n"
         "  --seed S          random seed, 0..2^64-1 (default 0): same seed, same bytes\n"
         "  --threads T       worker threads, 0 = one per hardware thread (default 0); never changes the output\n"
         "  --no-sequences    skip leftImg8bit_sequence (only the annotated frames)\n";
}

SyntheticCommandLine parse_synthetic_cityscapes_args(const std::vector<std::string>& args) {
  SyntheticCommandLine cl;
  const std::vector<std::string_view> known = {"--out",  "--width", "--height",  "--train",       "--val",
                                               "--test", "--seed",  "--threads", "--no-sequences"};
  std::vector<std::string> seen;
  bool have_out = false;
  if (std::find(args.begin(), args.end(), "--help") != args.end() || std::find(args.begin(), args.end(), "-h") != args.end()) {
    cl.help = true;  // --help wins over everything else
    return cl;
  }
  for (size_t i = 0; i < args.size(); ++i) {
    const std::string& arg = args[i];
    SEG_CHECK(arg.size() > 2 && arg.compare(0, 2, "--") == 0, "make_synthetic_cityscapes: unexpected argument '", arg,
              "' (options start with --; see --help)");
    std::string name = arg, value;
    bool inline_value = false;
    if (const size_t eq = arg.find('='); eq != std::string::npos) {
      name = arg.substr(0, eq);
      value = arg.substr(eq + 1);
      inline_value = true;
    }
    if (std::find(known.begin(), known.end(), name) == known.end()) {
      std::string list;
      for (std::string_view k : known) list += (list.empty() ? "" : ", ") + std::string(k);
      SEG_CHECK(false, "make_synthetic_cityscapes: unknown option '", name, "' (known: ", list, ", --help)");
    }
    SEG_CHECK(std::find(seen.begin(), seen.end(), name) == seen.end(), "make_synthetic_cityscapes: option ", name,
              " given twice");
    seen.push_back(name);
    if (name == "--no-sequences") {
      SEG_CHECK(!inline_value, "make_synthetic_cityscapes: option --no-sequences takes no value");
      cl.options.sequences = false;
      continue;
    }
    if (!inline_value) {
      SEG_CHECK(i + 1 < args.size(), "make_synthetic_cityscapes: option ", name, " needs a value");
      value = args[++i];
    }
    if (name == "--out") {
      SEG_CHECK(!value.empty(), "make_synthetic_cityscapes: --out needs a directory");
      cl.options.out_dir = value;
      have_out = true;
    } else if (name == "--seed") {
      cl.options.seed = parse_seed(value);
    } else if (name == "--width") {
      cl.options.width = static_cast<int>(parse_integer(name, value, kSyntheticMinWidth, kSyntheticMaxWidth));
    } else if (name == "--height") {
      cl.options.height = static_cast<int>(parse_integer(name, value, kSyntheticMinHeight, kSyntheticMaxHeight));
    } else if (name == "--threads") {
      cl.options.threads = static_cast<int>(parse_integer(name, value, 0, kMaxThreads));
    } else {
      const int n = static_cast<int>(parse_integer(name, value, 0, kMaxImagesPerSplit));
      if (name == "--train") cl.options.num_train = n;
      else if (name == "--val") cl.options.num_val = n;
      else cl.options.num_test = n;
    }
  }
  SEG_CHECK(have_out, "make_synthetic_cityscapes: --out DIR is required (see --help)");
  SEG_CHECK(cl.options.width % 2 == 0, "make_synthetic_cityscapes: --width ", cl.options.width, " is not even");
  SEG_CHECK(cl.options.height % 2 == 0, "make_synthetic_cityscapes: --height ", cl.options.height, " is not even");
  validate_synthetic_options(cl.options);
  return cl;
}

}  // namespace seg::data
