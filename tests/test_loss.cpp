// CrossEntropyLoss: PyTorch parity, numerical stability and label validation.
#include "support/check.hpp"

#include <limits>

using namespace ctnn;
using namespace ctnn::test;

TEST_CASE("CrossEntropyLoss matches PyTorch: loss and gradient of the mean") {
  Golden g("cross_entropy");
  const auto logits = batch_from<Features<10>>(g, "logits");
  std::vector<int> labels;
  for (double v : g["labels"].values) labels.push_back(static_cast<int>(v));
  CrossEntropyLoss<10> loss;
  CHECK(loss.forward(logits, labels) == doctest::Approx(g["loss"].values[0]).epsilon(1e-6));
  expect_parity(loss.grad().to_nchw(), g["dlogits"].values, "dlogits");
}

TEST_CASE("CrossEntropyLoss is stable for huge logits") {
  Batch<Features<3>> logits(1);
  logits(0, 0, 0, 0) = 1000.0f;
  logits(0, 1, 0, 0) = 0.0f;
  logits(0, 2, 0, 0) = -1000.0f;
  CrossEntropyLoss<3> loss;
  const std::vector<int> right{0}, wrong{1};
  CHECK(loss.forward(logits, right) == 0.0f);
  CHECK(loss.forward(logits, wrong) == doctest::Approx(1000.0f));
  CHECK(std::isfinite(loss.grad()(0, 0, 0, 0)));
}

TEST_CASE("CrossEntropyLoss rejects bad labels with a message naming the sample") {
  Batch<Features<10>> logits(2);
  logits.fill(0.0f);
  CrossEntropyLoss<10> loss;
  const std::vector<int> bad{3, 10};
  CHECK_THROWS_WITH_AS(loss.forward(logits, bad), "CrossEntropyLoss: label 10 of sample 1 is outside [0, 10)",
                       std::invalid_argument);
  const std::vector<int> negative{-1, 0};
  CHECK_THROWS_AS(loss.forward(logits, negative), std::invalid_argument);
  const std::vector<int> short_labels{1};
  CHECK_THROWS_WITH_AS(loss.forward(logits, short_labels), "CrossEntropyLoss: 1 labels for a batch of 2",
                       std::invalid_argument);
}

TEST_CASE("argmax picks the largest logit, the first of a tie, and the first NaN, as torch.max(outputs, 1)") {
  Batch<Features<4>> logits(2);
  logits.fill(0.0f);
  logits(0, 2, 0, 0) = 5.0f;
  CHECK(argmax(logits, 0) == 2);
  CHECK(argmax(logits, 1) == 0);
  // Rows and the indices PyTorch 1.13's torch.max(t, 1) returns for them: [1, 0, 1, 0, 3].
  const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
  const float rows[5][4] = {{1, nan, 3, nan}, {nan, 1, 2, 0}, {2, 5, 5, 1}, {0, 0, 0, 0}, {1, 2, inf, nan}};
  Batch<Features<4>> t(5);
  for (int i = 0; i < 5; ++i)
    for (int k = 0; k < 4; ++k) t(i, k, 0, 0) = rows[i][k];
  const int want[5] = {1, 0, 1, 0, 3};
  for (int i = 0; i < 5; ++i) CHECK(argmax(t, i) == want[i]);
}

TEST_CASE("CrossEntropyLoss over shares of a batch: the parts add up to the whole batch's mean") {
  const auto logits = random_batch<Features<10>>(6, 3);
  const std::vector<int> labels{1, 4, 9, 0, 4, 7};
  const auto rows = logits.to_nchw();
  CrossEntropyLoss<10> whole, first, second;
  const float total = whole.forward(logits, labels);
  Batch<Features<10>> a(2), b(4);
  a.from_nchw(rows.data(), 2);
  b.from_nchw(rows.data() + 20, 4);
  const float part_a = first.forward(a, std::span<const int>(labels).first(2), 6);
  const float part_b = second.forward(b, std::span<const int>(labels).last(4), 6);
  CHECK(part_a + part_b == doctest::Approx(total).epsilon(1e-6));
  const auto g = whole.grad().to_nchw(), ga = first.grad().to_nchw(), gb = second.grad().to_nchw();
  CHECK(std::equal(ga.begin(), ga.end(), g.begin()));  // the same per-sample gradient, bit for bit
  CHECK(std::equal(gb.begin(), gb.end(), g.begin() + 20));
  CHECK_THROWS_AS(first.forward(b, std::span<const int>(labels).last(4), 3), std::invalid_argument);
}
