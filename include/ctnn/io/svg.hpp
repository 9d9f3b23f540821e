// Pictures of a training run as plain SVG, drawn by ctnn itself (no plotting library): the loss
// curve of ctnn-train's log and a confusion matrix as a heat map. The files are plain SVG 1.1
// (valid XML, every text escaped), deterministic (the same log gives the same bytes) and written
// atomically, like every file ctnn writes.
//
//   auto log = ctnn::io::read_training_log("out/resnet50_train_log.csv");
//   ctnn::io::write_svg("out/resnet50_train.svg", ctnn::io::training_curve_svg(log, "resnet50"));
//   ctnn::io::write_svg("confusion.svg", ctnn::io::confusion_matrix_svg(result.confusion, class_names, "resnet50"));
#pragma once

#include <algorithm>
#include <array>
#include <cctype>
#include <cmath>
#include <cstdlib>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "ctnn/io/file.hpp"

namespace ctnn::io {

namespace detail {
// The length of the well-formed UTF-8 sequence at s[i] (RFC 3629: no overlong forms, no
// surrogates, nothing above U+10FFFF), or 0 where there is none.
inline std::size_t utf8_sequence(std::string_view s, std::size_t i) {
  const auto at = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned c = at(i);
  if (c < 0x80) return 1;
  const std::size_t n = c >= 0xc2 && c <= 0xdf ? 2 : c >= 0xe0 && c <= 0xef ? 3 : c >= 0xf0 && c <= 0xf4 ? 4 : 0;
  if (n == 0 || i + n > s.size()) return 0;
  for (std::size_t k = 1; k < n; ++k)
    if ((at(i + k) & 0xc0) != 0x80) return 0;
  const unsigned second = at(i + 1);
  if ((c == 0xe0 && second < 0xa0) || (c == 0xed && second > 0x9f) || (c == 0xf0 && second < 0x90) ||
      (c == 0xf4 && second > 0x8f))
    return 0;
  return n;
}
}  // namespace detail

// `s` fit for XML element content and attribute values of a UTF-8 document: bytes that are not
// UTF-8 (a class name from a Latin-1 batches.meta.txt) become '?', as control characters do; an
// XML reader refuses the whole file for one of them.
inline std::string xml_escape(std::string_view s) {
  std::string out;
  out.reserve(s.size());
  for (std::size_t i = 0; i < s.size(); ++i) {
    const char c = s[i];
    if (static_cast<unsigned char>(c) >= 0x80) {
      const std::size_t n = detail::utf8_sequence(s, i);
      if (n == 0) {
        out += '?';
      } else {
        out.append(s.substr(i, n));
        i += n - 1;
      }
      continue;
    }
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      case '\'': out += "&apos;"; break;
      default:
        // XML 1.0 allows no control characters but tab, newline and carriage return.
        if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') out += '?';
        else out += c;
    }
  }
  return out;
}

// An SVG document built element by element; coordinates in pixels, origin top left.
class SvgDocument {
 public:
  SvgDocument(double width, double height) : width_(width), height_(height) {}

  // Numbers with two decimals: enough for a screen, and the same text on every machine.
  static std::string num(double v) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.2f", std::abs(v) < 0.005 ? 0.0 : v);
    return buf;
  }
  // `attributes` is raw attribute text (`class="axis"`); callers escape what they put in it.
  void line(double x1, double y1, double x2, double y2, const std::string& attributes) {
    body_ += "<line x1=\"" + num(x1) + "\" y1=\"" + num(y1) + "\" x2=\"" + num(x2) + "\" y2=\"" + num(y2) + "\" " +
             attributes + "/>\n";
  }
  void rect(double x, double y, double w, double h, const std::string& attributes, const std::string& tooltip = "") {
    body_ += "<rect x=\"" + num(x) + "\" y=\"" + num(y) + "\" width=\"" + num(w) + "\" height=\"" + num(h) + "\" " +
             attributes;
    body_ += tooltip.empty() ? "/>\n" : "><title>" + xml_escape(tooltip) + "</title></rect>\n";
  }
  void text(double x, double y, const std::string& content, const std::string& attributes = "") {
    body_ += "<text x=\"" + num(x) + "\" y=\"" + num(y) + "\"" + (attributes.empty() ? "" : " " + attributes) + ">" +
             xml_escape(content) + "</text>\n";
  }
  void polyline(const std::vector<std::array<double, 2>>& points, const std::string& attributes) {
    body_ += "<polyline " + attributes + " points=\"";
    // Appended piece by piece: `"," + std::string` trips a false -Wrestrict in GCC 12.
    for (std::size_t i = 0; i < points.size(); ++i) {
      if (i) body_ += ' ';
      body_ += num(points[i][0]);
      body_ += ',';
      body_ += num(points[i][1]);
    }
    body_ += "\"/>\n";
  }
  void raw(const std::string& element) { body_ += element; }

  // The whole file; `style` is a CSS style sheet for the classes used.
  std::string str(const std::string& title, const std::string& style) const {
    return "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
           "<svg xmlns=\"http://www.w3.org/2000/svg\" version=\"1.1\" width=\"" + num(width_) + "\" height=\"" +
           num(height_) + "\" viewBox=\"0 0 " + num(width_) + " " + num(height_) + "\">\n<title>" +
           xml_escape(title) + "</title>\n<style>\n" + style + "</style>\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n" +
           body_ + "</svg>\n";
  }

 private:
  double width_, height_;
  std::string body_;
};

// Writes an SVG file atomically (a complete old file or a complete new one, never a cut one).
[[gnu::cold]] inline void write_svg(const std::filesystem::path& path, const std::string& svg) {
  write_file_atomically(path, [&](const ByteSink& sink) {
    sink(reinterpret_cast<const std::uint8_t*>(svg.data()), svg.size());
  });
}

// ctnn-train's loss log (<model>_train_log.csv): a header `epoch,step,loss,running_loss,lr`, one
// row per optimizer step (the 1-based epoch, the step within it, the batch's loss, the epoch's
// running mean and the learning rate used), and `# test accuracy,X` lines after a run.
struct TrainingLog {
  struct Step {
    int epoch = 0, step = 0;
    double loss = 0, running_loss = 0, lr = 0;
  };
  std::vector<Step> steps;
  std::optional<double> test_accuracy;  // the last `# test accuracy` line, in percent
};

// Reads a loss log. A last line without its newline (a run killed while writing it) is left
// out; any other malformed line throws std::runtime_error naming the file and line.
[[gnu::cold]] inline TrainingLog read_training_log(const std::filesystem::path& csv) {
  std::error_code ec;
  if (std::filesystem::is_directory(csv, ec)) throw std::runtime_error(csv.string() + ": is a directory, not a training log");
  std::ifstream in(csv, std::ios::binary);
  if (!in) throw std::runtime_error(csv.string() + ": cannot open the training log");
  std::stringstream whole;
  whole << in.rdbuf();
  const std::string text = whole.str();
  if (text.empty()) throw std::runtime_error(csv.string() + ": is empty, not a ctnn-train loss log (no header)");
  TrainingLog log;
  std::size_t at = 0;
  int line_no = 0;
  auto bad = [&](const std::string& what) {
    throw std::runtime_error(csv.string() + ":" + std::to_string(line_no) + ": " + what);
  };
  // A whole number or decimal field, to the end of the field.
  auto number = [&](const std::string& field, const char* name) {
    // strtod, not stod: stod throws on a value below the normal range (the log's writer prints
    // a learning rate of 1e-320 as 9.99989e-321, and that is a number).
    char* end = nullptr;
    const double v = field.empty() ? 0.0 : std::strtod(field.c_str(), &end);
    if (field.empty() || end != field.c_str() + field.size() || std::isspace(static_cast<unsigned char>(field[0])))
      bad(std::string("the ") + name + " '" + printable(field, 40) + "' is not a number");
    return v;
  };
  while (at < text.size()) {
    const std::size_t end = text.find('\n', at);
    if (end == std::string::npos) break;  // cut short: not a whole row
    std::string line = text.substr(at, end - at);
    at = end + 1;
    ++line_no;
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (line_no == 1) {
      if (line.rfind("epoch,step,loss,running_loss,lr", 0) != 0)
        bad("not a ctnn-train loss log (the header is not 'epoch,step,loss,running_loss,lr')");
      continue;
    }
    if (line.empty()) continue;
    if (line[0] == '#') {
      const std::string tag = "# test accuracy,";
      if (line.rfind(tag, 0) == 0) log.test_accuracy = number(line.substr(tag.size()), "test accuracy");
      continue;  // other comments carry nothing to draw
    }
    std::vector<std::string> fields;
    std::stringstream ss(line);
    for (std::string f; std::getline(ss, f, ',');) fields.push_back(f);
    if (fields.size() != 5) bad("expected 5 fields (epoch,step,loss,running_loss,lr), got " + std::to_string(fields.size()));
    TrainingLog::Step s;
    const double e = number(fields[0], "epoch"), b = number(fields[1], "step");
    if (e != std::floor(e) || e < 1 || e > 1e9 || b != std::floor(b) || b < 1 || b > 1e9)
      bad("the epoch and step must be whole numbers from 1");
    s.epoch = static_cast<int>(e);
    s.step = static_cast<int>(b);
    s.loss = number(fields[2], "loss");
    s.running_loss = number(fields[3], "running loss");
    s.lr = number(fields[4], "learning rate");
    log.steps.push_back(s);
  }
  return log;
}

namespace detail {
// About `count` round tick values (1, 2 or 5 times a power of ten apart) covering [lo, hi].
inline std::vector<double> nice_ticks(double lo, double hi, int count) {
  if (!(hi > lo) || !std::isfinite(hi - lo)) return {lo};
  const double raw = (hi - lo) / count;
  const double power = std::pow(10.0, std::floor(std::log10(raw)));
  // (a range of a few subnormals: the power of ten underflows to 0, and no step would move)
  if (!(power > 0) || !std::isfinite(power) || !(lo + power > lo)) return {lo, hi};
  double step = power;
  for (const double m : {1.0, 2.0, 5.0, 10.0})
    if (m * power >= raw) {
      step = m * power;
      break;
    }
  std::vector<double> ticks;
  for (double t = std::ceil(lo / step - 1e-9) * step; t <= hi + step * 1e-9; t += step) ticks.push_back(t);
  if (ticks.empty()) ticks = {lo, hi};
  return ticks;
}
inline std::string tick_label(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%g", std::abs(v) < 1e-12 ? 0.0 : v);
  return buf;
}
inline std::string percent(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f %%", v);
  return buf;
}
inline std::string scientific(double v) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g", v);
  return buf;
}
}  // namespace detail

// The loss curve of a run: every step's loss and the epoch's running mean against the step
// (counted across epochs), a dashed mark where each epoch starts, a mark with the new value where
// the learning rate changes, and the test accuracy when the log has it. The y range fits 98 % of
// the steps' losses and of their running means, so that a few spikes (and the running mean of
// the steps just after a spike at an epoch's start) do not flatten the rest: values above it are
// drawn at its top edge, and the legend says at how many steps.
[[gnu::cold]] inline std::string training_curve_svg(const TrainingLog& log, const std::string& title) {
  constexpr double W = 980, H = 520, left = 80, right = 700, top = 60, bottom = 450;
  SvgDocument svg(W, H);
  const auto& steps = log.steps;
  const std::size_t n = steps.size();

  // The 98th percentile (rounded up: a short log keeps its highest values in range).
  auto p98 = [](std::vector<double> v) {
    std::sort(v.begin(), v.end());
    return v.empty() ? 0.0 : v[static_cast<std::size_t>(std::ceil(0.98 * static_cast<double>(v.size() - 1)))];
  };
  std::vector<double> losses, means;
  for (const auto& s : steps) {
    if (std::isfinite(s.loss)) losses.push_back(s.loss);
    if (std::isfinite(s.running_loss)) means.push_back(s.running_loss);
  }
  double y_max = std::max(p98(losses), p98(means));
  // Finite but beyond a float (a diverged run's 1e308): the axis stops at float's largest.
  y_max = std::min(y_max, static_cast<double>(std::numeric_limits<float>::max()));
  if (!(y_max > 0)) y_max = 1;
  const auto y_ticks = detail::nice_ticks(0, y_max * 1.05, 6);
  y_max = std::max(y_ticks.back(), y_max * 1.05);
  const double x_max = n > 1 ? static_cast<double>(n) : 2.0;  // steps are numbered from 1
  auto X = [&](double step) { return left + (step - 1) / (x_max - 1) * (right - left); };
  auto Y = [&](double v) { return bottom - std::clamp(v, 0.0, y_max) / y_max * (bottom - top); };

  // Grid, ticks and axes.
  for (const double t : y_ticks) {
    svg.line(left, Y(t), right, Y(t), "class=\"grid\"");
    svg.text(left - 8, Y(t) + 4, detail::tick_label(t), "class=\"tick\" text-anchor=\"end\"");
  }
  for (const double t : detail::nice_ticks(1, x_max, 8)) {
    svg.line(X(t), bottom, X(t), bottom + 5, "class=\"axis\"");
    svg.text(X(t), bottom + 20, detail::tick_label(t), "class=\"tick\" text-anchor=\"middle\"");
  }
  svg.line(left, top, left, bottom, "class=\"axis\"");
  svg.line(left, bottom, right, bottom, "class=\"axis\"");
  svg.text((left + right) / 2, H - 30, "step (all epochs)", "class=\"label\" text-anchor=\"middle\"");
  svg.text(22, (top + bottom) / 2, "loss (cross-entropy)",
           "class=\"label\" text-anchor=\"middle\" transform=\"rotate(-90 22 " + SvgDocument::num((top + bottom) / 2) + ")\"");
  std::string heading = title + ": training loss";
  if (log.test_accuracy) heading += ", test accuracy " + detail::percent(*log.test_accuracy);
  svg.text(left, 32, heading, "class=\"title\"");

  // Epoch starts and learning-rate changes, under the curves. Every one is marked; a label is
  // written only where it does not run into the previous one (a long run has many epochs).
  double epoch_label_x = -1e9, lr_label_x = -1e9;
  for (std::size_t i = 1; i < n; ++i) {
    const double x = X(static_cast<double>(i + 1));
    if (steps[i].epoch != steps[i - 1].epoch) {
      svg.line(x, top, x, bottom, "class=\"epoch-mark\"");
      if (x - epoch_label_x >= 55 && x + 50 <= right) {
        svg.text(x + 3, top + 12, "epoch " + std::to_string(steps[i].epoch), "class=\"note\"");
        epoch_label_x = x;
      }
    }
    if (steps[i].lr != steps[i - 1].lr) {
      svg.line(x, top, x, bottom, "class=\"lr-change\"");
      if (x - lr_label_x >= 75 && x + 70 <= right) {
        svg.text(x + 3, bottom - 8, "lr " + detail::scientific(steps[i].lr), "class=\"note lr\"");
        lr_label_x = x;
      }
    }
  }

  std::vector<std::array<double, 2>> loss_points, mean_points;
  std::size_t clipped = 0;
  for (std::size_t i = 0; i < n; ++i) {
    const double x = X(static_cast<double>(i + 1));
    clipped += !(steps[i].loss <= y_max) || !(steps[i].running_loss <= y_max);
    loss_points.push_back({x, Y(std::isfinite(steps[i].loss) ? steps[i].loss : y_max)});
    mean_points.push_back({x, Y(std::isfinite(steps[i].running_loss) ? steps[i].running_loss : y_max)});
  }
  if (n > 0) {
    svg.polyline(loss_points, "class=\"loss\"");
    svg.polyline(mean_points, "class=\"running-mean\"");
  } else {
    svg.text((left + right) / 2, (top + bottom) / 2, "no steps logged", "class=\"label\" text-anchor=\"middle\"");
  }

  // Legend, right of the plot.
  const double lx = right + 30;
  double ly = top + 10;
  auto entry = [&](const std::string& cls, const std::string& label) {
    svg.line(lx, ly - 4, lx + 28, ly - 4, "class=\"" + cls + "\"");
    svg.text(lx + 36, ly, label, "class=\"legend\"");
    ly += 24;
  };
  entry("loss", "loss of each step");
  entry("running-mean", "running mean of the epoch");
  entry("epoch-mark", "start of an epoch");
  entry("lr-change", "learning-rate change");
  ly += 6;
  auto note = [&](const std::string& text) {
    svg.text(lx, ly, text, "class=\"legend\"");
    ly += 20;
  };
  note(std::to_string(n) + " steps, " + std::to_string(n ? steps.back().epoch : 0) + " epoch(s)");
  if (n) note("learning rate at first " + detail::scientific(steps.front().lr));
  if (n) note("last running mean " + detail::tick_label(std::round(steps.back().running_loss * 1e4) / 1e4));
  note(log.test_accuracy ? "test accuracy " + detail::percent(*log.test_accuracy) : "no test accuracy yet");
  if (clipped) {
    note(std::to_string(clipped) + " step(s) above " + detail::scientific(y_max) + ":");
    note("drawn at the top edge");
  }

  const std::string style =
      "text { font-family: sans-serif; fill: #222; }\n"
      ".title { font-size: 17px; font-weight: bold; }\n"
      ".label { font-size: 14px; }\n"
      ".tick, .legend { font-size: 12px; }\n"
      ".note { font-size: 11px; fill: #555; }\n"
      ".note.lr { fill: #b35806; }\n"
      ".axis { stroke: #222; stroke-width: 1; }\n"
      ".grid { stroke: #ddd; stroke-width: 1; }\n"
      ".loss { fill: none; stroke: #9ecae1; stroke-width: 1; }\n"
      ".running-mean { fill: none; stroke: #08519c; stroke-width: 2.5; }\n"
      ".epoch-mark { stroke: #777; stroke-width: 1; stroke-dasharray: 5 4; }\n"
      ".lr-change { stroke: #e6550d; stroke-width: 1.5; }\n";
  return svg.str(heading, style);
}

// A confusion matrix (rows: true class, columns: predicted) as a heat map: each cell shaded by
// its share of the true class's images (so every row reads as that class's recall and its
// confusions, whatever the class sizes), with its count written in it and as a tooltip.
[[gnu::cold]] inline std::string confusion_matrix_svg(const std::vector<std::vector<long>>& matrix,
                                        const std::vector<std::string>& class_names, const std::string& title) {
  const std::size_t k = matrix.size();
  for (const auto& row : matrix)
    if (row.size() != k) throw std::invalid_argument("confusion_matrix_svg: the matrix is not square");
  auto name = [&](std::size_t c) { return c < class_names.size() ? class_names[c] : std::to_string(c); };
  constexpr double cell = 46, left = 150, top = 70;
  const double size = cell * static_cast<double>(k);
  long total = 0, correct = 0;
  for (std::size_t t = 0; t < k; ++t)
    for (std::size_t p = 0; p < k; ++p) {
      total += matrix[t][p];
      if (t == p) correct += matrix[t][p];
    }
  std::string heading = title + ": confusion matrix";
  if (total > 0) {
    char acc[64];
    std::snprintf(acc, sizeof acc, ", accuracy %.2f %% of %ld images", 100.0 * static_cast<double>(correct) / static_cast<double>(total), total);
    heading += acc;
  }
  // Wide enough for the title too (up to 10 px a character in bold at its size).
  const double W = std::max(left + size + 130, 40 + 10.0 * static_cast<double>(heading.size())), H = top + size + 130;
  SvgDocument svg(W, H);
  svg.text(20, 32, heading, "class=\"title\"");

  // White to dark blue by share; the count is white on the darker half.
  auto shade = [](double share) {
    const double from[3] = {255, 255, 255}, to[3] = {8, 48, 107};
    char buf[16];
    int c[3];
    for (int i = 0; i < 3; ++i) c[i] = static_cast<int>(std::lround(from[i] + (to[i] - from[i]) * share));
    std::snprintf(buf, sizeof buf, "#%02x%02x%02x", c[0], c[1], c[2]);
    return std::string(buf);
  };
  for (std::size_t t = 0; t < k; ++t) {
    long row_total = 0;
    for (const long v : matrix[t]) row_total += v;
    const double y = top + cell * static_cast<double>(t);
    svg.text(left - 8, y + cell / 2 + 4, name(t), "class=\"class-name\" text-anchor=\"end\"");
    for (std::size_t p = 0; p < k; ++p) {
      const double x = left + cell * static_cast<double>(p);
      const double share = row_total > 0 ? static_cast<double>(matrix[t][p]) / static_cast<double>(row_total) : 0.0;
      char pct[32];
      std::snprintf(pct, sizeof pct, "%.1f", 100.0 * share);
      svg.rect(x, y, cell, cell,
               "class=\"cell\" data-true=\"" + std::to_string(t) + "\" data-predicted=\"" + std::to_string(p) +
                   "\" fill=\"" + shade(share) + "\"",
               "true " + name(t) + ", predicted " + name(p) + ": " + std::to_string(matrix[t][p]) + " (" + pct +
                   " % of " + name(t) + ")");
      svg.text(x + cell / 2, y + cell / 2 + 4, std::to_string(matrix[t][p]),
               std::string("class=\"count") + (share > 0.5 ? " dark" : "") + "\" text-anchor=\"middle\"");
    }
  }
  for (std::size_t p = 0; p < k; ++p) {
    const double x = left + cell * (static_cast<double>(p) + 0.5), y = top + size + 12;
    svg.text(x, y, name(p),
             "class=\"class-name\" text-anchor=\"end\" transform=\"rotate(-45 " + SvgDocument::num(x) + " " +
                 SvgDocument::num(y) + ")\"");
  }
  svg.rect(left, top, size, size, "class=\"frame\"");
  svg.text(left + size / 2, H - 12, "predicted class", "class=\"label\" text-anchor=\"middle\"");
  svg.text(20, top + size / 2, "true class",
           "class=\"label\" text-anchor=\"middle\" transform=\"rotate(-90 20 " + SvgDocument::num(top + size / 2) + ")\"");

  // The colour scale: share of the true class, 0 to 100 %.
  const double sx = left + size + 30, steps = 10;
  for (int i = 0; i < steps; ++i) {
    const double share = (i + 0.5) / steps;
    svg.rect(sx, top + size - (i + 1) * size / steps, 18, size / steps, "class=\"scale\" fill=\"" + shade(share) + "\"");
  }
  svg.rect(sx, top, 18, size, "class=\"frame\"");
  svg.text(sx + 24, top + 4, "100 %", "class=\"tick\"");
  svg.text(sx + 24, top + size / 2 + 4, "50 %", "class=\"tick\"");
  svg.text(sx + 24, top + size + 4, "0 %", "class=\"tick\"");
  svg.text(sx + 9, top - 12, "share of the true class", "class=\"tick\" text-anchor=\"middle\"");

  const std::string style =
      "text { font-family: sans-serif; fill: #222; }\n"
      ".title { font-size: 16px; font-weight: bold; }\n"
      ".label { font-size: 14px; }\n"
      ".class-name { font-size: 13px; }\n"
      ".tick { font-size: 11px; }\n"
      ".count { font-size: 12px; }\n"
      ".count.dark { fill: white; }\n"
      ".cell { stroke: #fff; stroke-width: 1; }\n"
      ".frame { fill: none; stroke: #222; stroke-width: 1; }\n";
  return svg.str(heading, style);
}

// The same for a fixed-size matrix, as ctnn::evaluate returns it (EvalResult::confusion).
template <std::size_t K>
std::string confusion_matrix_svg(const std::array<std::array<long, K>, K>& matrix,
                                 const std::vector<std::string>& class_names, const std::string& title) {
  std::vector<std::vector<long>> m(K);
  for (std::size_t t = 0; t < K; ++t) m[t].assign(matrix[t].begin(), matrix[t].end());
  return confusion_matrix_svg(m, class_names, title);
}

// Draws a loss log as training_curve_svg does and writes it to `svg` (atomically): what
// ctnn-train calls after a run (and a Trainer can call at every epoch's end).
[[gnu::cold]] inline void write_training_svg(const std::filesystem::path& csv, const std::filesystem::path& svg,
                               const std::string& title) {
  write_svg(svg, training_curve_svg(read_training_log(csv), title));
}

}  // namespace ctnn::io
