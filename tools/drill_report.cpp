// Rendering of the drill's results (see drill_report.hpp).
#include "drill_report.hpp"

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <sstream>

#include "json.hpp"

namespace transient::tool {
namespace {

std::string number(double v) {
  std::ostringstream out;
  if (std::fabs(v - std::round(v)) < 1e-9 && std::fabs(v) < 1e15) {
    out << static_cast<long long>(std::llround(v));
  } else {
    out << std::fixed << std::setprecision(std::fabs(v) < 10 ? 3 : 1) << v;
  }
  return out.str();
}

std::string figures_text(const scenario_result& r) {
  std::string out;
  for (const auto& f : r.figures) {
    out += (out.empty() ? "" : ", ") + f.name + " " + number(f.value);
  }
  return out;
}

}  // namespace

std::string drill_table(const std::vector<scenario_result>& results, double seconds) {
  std::ostringstream out;
  std::size_t width = 8;
  for (const auto& r : results) {
    width = std::max(width, r.name.size());
  }
  const bool all = std::all_of(results.begin(), results.end(), [](const auto& r) { return r.passed; });
  out << "| # | scenario | result | what it showed | figures |\n|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    out << "| " << i + 1 << " | " << r.name << " | " << (r.passed ? "PASS" : "FAIL") << " | " << r.detail << " | "
        << figures_text(r) << " |\n";
  }
  out << "\n"
      << std::count_if(results.begin(), results.end(), [](const auto& r) { return r.passed; }) << " of "
      << results.size() << " scenarios passed in " << number(std::round(seconds * 10) / 10) << " s"
      << (all ? "" : " (FAILED)") << "\n";
  return out.str();
}

std::string drill_json(const std::vector<scenario_result>& results, double seconds, bool quick) {
  const bool all = std::all_of(results.begin(), results.end(), [](const auto& r) { return r.passed; });
  std::ostringstream out;
  out << "{\"passed\":" << (all ? "true" : "false") << ",\"quick\":" << (quick ? "true" : "false")
      << ",\"seconds\":" << number(seconds) << ",\"scenarios\":[";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    out << (i == 0 ? "" : ",") << "{\"name\":" << json_quote(r.name) << ",\"passed\":" << (r.passed ? "true" : "false")
        << ",\"detail\":" << json_quote(r.detail);
    for (const auto& f : r.figures) {
      out << "," << json_quote(f.name) << ":" << (std::isfinite(f.value) ? number(f.value) : "null");
    }
    out << "}";
  }
  out << "]}\n";
  return out.str();
}

std::string drill_svg(const std::vector<scenario_result>& results) {
  std::vector<const timeline*> charts;
  for (const auto& r : results) {
    for (const auto& c : r.charts) {
      charts.push_back(&c);
    }
  }
  constexpr double width = 860;
  constexpr double panel = 260;
  constexpr double left = 60;
  constexpr double plot_w = 720;
  constexpr double plot_h = 180;
  std::ostringstream out;
  out << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << width << "\" height=\""
      << panel * static_cast<double>(std::max<std::size_t>(charts.size(), 1)) + 20
      << "\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n";
  if (charts.empty()) {
    out << "<text x=\"20\" y=\"30\">no timeline recorded</text>\n";
  }
  for (std::size_t i = 0; i < charts.size(); ++i) {
    const timeline& c = *charts[i];
    const double top = 40 + panel * static_cast<double>(i);
    const double t_max = c.samples.empty() ? 1.0 : std::max(c.samples.back().t, 0.001);
    double live_max = c.limit;
    for (const auto& s : c.samples) {
      live_max = std::max(live_max, s.live);
    }
    live_max = std::max(live_max * 1.1, 1.0);
    const auto x = [&](double t) { return left + plot_w * std::clamp(t / t_max, 0.0, 1.0); };
    const auto y_live = [&](double v) { return top + plot_h - plot_h * std::clamp(v / live_max, 0.0, 1.0); };
    const auto y_cpu = [&](double v) { return top + plot_h - plot_h * std::clamp(v / 100.0, 0.0, 1.0); };
    out << "<text x=\"" << left << "\" y=\"" << top - 14 << "\" font-weight=\"bold\">" << c.title << "</text>\n";
    for (const auto& [a, b] : c.paused) {
      out << "<rect x=\"" << x(a) << "\" y=\"" << top << "\" width=\"" << std::max(x(b) - x(a), 1.0) << "\" height=\""
          << plot_h << "\" fill=\"#fde2b8\"/>\n";
    }
    out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
        << "\" fill=\"none\" stroke=\"#444\"/>\n";
    if (c.limit > 0) {
      out << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << y_live(c.limit) << "\" y2=\""
          << y_live(c.limit) << "\" stroke=\"#c00\" stroke-dasharray=\"6,4\"/>\n<text x=\"" << left + 4 << "\" y=\""
          << y_live(c.limit) - 4 << "\" fill=\"#c00\">" << c.limit_label << "</text>\n";
    }
    const auto polyline = [&](auto value, const char* color) {
      out << "<polyline fill=\"none\" stroke=\"" << color << "\" stroke-width=\"1.5\" points=\"";
      for (const auto& s : c.samples) {
        out << x(s.t) << ',' << value(s) << ' ';
      }
      out << "\"/>\n";
    };
    polyline([&](const timeline_sample& s) { return y_live(s.live); }, "#1f5fbf");
    polyline([&](const timeline_sample& s) { return y_cpu(s.cpu); }, "#2a9d3a");
    out << "<text x=\"" << left - 6 << "\" y=\"" << top + 10 << "\" text-anchor=\"end\">" << number(live_max)
        << "</text>\n<text x=\"" << left - 6 << "\" y=\"" << top + plot_h << "\" text-anchor=\"end\">0</text>\n"
        << "<text x=\"" << left + plot_w + 4 << "\" y=\"" << top + 10 << "\" fill=\"#2a9d3a\">100 %</text>\n"
        << "<text x=\"" << left + plot_w << "\" y=\"" << top + plot_h + 16 << "\" text-anchor=\"end\">"
        << number(std::round(t_max * 100) / 100) << " s</text>\n"
        << "<text x=\"" << left << "\" y=\"" << top + plot_h + 16 << "\">"
        << "<tspan fill=\"#1f5fbf\">live connections</tspan>  <tspan fill=\"#2a9d3a\">server CPU %</tspan>  "
        << "<tspan fill=\"#d08a20\">accepting paused</tspan></text>\n";
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace transient::tool
