// Transforms: each step against values worked out by hand, the fused pipeline against the
// separate steps, and everything against torchvision on a fixed case (tests/data/).
#include <doctest/doctest.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "ctnn/data/transforms.hpp"

#ifndef CTNN_TEST_DATA_DIR
#error "CTNN_TEST_DATA_DIR must be defined as the absolute path of tests/data (a string literal)"
#endif

using namespace ctnn::data;

namespace {

using Image = std::array<std::uint8_t, kImageBytes>;

std::size_t at(int c, int y, int x) { return static_cast<std::size_t>(c * kImagePlane + y * kImageSide + x); }

// Never zero, so a padded (zero) pixel cannot be mistaken for an image pixel; differs along
// every channel, row and column.
Image marked_image() {
  Image img{};
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) img[at(c, y, x)] = static_cast<std::uint8_t>(1 + (c * 83 + y * 32 + x) % 255);
  return img;
}

Image random_image(std::uint64_t seed) {
  ctnn::Rng rng(seed);
  Image img{};
  for (auto& v : img) v = static_cast<std::uint8_t>(rng.below(256));
  return img;
}

// Distance in units in the last place between two floats of the same sign.
long ulp_distance(float a, float b) {
  if (a == b) return 0;
  if (std::signbit(a) != std::signbit(b)) return 1L << 30;
  std::int32_t ia, ib;
  std::memcpy(&ia, &a, 4);
  std::memcpy(&ib, &b, 4);
  return std::labs(static_cast<long>(ia) - static_cast<long>(ib));
}

}  // namespace

TEST_CASE("ToTensor divides by 255 in float32") {
  const ToTensor t;
  CHECK(t(0) == 0.0f);
  CHECK(t(255) == 1.0f);
  CHECK(t(51) == 0.2f);  // 51 / 255 = 0.2 exactly, rounded once to float
  CHECK(t(128) == doctest::Approx(0.50196078).epsilon(1e-7));
  const std::uint8_t src[3] = {0, 51, 255};
  float dst[3];
  t(src, dst, 3);
  CHECK(dst[0] == 0.0f);
  CHECK(dst[1] == 0.2f);
  CHECK(dst[2] == 1.0f);
}

TEST_CASE("Normalize uses the assignment's mean and std per channel") {
  const Normalize n = Normalize::cifar10();
  CHECK(n.mean == std::array<float, 3>{0.4914f, 0.4822f, 0.4465f});
  CHECK(n.stddev == std::array<float, 3>{0.2023f, 0.1994f, 0.2010f});
  // (x - mean) / std, worked out in decimal.
  const double expected[3][4] = {{-2.429065744, 2.514087988, 0.042511122, -1.440434998},
                                 {-2.418254764, 2.596790371, 0.089267803, -1.415245737},
                                 {-2.221393035, 2.753731343, 0.266169154, -1.226368159}};
  const float xs[4] = {0.0f, 1.0f, 0.5f, 0.2f};
  for (int c = 0; c < 3; ++c)
    for (int i = 0; i < 4; ++i) CHECK(n(c, xs[i]) == doctest::Approx(expected[c][i]).epsilon(1e-6));
  // The float32 operation order torchvision uses: subtract, then divide.
  CHECK(n(1, 0.25f) == (0.25f - 0.4822f) / 0.1994f);

  SUBCASE("on a batch, every sample of a channel") {
    ImageBatch b(2);
    b.fill(0.5f);
    n(b);
    for (int s = 0; s < 2; ++s)
      for (int c = 0; c < 3; ++c) {
        CHECK(b(s, c, 0, 0) == doctest::Approx(expected[c][2]).epsilon(1e-6));
        CHECK(b(s, c, 31, 31) == b(s, c, 0, 0));
      }
  }
  SUBCASE("on one planar image") {
    std::vector<float> img(kImageBytes, 1.0f);
    n(img.data());
    for (int c = 0; c < 3; ++c) CHECK(img[at(c, 17, 3)] == doctest::Approx(expected[c][1]).epsilon(1e-6));
  }
}

TEST_CASE("RandomCrop pads with zeros and cuts the window at the given offsets") {
  const RandomCrop crop;  // padding 4, fill 0
  const Image src = marked_image();
  Image out{};

  SUBCASE("offsets (4, 4) leave the image unchanged") {
    crop(src.data(), out.data(), {4, 4});
    CHECK(out == src);
  }
  SUBCASE("offsets (0, 0): four zero rows on top, four zero columns on the left") {
    crop(src.data(), out.data(), {0, 0});
    for (int c = 0; c < 3; ++c) {
      CHECK(out[at(c, 0, 0)] == 0);
      CHECK(out[at(c, 3, 31)] == 0);   // still in the top padding
      CHECK(out[at(c, 31, 3)] == 0);   // still in the left padding
      CHECK(out[at(c, 4, 4)] == src[at(c, 0, 0)]);
      CHECK(out[at(c, 31, 31)] == src[at(c, 27, 27)]);
      CHECK(out[at(c, 10, 20)] == src[at(c, 6, 16)]);
    }
  }
  SUBCASE("offsets (8, 8): the bottom-right corner of the padded image") {
    crop(src.data(), out.data(), {8, 8});
    for (int c = 0; c < 3; ++c) {
      CHECK(out[at(c, 0, 0)] == src[at(c, 4, 4)]);
      CHECK(out[at(c, 27, 27)] == src[at(c, 31, 31)]);
      CHECK(out[at(c, 28, 0)] == 0);
      CHECK(out[at(c, 0, 28)] == 0);
      CHECK(out[at(c, 31, 31)] == 0);
    }
  }
  SUBCASE("offsets (2, 7): shifted down by 2 and left by 3") {
    crop(src.data(), out.data(), {2, 7});
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) {
          const int sy = y - 2, sx = x + 3;
          const bool inside = sy >= 0 && sx < 32;
          CHECK(out[at(c, y, x)] == (inside ? src[at(c, sy, sx)] : 0));
        }
    CHECK(out[at(0, 1, 5)] == 0);
    CHECK(out[at(0, 2, 0)] == src[at(0, 0, 3)]);
    CHECK(out[at(2, 31, 28)] == src[at(2, 29, 31)]);
    CHECK(out[at(2, 31, 29)] == 0);
  }
  SUBCASE("offsets outside [0, 8] are rejected") {
    CHECK_THROWS_AS(crop(src.data(), out.data(), {9, 0}), std::invalid_argument);
    CHECK_THROWS_AS(crop(src.data(), out.data(), {0, -1}), std::invalid_argument);
  }
  SUBCASE("a padding the transform cannot use is refused; one near int's limit draws no overflow") {
    // (review finding: 2 * padding + 1 overflowed int for a padding of 2^30, UB caught by UBSan)
    CHECK_THROWS_WITH_AS(CifarTransform(true, {}, RandomCrop{1 << 30}),
                         "ctnn::data::CifarTransform: crop padding must be between 0 and 1048576, got 1073741824",
                         std::invalid_argument);
    CHECK_THROWS_AS(CifarTransform(true, {}, RandomCrop{-1}), std::invalid_argument);
    ctnn::Rng rng(1);
    const CropParams p = RandomCrop{(1 << 30) - 1}.get_params(rng);  // (offsets up to 2^31 - 2)
    CHECK(p.top >= 0);
    CHECK(p.left >= 0);
  }
}

TEST_CASE("RandomHorizontalFlip mirrors the columns of every row and channel") {
  const RandomHorizontalFlip flip;
  const Image src = marked_image();
  Image out{}, back{};
  flip(src.data(), out.data(), true);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; ++y)
      for (int x = 0; x < 32; ++x) CHECK(out[at(c, y, x)] == src[at(c, y, 31 - x)]);
  flip(out.data(), back.data(), true);
  CHECK(back == src);
  flip(src.data(), out.data(), false);
  CHECK(out == src);
}

TEST_CASE("get_params draws crop offsets uniformly in [0, 8] and flips with p = 0.5") {
  const RandomCrop crop;
  const RandomHorizontalFlip flip;
  ctnn::Rng rng(2024);
  std::array<int, 9> tops{}, lefts{};
  int flips = 0, same = 0;
  const int draws = 9000;
  for (int i = 0; i < draws; ++i) {
    const CropParams p = crop.get_params(rng);
    REQUIRE(p.top >= 0);
    REQUIRE(p.top <= 8);
    REQUIRE(p.left >= 0);
    REQUIRE(p.left <= 8);
    ++tops[static_cast<std::size_t>(p.top)];
    ++lefts[static_cast<std::size_t>(p.left)];
    same += p.top == p.left;
    flips += flip.get_params(rng);
  }
  for (int v = 0; v < 9; ++v) {  // expected 1000 each; 4 sigma is about 120
    CHECK(tops[static_cast<std::size_t>(v)] > 850);
    CHECK(lefts[static_cast<std::size_t>(v)] > 850);
  }
  CHECK(same < draws / 5);  // independent draws: about 1 in 9 agree
  CHECK(flips > draws * 0.47);
  CHECK(flips < draws * 0.53);
  ctnn::Rng r0(1);
  const RandomHorizontalFlip never{0.0}, always{1.0};
  for (int i = 0; i < 100; ++i) {
    CHECK_FALSE(never.get_params(r0));
    CHECK(always.get_params(r0));
  }
}

TEST_CASE("CifarTransform equals RandomCrop, RandomHorizontalFlip, ToTensor, Normalize applied in turn") {
  const CifarTransform tf = CifarTransform::train();
  const ToTensor to_tensor;
  const Normalize normalize;
  ctnn::Rng rng(7);
  for (int trial = 0; trial < 40; ++trial) {
    const Image src = random_image(100 + static_cast<std::uint64_t>(trial));
    const AugmentParams p = tf.draw(rng);

    Image cropped{}, flipped{};
    tf.crop()(src.data(), cropped.data(), p.crop);
    tf.flip()(cropped.data(), flipped.data(), p.flip);
    std::vector<float> expected(kImageBytes);
    to_tensor(flipped.data(), expected.data(), kImageBytes);
    normalize(expected.data());

    std::vector<float> fused(kImageBytes);
    tf(src.data(), p, fused.data(), kImagePlane);
    CHECK(std::memcmp(fused.data(), expected.data(), expected.size() * sizeof(float)) == 0);

    // The same image written into slot 1 of a batch of 3, in (C, N, H, W) layout.
    ImageBatch b(3);
    b.fill(-99.0f);
    tf(src.data(), p, b, 1);
    bool same = true;
    for (int c = 0; c < 3; ++c)
      for (int y = 0; y < 32; ++y)
        for (int x = 0; x < 32; ++x) same = same && b(1, c, y, x) == expected[at(c, y, x)];
    CHECK(same);
    CHECK(b(0, 2, 31, 31) == -99.0f);  // neighbours untouched
    CHECK(b(2, 0, 0, 0) == -99.0f);
  }
}

TEST_CASE("Padded pixels become (0 - mean) / std after Normalize") {
  const CifarTransform tf = CifarTransform::train();
  const Image src = marked_image();
  std::vector<float> out(kImageBytes);
  tf(src.data(), {{0, 0}, false}, out.data(), kImagePlane);
  const double border[3] = {-2.429065744, -2.418254764, -2.221393035};
  for (int c = 0; c < 3; ++c) {
    CHECK(out[at(c, 0, 0)] == doctest::Approx(border[c]).epsilon(1e-6));
    CHECK(out[at(c, 31, 2)] == out[at(c, 0, 0)]);
    CHECK(out[at(c, 4, 4)] == Normalize{}(c, ToTensor{}(src[at(c, 0, 0)])));
  }
}

TEST_CASE("The test transform is ToTensor + Normalize and draws no random numbers") {
  const CifarTransform tf = CifarTransform::test();
  CHECK_FALSE(tf.augments());
  ctnn::Rng rng(5), copy(5);
  const AugmentParams p = tf.draw(rng);
  CHECK(p == tf.identity());
  CHECK(rng.next() == copy.next());

  const Image src = marked_image();
  std::vector<float> out(kImageBytes);
  tf(src.data(), p, out.data(), kImagePlane);
  for (int c = 0; c < 3; ++c)
    for (int y = 0; y < 32; y += 5)
      for (int x = 0; x < 32; x += 3)
        CHECK(out[at(c, y, x)] == (static_cast<float>(src[at(c, y, x)]) / 255.0f - Normalize{}.mean[static_cast<std::size_t>(c)]) /
                                      Normalize{}.stddev[static_cast<std::size_t>(c)]);
}

TEST_CASE("Transforms match torchvision on the fixed fixture case") {
  const std::string path = std::string(CTNN_TEST_DATA_DIR) + "/transform_fixture.txt";
  std::ifstream in(path);
  REQUIRE_MESSAGE(in.good(), "cannot open " << path << " (regenerate with tests/data/make_transform_fixture.py)");

  std::map<int, Image> images;
  int cases = 0;
  long worst_ulp = 0;
  std::string header, values;
  while (std::getline(in, header)) {
    if (header.empty() || header[0] == '#') continue;
    REQUIRE(std::getline(in, values));
    std::istringstream h(header), v(values);
    std::string kind;
    h >> kind;
    if (kind == "image") {
      int k;
      h >> k;
      Image img{};
      for (auto& px : img) {
        int b = -1;
        v >> b;
        REQUIRE((b >= 0 && b <= 255));
        px = static_cast<std::uint8_t>(b);
      }
      images[k] = img;
      continue;
    }
    REQUIRE(kind == "case");
    std::string name;
    h >> name;
    std::map<std::string, int> field;
    std::string token;
    while (h >> token) {
      const auto eq = token.find('=');
      if (eq != std::string::npos) field[token.substr(0, eq)] = std::stoi(token.substr(eq + 1));
    }
    CAPTURE(name);
    REQUIRE(images.count(field.at("image")) == 1);
    std::vector<float> expected(kImageBytes);
    for (auto& e : expected) {
      std::string s;
      REQUIRE(static_cast<bool>(v >> s));
      e = std::strtof(s.c_str(), nullptr);
    }

    const bool is_test = name.rfind("test_", 0) == 0;
    const CifarTransform tf = is_test ? CifarTransform::test() : CifarTransform::train();
    const AugmentParams p{{field.at("top"), field.at("left")}, field.at("flip") != 0};
    if (is_test) CHECK(p == tf.identity());
    std::vector<float> got(kImageBytes);
    tf(images[field.at("image")].data(), p, got.data(), kImagePlane);
    for (int i = 0; i < kImageBytes; ++i) {
      const long d = ulp_distance(got[static_cast<std::size_t>(i)], expected[static_cast<std::size_t>(i)]);
      worst_ulp = std::max(worst_ulp, d);
      if (d > 1) {
        FAIL_CHECK("value " << i << ": ctnn " << got[static_cast<std::size_t>(i)] << ", torchvision "
                            << expected[static_cast<std::size_t>(i)]);
        break;
      }
    }
    ++cases;
  }
  CHECK(images.size() == 2);
  CHECK(cases == 6);
  MESSAGE("largest difference from torchvision: " << worst_ulp << " ulp");
  // The arithmetic is the same, so the results are expected to be identical.
  CHECK(worst_ulp == 0);
}
