// The pictures of a run (include/ctnn/io/svg.hpp): ctnn-train's loss log read back, the loss
// curve and the confusion matrix drawn as SVG. Every picture is parsed here by a strict little
// XML reader (well-formed or the test fails) and its points, marks and cells are counted.
#include <doctest/doctest.h>

#include <ctnn/io/svg.hpp>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "support/temp_dir.hpp"

using namespace ctnn;
using namespace ctnn::io;
namespace fs = std::filesystem;

namespace {

// An XML element as parsed: name, attributes (entities resolved), text and children.
struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;
  std::string text;  // the element's own character data, entities resolved
  std::vector<std::unique_ptr<Element>> children;

  void find_all(const std::string& tag, std::vector<const Element*>& out) const {
    if (name == tag) out.push_back(this);
    for (const auto& c : children) c->find_all(tag, out);
  }
  std::vector<const Element*> all(const std::string& tag, const std::string& cls = "") const {
    std::vector<const Element*> found, out;
    find_all(tag, found);
    for (const auto* e : found) {
      auto it = e->attributes.find("class");
      if (cls.empty() || (it != e->attributes.end() && (" " + it->second + " ").find(" " + cls + " ") != std::string::npos))
        out.push_back(e);
    }
    return out;
  }
  double number(const std::string& attribute) const { return std::stod(attributes.at(attribute)); }
};

// A strict reader for the XML subset SVG files use: a prolog, one root element, attributes in
// quotes, the five predefined entities and character references. Anything malformed throws.
class XmlReader {
 public:
  explicit XmlReader(std::string text) : s_(std::move(text)) {}

  std::unique_ptr<Element> document() {
    if (s_.compare(0, 5, "<?xml") == 0) {
      const auto end = s_.find("?>");
      if (end == std::string::npos) fail("unterminated prolog");
      i_ = end + 2;
    }
    skip_space();
    auto root = element();
    skip_space();
    if (i_ != s_.size()) fail("content after the root element");
    return root;
  }

 private:
  [[noreturn]] void fail(const std::string& what) {
    throw std::runtime_error("malformed XML at byte " + std::to_string(i_) + ": " + what);
  }
  void skip_space() {
    while (i_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[i_]))) ++i_;
  }
  static bool name_char(char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '-' || c == '_' || c == ':' || c == '.'; }
  std::string name() {
    const std::size_t start = i_;
    while (i_ < s_.size() && name_char(s_[i_])) ++i_;
    if (i_ == start || std::isdigit(static_cast<unsigned char>(s_[start])) || s_[start] == '-') fail("bad name");
    return s_.substr(start, i_ - start);
  }
  // Character data up to `stop`, with entities resolved; a raw '<' or a stray '&' is an error.
  std::string chars(char stop) {
    std::string out;
    while (i_ < s_.size() && s_[i_] != stop) {
      const char c = s_[i_];
      if (c == '<') fail("'<' in text or an attribute");
      if (static_cast<unsigned char>(c) < 0x20 && c != '\t' && c != '\n' && c != '\r') fail("a control character");
      if (c == '&') {
        const auto semi = s_.find(';', i_);
        if (semi == std::string::npos || semi - i_ > 8) fail("'&' that starts no entity");
        const std::string entity = s_.substr(i_ + 1, semi - i_ - 1);
        static const std::map<std::string, char> known{{"amp", '&'}, {"lt", '<'}, {"gt", '>'}, {"quot", '"'}, {"apos", '\''}};
        if (auto it = known.find(entity); it != known.end()) out += it->second;
        else if (entity.size() > 1 && entity[0] == '#') out += '?';  // a character reference
        else fail("unknown entity &" + entity + ";");
        i_ = semi + 1;
      } else {
        out += c;
        ++i_;
      }
    }
    return out;
  }
  std::unique_ptr<Element> element() {
    if (i_ >= s_.size() || s_[i_] != '<') fail("expected '<'");
    ++i_;
    auto e = std::make_unique<Element>();
    e->name = name();
    for (;;) {
      const std::size_t before = i_;
      skip_space();
      if (i_ >= s_.size()) fail("unterminated tag");
      if (s_.compare(i_, 2, "/>") == 0) {
        i_ += 2;
        return e;
      }
      if (s_[i_] == '>') {
        ++i_;
        break;
      }
      if (i_ == before) fail("attributes must be separated by white space");
      const std::string key = name();
      skip_space();
      if (i_ >= s_.size() || s_[i_] != '=') fail("attribute without '='");
      ++i_;
      skip_space();
      if (i_ >= s_.size() || (s_[i_] != '"' && s_[i_] != '\'')) fail("attribute value without quotes");
      const char quote = s_[i_++];
      std::string value = chars(quote);
      if (i_ >= s_.size()) fail("unterminated attribute value");
      ++i_;
      if (!e->attributes.emplace(key, value).second) fail("attribute '" + key + "' twice");
    }
    for (;;) {
      e->text += chars('<');
      if (i_ >= s_.size()) fail("element <" + e->name + "> is not closed");
      if (s_.compare(i_, 2, "</") == 0) {
        i_ += 2;
        if (name() != e->name) fail("closing tag does not match <" + e->name + ">");
        skip_space();
        if (i_ >= s_.size() || s_[i_] != '>') fail("bad closing tag");
        ++i_;
        return e;
      }
      e->children.push_back(element());
    }
  }

  std::string s_;
  std::size_t i_ = 0;
};

std::unique_ptr<Element> parse(const std::string& svg) {
  auto root = XmlReader(svg).document();
  REQUIRE(root->name == "svg");
  CHECK(root->attributes.at("xmlns") == "http://www.w3.org/2000/svg");
  return root;
}

// The (x, y) pairs of a polyline's points attribute.
std::vector<std::array<double, 2>> points(const Element& polyline) {
  std::vector<std::array<double, 2>> out;
  std::istringstream in(polyline.attributes.at("points"));
  for (std::string pair; in >> pair;) {
    const auto comma = pair.find(',');
    REQUIRE(comma != std::string::npos);
    out.push_back({std::stod(pair.substr(0, comma)), std::stod(pair.substr(comma + 1))});
  }
  return out;
}

// All text of the document, for looking up labels.
void texts(const Element& e, std::vector<std::string>& out) {
  if (e.name == "text") out.push_back(e.text);
  for (const auto& c : e.children) texts(*c, out);
}
bool has_text(const Element& root, const std::string& wanted) {
  std::vector<std::string> all;
  texts(root, all);
  for (const auto& t : all)
    if (t.find(wanted) != std::string::npos) return true;
  return false;
}

void write(const fs::path& p, const std::string& text) { std::ofstream(p, std::ios::binary) << text; }

// Two epochs of 5 steps, the learning rate divided by 3 after the first, a spike at step 1.
const char* kLog =
    "epoch,step,loss,running_loss,lr\n"
    "1,1,9.5,9.5,0.001\n"
    "1,2,2.25,5.875,0.001\n"
    "1,3,2.1,4.61667,0.001\n"
    "1,4,2.0,3.9625,0.001\n"
    "1,5,1.9,3.55,0.001\n"
    "2,1,1.8,1.8,0.000333333\n"
    "2,2,1.7,1.75,0.000333333\n"
    "2,3,1.6,1.7,0.000333333\n"
    "2,4,1.55,1.6625,0.000333333\n"
    "2,5,1.5,1.63,0.000333333\n"
    "# test accuracy,43.5\n";

}  // namespace

TEST_CASE("The XML reader of these tests refuses what is not well-formed") {
  CHECK_NOTHROW(XmlReader("<?xml version=\"1.0\"?>\n<svg a=\"1 &amp; 2\"><t>x &lt; y</t><u/></svg>\n").document());
  for (const char* bad : {"<svg><t></svg>", "<svg a=1/>", "<svg a=\"1\" a=\"2\"/>", "<svg>a & b</svg>",
                          "<svg>a < b</svg>", "<svg/><svg/>", "<svg a=\"<\"/>", "<svg>&nbsp;</svg>", "<svg>"}) {
    CAPTURE(bad);
    CHECK_THROWS(XmlReader(bad).document());
  }
}

TEST_CASE("ctnn-train's loss log is read back: rows, the test accuracy, a cut last row left out, bad rows named") {
  test::TempDir dir("ctnn_test_svg");
  const fs::path csv = dir.path / "m_train_log.csv";
  write(csv, std::string(kLog) + "2,6,1.4");  // a row cut short by a kill: no newline
  const TrainingLog log = read_training_log(csv);
  REQUIRE(log.steps.size() == 10);
  CHECK(log.steps[5].epoch == 2);
  CHECK(log.steps[5].step == 1);
  CHECK(log.steps[2].running_loss == doctest::Approx(4.61667));
  CHECK(log.steps[9].lr == doctest::Approx(0.000333333));
  REQUIRE(log.test_accuracy.has_value());
  CHECK(*log.test_accuracy == 43.5);

  // A learning rate below float's normal range is a number (the log's writer printed it).
  write(csv, "epoch,step,loss,running_loss,lr\n1,1,2.3,2.3,9.99989e-321\n");
  REQUIRE(read_training_log(csv).steps.size() == 1);
  CHECK(read_training_log(csv).steps[0].lr > 0.0);
  write(csv, "epoch,step,loss,running_loss,lr\n1,1,2.3, 2.3,0.001\n");
  CHECK_THROWS_WITH(read_training_log(csv), doctest::Contains("m_train_log.csv:2: the running loss ' 2.3' is not a number"));
  write(csv, "epoch,step,loss,running_loss,lr\n1,1,2.3,2.3,0.001\n1,2,2.2,oops,0.001\n");
  CHECK_THROWS_WITH(read_training_log(csv), doctest::Contains("m_train_log.csv:3: the running loss 'oops' is not a number"));
  write(csv, "epoch,step,loss,running_loss,lr\n1,1,2.3\n");
  CHECK_THROWS_WITH(read_training_log(csv), doctest::Contains("m_train_log.csv:2: expected 5 fields"));
  write(csv, "a,b\n");
  CHECK_THROWS_WITH(read_training_log(csv), doctest::Contains("m_train_log.csv:1: not a ctnn-train loss log"));
  CHECK_THROWS_WITH(read_training_log(dir.path / "none.csv"), doctest::Contains("none.csv: cannot open"));
  // A directory or an empty file read as a log of no steps before (review finding).
  CHECK_THROWS_WITH(read_training_log(dir.path), doctest::Contains(": is a directory, not a training log"));
  write(csv, "");
  CHECK_THROWS_WITH(read_training_log(csv), doctest::Contains("m_train_log.csv: is empty, not a ctnn-train loss log"));
}

TEST_CASE("Text that is not UTF-8 is replaced, so that the document stays well-formed; UTF-8 is kept") {
  // A class name from a Latin-1 batches.meta.txt ("caf\xe9") made a file XML readers refuse.
  CHECK(xml_escape("caf\xe9") == "caf?");
  CHECK(xml_escape("caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x88") == "caf\xc3\xa9 \xe2\x82\xac \xf0\x9f\x90\x88");
  CHECK(xml_escape("\xc0\xaf") == "??");          // an overlong '/'
  CHECK(xml_escape("\xed\xa0\x80") == "???");     // a surrogate
  CHECK(xml_escape("\xf4\x90\x80\x80") == "????");  // above U+10FFFF
  CHECK(xml_escape("\xe2\x82") == "??");           // cut short
  CHECK(xml_escape("a<\xff>") == "a&lt;?&gt;");
}

TEST_CASE("Losses of a few subnormals draw an axis, not a crash") {
  // Review finding: with every loss below ~5e-323 the tick step underflowed to 0, no tick was
  // made, and the axis read the last of none (a segmentation fault).
  TrainingLog log;
  log.steps.push_back({1, 1, 1e-323, 1e-323, 1e-3});
  log.steps.push_back({1, 2, 5e-324, 7e-324, 1e-3});
  const auto root = parse(training_curve_svg(log, "tiny"));
  CHECK(points(*root->all("polyline", "loss").at(0)).size() == 2);
}

TEST_CASE("The loss curve: one point per step for the loss and its running mean, epoch and learning-rate marks, axes, accuracy") {
  test::TempDir dir("ctnn_test_svg");
  write(dir.path / "log.csv", kLog);
  const TrainingLog log = read_training_log(dir.path / "log.csv");
  const auto root = parse(training_curve_svg(log, "net <&> \"test\""));

  const auto loss = root->all("polyline", "loss");
  const auto mean = root->all("polyline", "running-mean");
  REQUIRE(loss.size() == 1);
  REQUIRE(mean.size() == 1);
  const auto lp = points(*loss[0]), mp = points(*mean[0]);
  REQUIRE(lp.size() == 10);
  REQUIRE(mp.size() == 10);
  // Steps left to right at equal spacing; a larger loss is drawn higher (smaller y).
  for (std::size_t i = 1; i < lp.size(); ++i) {
    CHECK(lp[i][0] > lp[i - 1][0]);
    CHECK(lp[i][0] - lp[i - 1][0] == doctest::Approx(lp[1][0] - lp[0][0]).epsilon(0.01));
    CHECK(lp[i][0] == mp[i][0]);
  }
  CHECK(lp[2][1] < lp[3][1]);  // 2.1 above 2.0
  CHECK(mp[6][1] > mp[5][1]);  // the running mean goes down in epoch 2
  CHECK_FALSE(has_text(*root, "above"));  // nothing out of range in a log this short
  // One epoch start and one learning-rate change, both before step 6, with the new rate.
  const auto epochs = root->all("line", "epoch-mark"), changes = root->all("line", "lr-change");
  REQUIRE(epochs.size() == 2);  // the mark, and its sample in the legend
  REQUIRE(changes.size() == 2);
  CHECK(epochs[0]->number("x1") == doctest::Approx(lp[5][0]));
  CHECK(changes[0]->number("x1") == doctest::Approx(lp[5][0]));
  CHECK(has_text(*root, "epoch 2"));
  CHECK(has_text(*root, "lr 0.000333"));
  // Axes with labels and ticks, the test accuracy, the title escaped and read back intact.
  CHECK(root->all("line", "axis").size() >= 2);
  CHECK(root->all("text", "tick").size() >= 6);
  CHECK(has_text(*root, "step (all epochs)"));
  CHECK(has_text(*root, "loss (cross-entropy)"));
  CHECK(has_text(*root, "test accuracy 43.50 %"));
  CHECK(has_text(*root, "net <&> \"test\": training loss"));

  // A run without rows yet (killed before its first step) still gives a valid picture.
  const auto empty = parse(training_curve_svg(TrainingLog{}, "empty"));
  CHECK(empty->all("polyline").empty());
  CHECK(has_text(*empty, "no steps logged"));
}

TEST_CASE("The loss curve's y range leaves out a spike above 98 % of the steps: drawn at the top edge, and counted") {
  // 100 steps of loss 2 with a spike of 20 at step 50; its running mean after the spike stays in range.
  TrainingLog log;
  double sum = 0;
  for (int i = 1; i <= 100; ++i) {
    const double loss = i == 50 ? 20.0 : 2.0;
    sum += loss;
    log.steps.push_back({1, i, loss, sum / i, 1e-3});
  }
  const auto root = parse(training_curve_svg(log, "spike"));
  const auto lp = points(*root->all("polyline", "loss").at(0)), mp = points(*root->all("polyline", "running-mean").at(0));
  REQUIRE(lp.size() == 100);
  double top = 1e9;
  for (const auto& p : lp) top = std::min(top, p[1]);
  CHECK(lp[49][1] == top);       // the spike, at the top edge
  CHECK(lp[48][1] > top + 50);   // the rest well below it
  for (const auto& p : mp) CHECK(p[1] > top);  // every running mean in range
  CHECK(mp[49][1] < mp[48][1]);  // the mean jumps up at the spike
  CHECK(has_text(*root, "1 step(s) above"));
}

TEST_CASE("A loss beyond float's range (a diverged run) is drawn at the top edge, not past it") {
  TrainingLog log;
  log.steps.push_back({1, 1, 2.0, 2.0, 1e-3});
  log.steps.push_back({1, 2, 1.79e308, 8.9e307, 1e-3});
  const auto root = parse(training_curve_svg(log, "diverged"));
  const auto lp = points(*root->all("polyline", "loss").at(0));
  REQUIRE(lp.size() == 2);
  CHECK(std::isfinite(lp[1][1]));
  CHECK(lp[1][1] < lp[0][1]);  // higher on the page
}

TEST_CASE("A long run: every epoch start marked, labels only where they fit") {
  TrainingLog log;
  for (int e = 1; e <= 50; ++e)
    for (int b = 1; b <= 10; ++b) log.steps.push_back({e, b, 2.0, 2.0, e <= 20 ? 1e-3 : e <= 40 ? 1e-3 / 3 : 1e-3 / 9});
  const auto root = parse(training_curve_svg(log, "long"));
  CHECK(points(*root->all("polyline", "loss").at(0)).size() == 500);
  CHECK(root->all("line", "epoch-mark").size() == 49 + 1);  // and the legend's sample
  CHECK(root->all("line", "lr-change").size() == 2 + 1);
  const auto labels = root->all("text", "note");
  CHECK(labels.size() > 5);
  CHECK(labels.size() < 20);  // 49 epoch labels 12 px apart would overlap
  std::vector<double> xs;
  for (const auto* t : labels)
    if (t->text.rfind("epoch", 0) == 0) xs.push_back(t->number("x"));
  for (std::size_t i = 1; i < xs.size(); ++i) CHECK(xs[i] - xs[i - 1] >= 55);
  CHECK(has_text(*root, "lr 0.000333"));
  CHECK(has_text(*root, "lr 0.000111"));
}

TEST_CASE("The confusion matrix: K x K cells shaded by the share of the true class, counts and class names") {
  const std::vector<std::vector<long>> m{{8, 2, 0}, {0, 5, 5}, {0, 0, 0}};
  const auto root = parse(confusion_matrix_svg(m, {"cat", "dog & <wolf>", "bird"}, "net"));
  const auto cells = root->all("rect", "cell");
  REQUIRE(cells.size() == 9);
  std::map<std::pair<int, int>, const Element*> at;
  for (const auto* c : cells) at[{std::stoi(c->attributes.at("data-true")), std::stoi(c->attributes.at("data-predicted"))}] = c;
  REQUIRE(at.size() == 9);
  CHECK(at[{0, 1}]->attributes.at("fill") != at[{0, 0}]->attributes.at("fill"));
  CHECK(at[{0, 2}]->attributes.at("fill") == "#ffffff");     // nothing: white
  CHECK(at[{1, 1}]->attributes.at("fill") == at[{1, 2}]->attributes.at("fill"));  // equal shares, equal shade
  CHECK(at[{2, 2}]->attributes.at("fill") == "#ffffff");     // a class with no images
  // Cells in a grid: same row, same y; same column, same x.
  CHECK(at[{1, 0}]->number("y") == at[{1, 2}]->number("y"));
  CHECK(at[{0, 1}]->number("x") == at[{2, 1}]->number("x"));
  CHECK(at[{0, 1}]->number("x") > at[{0, 0}]->number("x"));
  // Every count written once in its cell, and in the cell's tooltip with the class names.
  CHECK(root->all("text", "count").size() == 9);
  REQUIRE(at[{1, 2}]->children.size() == 1);
  CHECK(at[{1, 2}]->children[0]->text == "true dog & <wolf>, predicted bird: 5 (50.0 % of dog & <wolf>)");
  // Class names on both axes (rows and columns), the axis labels and the accuracy.
  std::vector<std::string> all;
  texts(*root, all);
  CHECK(std::count(all.begin(), all.end(), "dog & <wolf>") == 2);
  CHECK(has_text(*root, "true class"));
  CHECK(has_text(*root, "predicted class"));
  CHECK(has_text(*root, "accuracy 65.00 % of 20 images"));

  // The fixed-size matrix ctnn::evaluate gives; names missing are replaced by numbers.
  std::array<std::array<long, 2>, 2> a{{{1, 0}, {0, 1}}};
  const auto small = parse(confusion_matrix_svg(a, {}, "n"));
  CHECK(small->all("rect", "cell").size() == 4);
  CHECK(has_text(*small, "accuracy 100.00 %"));
  CHECK_THROWS_AS(confusion_matrix_svg(std::vector<std::vector<long>>{{1, 2}, {3}}, {}, "x"), std::invalid_argument);
}

TEST_CASE("write_training_svg draws a log file into an SVG file, atomically") {
  test::TempDir dir("ctnn_test_svg");
  write(dir.path / "m_train_log.csv", kLog);
  const fs::path svg = dir.path / "m_train.svg";
  write(svg, "old");
  write_training_svg(dir.path / "m_train_log.csv", svg, "m");
  std::ifstream in(svg);
  std::stringstream text;
  text << in.rdbuf();
  CHECK(points(*parse(text.str())->all("polyline", "loss").at(0)).size() == 10);
  CHECK(std::distance(fs::directory_iterator(dir.path), {}) == 2);  // no temporary file left
  // Into a directory that does not exist: an error naming the file, and nothing written.
  CHECK_THROWS_WITH(write_training_svg(dir.path / "m_train_log.csv", dir.path / "no" / "m.svg", "m"),
                    doctest::Contains("does not exist"));
  // Drawing the same log twice gives the same bytes (no time stamps or other noise).
  CHECK(training_curve_svg(read_training_log(dir.path / "m_train_log.csv"), "m") == text.str());
}
