// Loader for the PyTorch reference fixtures in tests/golden/ (see make_golden.py there).
//
// A fixture file is plain text:
//   # comment line(s)                       (the generator writes exactly one)
//   <name> <ndim> <d0> ... <d{ndim-1}>      array header
//   <v0> <v1> ...                           numel values, whitespace separated
//   ... more header/value line pairs ...
// Blank lines and '#' lines between arrays are ignored. Numbers are parsed with
// std::strtod / std::strtoll rather than iostreams. Note strtod follows LC_NUMERIC;
// a C++ program runs in the "C" locale unless something calls setlocale, which the
// tests do not.
#pragma once

#include <cerrno>
#include <cmath>
#include <cstddef>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#ifndef CTNN_GOLDEN_DIR
#error "CTNN_GOLDEN_DIR is not defined: the build must pass -DCTNN_GOLDEN_DIR=\"<absolute path of tests/golden>\""
#endif

namespace ctnn::test {

struct GoldenArray {
  std::vector<long long> shape;  // empty for a 0-d scalar
  std::vector<double> values;    // row-major (C order), PyTorch layout

  std::size_t numel() const {
    std::size_t n = 1;
    for (long long d : shape) n *= static_cast<std::size_t>(d);
    return n;
  }
};

namespace golden_detail {

inline bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\v' || c == '\f';
}

// Splits a line on ASCII whitespace, without touching locales.
inline std::vector<std::string> split_ws(const std::string& line) {
  std::vector<std::string> out;
  std::size_t i = 0;
  const std::size_t n = line.size();
  while (i < n) {
    while (i < n && is_space(line[i])) ++i;
    std::size_t j = i;
    while (j < n && !is_space(line[j])) ++j;
    if (j > i) out.emplace_back(line.substr(i, j - i));
    i = j;
  }
  return out;
}

inline bool blank_or_comment(const std::string& line) {
  for (char c : line) {
    if (is_space(c)) continue;
    return c == '#';
  }
  return true;
}

[[noreturn]] inline void fail(const std::string& file, std::size_t line_no, const std::string& what) {
  std::ostringstream msg;
  msg << "golden fixture " << file;
  if (line_no > 0) msg << ":" << line_no;
  msg << ": " << what;
  throw std::runtime_error(msg.str());
}

// Parses a whole token as an integer; returns false if anything is left over.
inline bool parse_int(const std::string& tok, long long& out) {
  if (tok.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(tok.c_str(), &end, 10);
  if (errno != 0 || end != tok.c_str() + tok.size()) return false;
  out = v;
  return true;
}

// Parses a whole token as a floating-point number; returns false if anything is left over.
inline bool parse_double(const std::string& tok, double& out) {
  if (tok.empty()) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(tok.c_str(), &end);
  // ERANGE on underflow still yields a usable (denormal or zero) value; only reject overflow.
  if (end != tok.c_str() + tok.size()) return false;
  if (errno == ERANGE && (v == HUGE_VAL || v == -HUGE_VAL)) return false;
  out = v;
  return true;
}

}  // namespace golden_detail

class Golden {
 public:
  explicit Golden(const std::string& case_name)
      : path_(std::string(CTNN_GOLDEN_DIR) + "/" + case_name + ".txt") {
    load();
  }

  const GoldenArray& operator[](const std::string& name) const {
    auto it = index_.find(name);
    if (it == index_.end()) {
      golden_detail::fail(path_, 0, "no array named '" + name + "'");
    }
    return arrays_[it->second].second;
  }

  bool has(const std::string& name) const { return index_.count(name) != 0; }

  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(arrays_.size());
    for (const auto& entry : arrays_) out.push_back(entry.first);
    return out;
  }

  std::vector<float> floats(const std::string& name) const {
    const GoldenArray& a = (*this)[name];
    std::vector<float> out;
    out.reserve(a.values.size());
    for (double v : a.values) out.push_back(static_cast<float>(v));
    return out;
  }

  const std::string& path() const { return path_; }

 private:
  void load() {
    using namespace golden_detail;
    std::ifstream in(path_, std::ios::in | std::ios::binary);
    if (!in) fail(path_, 0, "cannot open file");

    std::string line;
    std::size_t line_no = 0;
    bool saw_any_line = false;
    while (std::getline(in, line)) {
      ++line_no;
      saw_any_line = true;
      if (blank_or_comment(line)) continue;

      // Header: <name> <ndim> <dims...>
      const std::vector<std::string> head = split_ws(line);
      if (head.size() < 2) fail(path_, line_no, "malformed array header (need '<name> <ndim> <dims...>')");
      const std::string& name = head[0];
      long long ndim = 0;
      if (!parse_int(head[1], ndim) || ndim < 0) {
        fail(path_, line_no, "array '" + name + "': bad ndim '" + head[1] + "'");
      }
      if (head.size() != static_cast<std::size_t>(ndim) + 2) {
        fail(path_, line_no, "array '" + name + "': header declares ndim " + head[1] + " but lists " +
                                 std::to_string(head.size() - 2) + " dimension(s)");
      }
      if (index_.count(name) != 0) fail(path_, line_no, "duplicate array '" + name + "'");

      GoldenArray arr;
      std::size_t numel = 1;
      for (long long k = 0; k < ndim; ++k) {
        long long d = 0;
        const std::string& tok = head[static_cast<std::size_t>(k) + 2];
        if (!parse_int(tok, d) || d < 0) fail(path_, line_no, "array '" + name + "': bad dimension '" + tok + "'");
        if (d != 0 && numel > std::numeric_limits<std::size_t>::max() / static_cast<std::size_t>(d)) {
          fail(path_, line_no, "array '" + name + "': shape too large");
        }
        numel *= static_cast<std::size_t>(d);
        arr.shape.push_back(d);
      }

      // Values: exactly numel numbers on the next line (which may be empty when numel == 0).
      const std::size_t header_line = line_no;
      if (!std::getline(in, line)) {
        fail(path_, header_line, "array '" + name + "': missing values line");
      }
      ++line_no;
      const std::vector<std::string> toks = split_ws(line);
      if (toks.size() != numel) {
        fail(path_, line_no, "array '" + name + "': expected " + std::to_string(numel) + " value(s), found " +
                                 std::to_string(toks.size()));
      }
      arr.values.reserve(numel);
      for (const std::string& tok : toks) {
        double v = 0.0;
        if (!parse_double(tok, v)) fail(path_, line_no, "array '" + name + "': bad number '" + tok + "'");
        arr.values.push_back(v);
      }

      index_.emplace(name, arrays_.size());
      arrays_.emplace_back(name, std::move(arr));
    }
    if (in.bad()) fail(path_, line_no, "read error");
    if (!saw_any_line) fail(path_, 0, "file is empty");
    if (arrays_.empty()) fail(path_, line_no, "file contains no arrays");
  }

  std::string path_;
  std::vector<std::pair<std::string, GoldenArray>> arrays_;  // file order
  std::map<std::string, std::size_t> index_;
};

}  // namespace ctnn::test
