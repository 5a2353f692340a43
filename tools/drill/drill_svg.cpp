// The drill's chart (see drill_report.hpp): one panel per timeline, all on one time axis with
// ticks; live connections on whole-number ticks at the left, runnable % at the right; each
// release marked, and the moment its waiting client was served, with the latency. Every label
// sits outside the plot or in a row of its own, so none covers a line.
#include <algorithm>
#include <array>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "drill_report.hpp"

namespace transient::tool {
namespace {

constexpr double width = 900;
constexpr double left = 70;     // room for the live-connection labels
constexpr double plot_w = 740;  // leaves room at the right for the runnable % labels
constexpr double plot_h = 180;
constexpr double above = 52;  // title and the row of latency labels
constexpr double below = 76;  // time ticks, the axis name and two rows of legend
constexpr double panel_h = above + plot_h + below;
constexpr double char_w = 6.6;  // a 12 px sans-serif character, roughly

std::string xml_text(const std::string& text) {
  std::string out;
  constexpr std::string_view special = "<>&\"";
  constexpr std::array<std::string_view, 4> entities{"&lt;", "&gt;", "&amp;", "&quot;"};
  for (const char c : text) {
    const std::size_t which = special.find(c);
    if (which == std::string_view::npos) {
      out.push_back(c);
    } else {
      out += entities.at(which);
    }
  }
  return out;
}

// A coordinate with at most one decimal.
std::string px(double v) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << v;
  return out.str();
}

// `v` with the fewest decimals that keep `step` apart (whole numbers for a step of 1 or more).
std::string tick_text(double v, double step) {
  const int decimals = step >= 1 ? 0 : step >= 0.1 ? 1 : 2;
  std::ostringstream out;
  out << std::fixed << std::setprecision(decimals) << v;
  return out.str();
}

// A step of 1, 2 or 5 times a power of ten that divides `span` into at most `most` parts.
double nice_step(double span, int most) {
  const double rough = span / most;
  const double power = std::pow(10.0, std::floor(std::log10(rough)));
  for (const double m : {1.0, 2.0, 5.0, 10.0}) {
    if (m * power >= rough) {
      return m * power;
    }
  }
  return 10 * power;
}

std::string latency_text(double ms) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(ms < 10 ? 2 : ms < 100 ? 1 : 0) << ms << " ms";
  return out.str();
}

// One panel's scales.
struct scales {
  double top = 0;
  double t_max = 1;
  double live_max = 1;
  [[nodiscard]] double x(double t) const { return left + plot_w * std::clamp(t / t_max, 0.0, 1.0); }
  [[nodiscard]] double y_live(double v) const { return top + plot_h - plot_h * std::clamp(v / live_max, 0.0, 1.0); }
  [[nodiscard]] double y_pct(double v) const { return top + plot_h - plot_h * std::clamp(v / 100.0, 0.0, 1.0); }
};

void axes(std::ostringstream& out, const scales& s) {
  const double t_step = nice_step(s.t_max, 10);
  const int t_ticks = static_cast<int>(std::floor(s.t_max / t_step + 1e-6));
  for (int i = 0; i <= t_ticks; ++i) {
    const double t = t_step * i;
    out << "<line class=\"tick-x\" x1=\"" << px(s.x(t)) << "\" x2=\"" << px(s.x(t)) << "\" y1=\"" << px(s.top + plot_h)
        << "\" y2=\"" << px(s.top + plot_h + 5) << "\" stroke=\"#444\"/>\n"
        << "<text x=\"" << px(s.x(t)) << "\" y=\"" << px(s.top + plot_h + 17) << "\" text-anchor=\"middle\">"
        << tick_text(t, t_step) << "</text>\n";
  }
  out << "<text x=\"" << px(left + plot_w) << "\" y=\"" << px(s.top + plot_h + 31)
      << "\" text-anchor=\"end\">seconds since the server's descriptors ran out</text>\n";
  const double live_step = std::max(1.0, nice_step(s.live_max, 4));
  const int live_ticks = static_cast<int>(std::floor(s.live_max / live_step + 1e-9));
  for (int i = 0; i <= live_ticks; ++i) {
    const double v = live_step * i;
    out << "<line class=\"tick-y\" x1=\"" << px(left - 5) << "\" x2=\"" << left << "\" y1=\"" << px(s.y_live(v))
        << "\" y2=\"" << px(s.y_live(v)) << "\" stroke=\"#1f5fbf\"/>\n<text class=\"tick-y-label\" x=\"" << px(left - 8)
        << "\" y=\"" << px(s.y_live(v) + 4) << "\" text-anchor=\"end\" fill=\"#1f5fbf\">" << tick_text(v, 1)
        << "</text>\n";
  }
  for (const int v : {0, 50, 100}) {
    out << "<line x1=\"" << left + plot_w << "\" x2=\"" << px(left + plot_w + 5) << "\" y1=\"" << px(s.y_pct(v))
        << "\" y2=\"" << px(s.y_pct(v)) << "\" stroke=\"#2a9d3a\"/>\n<text x=\"" << px(left + plot_w + 8) << "\" y=\""
        << px(s.y_pct(v) + 4) << "\" fill=\"#2a9d3a\">" << v << " %</text>\n";
  }
}

void polyline(std::ostringstream& out, const timeline& c, const scales& s, bool live) {
  out << "<polyline class=\"" << (live ? "live" : "runnable") << "\" fill=\"none\" stroke=\""
      << (live ? "#1f5fbf" : "#2a9d3a") << "\" stroke-width=\"1.5\" points=\"";
  for (const auto& sample : c.samples) {
    out << px(s.x(sample.t)) << ',' << px(live ? s.y_live(sample.live) : s.y_pct(sample.runnable)) << ' ';
  }
  out << "\"/>\n";
}

// A dashed line at each release, a dot where its client was served, and the latency in the row
// above the plot (a label that would overlap the previous one moves up a line).
void releases(std::ostringstream& out, const timeline& c, const scales& s) {
  double last_end = -1e9;
  int row = 0;
  for (const auto& m : c.releases) {
    out << "<line class=\"release\" x1=\"" << px(s.x(m.released)) << "\" x2=\"" << px(s.x(m.released)) << "\" y1=\""
        << s.top << "\" y2=\"" << px(s.top + plot_h) << "\" stroke=\"#555\" stroke-dasharray=\"3,3\"/>\n";
    if (m.served < 0) {
      continue;
    }
    out << "<circle class=\"served\" cx=\"" << px(s.x(m.served)) << "\" cy=\"" << px(s.y_live(c.limit))
        << "\" r=\"3.5\" fill=\"#000\"/>\n";
    const std::string text = latency_text(m.latency_ms);
    const double half = static_cast<double>(text.size()) * char_w / 2;
    const double centre = std::clamp(s.x(m.served), left + half, left + plot_w - half);
    row = centre - half < last_end + 4 ? (row + 1) % 2 : 0;
    last_end = centre + half;
    out << "<text class=\"latency\" x=\"" << px(centre) << "\" y=\"" << px(s.top - 6 - 13 * row)
        << "\" text-anchor=\"middle\">" << xml_text(text) << "</text>\n";
  }
}

void legend(std::ostringstream& out, const timeline& c, double y) {
  double x = left;
  // Each entry is drawn where `x` and `y` stand when it is made: a row that would run past the
  // right edge goes on in the next row.
  const auto entry = [&](const auto& swatch, const std::string& text) {
    const double needed = 30 + static_cast<double>(text.size()) * char_w;
    if (x > left && x + needed > width - 10) {
      x = left;
      y += 17;
    }
    out << swatch() << "<text x=\"" << px(x + 22) << "\" y=\"" << px(y + 4) << "\">" << xml_text(text) << "</text>\n";
    x += needed;
  };
  const auto line = [&](const char* color, const char* dash) {
    return [&x, &y, color, dash] {
      return "<line x1=\"" + px(x) + "\" x2=\"" + px(x + 18) + "\" y1=\"" + px(y) + "\" y2=\"" + px(y) +
             "\" stroke=\"" + color + "\" stroke-width=\"2\"" +
             (dash[0] != '\0' ? std::string(" stroke-dasharray=\"") + dash + "\"" : "") + "/>";
    };
  };
  entry(line("#1f5fbf", ""), "live connections");
  entry(line("#2a9d3a", ""), "server runnable %");
  if (c.limit > 0) {
    entry(line("#c00", "6,4"), c.limit_label);
  }
  if (!c.paused.empty()) {
    entry(
        [&] {
          return "<rect x=\"" + px(x) + "\" y=\"" + px(y - 6) + "\" width=\"18\" height=\"12\" fill=\"#fde2b8\"/>";
        },
        "accepting paused");
  }
  if (!c.releases.empty()) {
    entry(line("#555", "3,3"), "release");
    entry([&] { return "<circle cx=\"" + px(x + 9) + "\" cy=\"" + px(y) + "\" r=\"3.5\" fill=\"#000\"/>"; },
          "client served (latency above)");
  }
}

void panel(std::ostringstream& out, const timeline& c, const scales& s) {
  out << "<text x=\"" << left << "\" y=\"" << px(s.top - above + 16) << "\" font-weight=\"bold\">" << xml_text(c.title)
      << "</text>\n";
  for (const auto& [a, b] : c.paused) {
    out << "<rect class=\"paused\" x=\"" << px(s.x(a)) << "\" y=\"" << s.top << "\" width=\""
        << px(std::max(s.x(b) - s.x(a), 1.0)) << "\" height=\"" << plot_h << "\" fill=\"#fde2b8\"/>\n";
  }
  out << "<rect x=\"" << left << "\" y=\"" << s.top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
      << "\" fill=\"none\" stroke=\"#444\"/>\n";
  if (c.limit > 0) {
    out << "<line class=\"limit\" x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << px(s.y_live(c.limit))
        << "\" y2=\"" << px(s.y_live(c.limit)) << "\" stroke=\"#c00\" stroke-dasharray=\"6,4\"/>\n";
  }
  axes(out, s);
  polyline(out, c, s, true);
  polyline(out, c, s, false);
  releases(out, c, s);
  legend(out, c, s.top + plot_h + 46);
}

}  // namespace

std::string drill_svg(const std::vector<scenario_result>& results) {
  std::vector<const timeline*> charts;
  double t_max = 0.001;  // one time axis for every panel
  for (const auto& r : results) {
    for (const auto& c : r.charts) {
      charts.push_back(&c);
      t_max = std::max(t_max, c.samples.empty() ? 0.0 : c.samples.back().t);
    }
  }
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\""
      << px(panel_h * static_cast<double>(std::max<std::size_t>(charts.size(), 1)) + 10)
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (charts.empty()) {
    out << "<text x=\"20\" y=\"30\">no timeline recorded</text>\n";
  }
  for (std::size_t i = 0; i < charts.size(); ++i) {
    const timeline& c = *charts[i];
    double live_max = c.limit;
    for (const auto& sample : c.samples) {
      live_max = std::max(live_max, sample.live);
    }
    // The live axis ends on a whole tick above the highest value.
    const double step = std::max(1.0, nice_step(std::max(live_max, 1.0) * 1.1, 4));
    const scales s{above + panel_h * static_cast<double>(i), t_max, step * std::ceil(live_max * 1.1 / step)};
    panel(out, c, s);
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace transient::tool
