// Dropout: the masks, their scale, determinism across thread counts, evaluation identity.
#include "support/check.hpp"
#include <thread>

using namespace ctnn;
using namespace ctnn::test;

TEST_CASE("Dropout zeroes about p of the values and scales the rest by 1/(1-p)") {
  Network<Features<1000>, Sequential<Dropout<>>> net(3);
  Batch<Features<1000>> x(20);
  x.fill(1.0f);
  const auto& y = net.forward(x);
  std::size_t zeros = 0;
  for (std::size_t i = 0; i < y.size(); ++i) {
    CHECK((y.data()[i] == 0.0f || y.data()[i] == 2.0f));
    zeros += y.data()[i] == 0.0f;
  }
  CHECK(std::abs(static_cast<double>(zeros) / y.size() - 0.5) < 0.02);
}

TEST_CASE("Dropout's backward routes the gradient through the same mask") {
  Network<Features<64>, Sequential<Dropout<3, 10>>> net(4);
  const auto x = random_batch<Features<64>>(8, 1);
  const auto y = net.forward(x);
  Batch<Features<64>> dy(8), dx;
  dy.fill(1.0f);
  net.backward(x, dy, dx);
  for (std::size_t i = 0; i < x.size(); ++i) CHECK(dx.data()[i] == doctest::Approx(y.data()[i] / x.data()[i]));
}

TEST_CASE("Dropout is the identity in evaluation mode and with p = 0") {
  Network<Features<16>, Sequential<Dropout<>>> net(5);
  const auto x = random_batch<Features<16>>(4, 2);
  net.eval();
  CHECK(net.forward(x).to_nchw() == x.to_nchw());
  net.train();
  net.root().get<0>().p = 0.0;
  CHECK(net.forward(x).to_nchw() == x.to_nchw());
}

TEST_CASE("Dropout masks come from the seed: same seed same masks, at any thread count") {
  auto masks = [](std::uint64_t seed, int threads) {
    set_num_threads(threads);
    Network<Features<4096>, Sequential<Dropout<>>> net(seed);
    Batch<Features<4096>> x(16);
    x.fill(1.0f);
    auto a = net.forward(x).to_nchw();
    const auto b = net.forward(x).to_nchw();  // a new draw each forward
    a.insert(a.end(), b.begin(), b.end());
    return a;
  };
  const auto one = masks(9, 1), two = masks(9, 2), other = masks(10, 2);
  set_num_threads(0);
  CHECK(one == two);
  CHECK(one != other);
  CHECK(!std::equal(one.begin(), one.begin() + one.size() / 2, one.begin() + one.size() / 2));
}

TEST_CASE("Dropout on a share of the batch draws the whole batch's masks for its samples") {
  Network<Features<64>, Sequential<Dropout<>>> whole_net(11), share_net(11);
  Batch<Features<64>> whole(8), share(3);
  whole.fill(1.0f);
  share.fill(1.0f);
  const auto all = whole_net.forward(whole).to_nchw();  // (n, c) order
  BatchShard s;
  s.offset = 4;  // samples 4, 5, 6 of a batch of 8
  s.global = 8;
  std::vector<float> part;
  {
    ShardScope scope(s);
    part = share_net.forward(share).to_nchw();
  }
  CHECK(std::equal(part.begin(), part.end(), all.begin() + 4 * 64));
  CHECK(current_shard().global == 0);  // the scope restored the whole-batch default
  CHECK(!std::equal(part.begin(), part.end(), all.begin()));
}

TEST_CASE("A shard is the setting thread's own: another thread training at the same time sees the whole batch") {
  BatchShard s;
  s.offset = 4;
  s.global = 8;
  const ShardScope scope(s);
  int seen_global = -1;
  std::thread([&] { seen_global = current_shard().global; }).join();
  CHECK(seen_global == 0);
  CHECK(current_shard().global == 8);
}

TEST_CASE("Dropout<Num, Den> is p = Num / Den, the same double as the decimal literal") {
  // The spec takes two integers because clang before 18 rejects a double template parameter.
  CHECK(Dropout<>::bind<Features<4>>::default_p == 0.5);
  CHECK(Dropout<3, 10>::bind<Features<4>>::default_p == 0.3);
  CHECK(Dropout<1, 10>::bind<Features<4>>::default_p == 0.1);
  CHECK(Dropout<3, 10>::bind<Features<4>>::type_name() == "Dropout(p=0.3, inplace=False)");
  CHECK(Dropout<>::bind<Features<4>>::type_name() == "Dropout(p=0.5, inplace=False)");
  CHECK(Dropout<1, 3>::bind<Features<4>>::type_name() == "Dropout(p=0.3333333333333333, inplace=False)");
  CHECK(Dropout<1, 1>::bind<Features<4>>::type_name() == "Dropout(p=1.0, inplace=False)");
}
