// A fresh directory under the system temp directory, removed with everything in it.
#pragma once

#include <atomic>
#include <chrono>
#include <filesystem>
#include <random>
#include <string>
#include <system_error>

namespace ctnn::test {

struct TempDir {
  std::filesystem::path path;
  explicit TempDir(const std::string& prefix = "ctnn_test") {
    static std::atomic<unsigned> counter{0};
    std::random_device rd;
    for (;;) {
      const auto stamp = std::chrono::steady_clock::now().time_since_epoch().count();
      path = std::filesystem::temp_directory_path() /
             (prefix + "_" + std::to_string(rd()) + "_" + std::to_string(stamp) + "_" + std::to_string(counter++));
      if (std::filesystem::create_directory(path)) break;
    }
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;
};

}  // namespace ctnn::test
