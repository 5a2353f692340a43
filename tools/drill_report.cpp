// Rendering of the drill's results (see drill_report.hpp).
#include "drill_report.hpp"

#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <iomanip>
#include <iostream>
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

std::string xml_text(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '&': out += "&amp;"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string result_word(const scenario_result& r) {
  return !r.verdict.empty() ? r.verdict : r.passed ? "PASS" : "FAIL";
}

std::string scenarios_json(const std::vector<scenario_result>& results) {
  std::ostringstream out;
  out << "[";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    out << (i == 0 ? "" : ",") << "{\"name\":" << json_quote(r.name) << ",\"passed\":" << (r.passed ? "true" : "false");
    if (!r.verdict.empty()) {
      out << ",\"verdict\":" << json_quote(r.verdict);
    }
    out << ",\"detail\":" << json_quote(r.detail);
    for (const auto& f : r.figures) {
      out << "," << json_quote(f.name) << ":" << (std::isfinite(f.value) ? number(f.value) : "null");
    }
    out << "}";
  }
  out << "]";
  return out.str();
}

bool all_passed(const std::vector<scenario_result>& results) {
  return std::all_of(results.begin(), results.end(), [](const auto& r) { return r.passed; });
}

std::string joined(const std::vector<std::string>& words) {
  std::string out;
  for (const auto& w : words) {
    out += (out.empty() ? "" : " ") + w;
  }
  return out;
}

}  // namespace

progress_line::progress_line() : tty_(::isatty(2) == 1) {}

void progress_line::show(const std::string& text) {
  if (tty_) {
    std::cerr << "\r\033[K" << text.substr(0, 100) << std::flush;
  } else {
    std::cerr << text << '\n';
  }
}

void progress_line::done(const std::string& text) {
  if (tty_) {
    std::cerr << "\r\033[K";
  }
  std::cerr << text << '\n';
}

std::string card_table(const drill_card& card) {
  std::ostringstream out;
  out << "target: " << joined(card.command) << "\n"
      << "setup:  " << card.setup << "\n\n"
      << "| # | scenario | server | result | what it showed | figures |\n|---|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < card.target.size(); ++i) {
    const auto& r = card.target[i];
    out << "| " << i + 1 << " | " << r.name << " | target | " << result_word(r) << " | " << r.detail << " | "
        << figures_text(r) << " |\n";
    if (i < card.reference.size()) {
      const auto& ref = card.reference[i];
      out << "|   |   | transient serve | " << result_word(ref) << " | " << ref.detail << " | " << figures_text(ref)
          << " |\n";
    }
  }
  out << "\nthresholds:\n";
  for (const auto& [name, meaning] : card.thresholds) {
    out << "  " << name << ": " << meaning << "\n";
  }
  const auto passed = std::count_if(card.target.begin(), card.target.end(), [](const auto& r) { return r.passed; });
  out << "\nthe target passed " << passed << " of " << card.target.size() << " scenarios in "
      << number(std::round(card.seconds * 10) / 10) << " s" << (all_passed(card.target) ? "" : " (FAILED)");
  if (!card.reference.empty()) {
    out << (all_passed(card.reference)
                ? "; the reference (transient serve) passed all"
                : "; the reference (transient serve) FAILED too: this machine's figures are suspect");
  }
  out << "\n";
  return out.str();
}

std::string card_json(const drill_card& card) {
  std::ostringstream out;
  out << "{\"passed\":" << (all_passed(card.target) ? "true" : "false")
      << ",\"quick\":" << (card.quick ? "true" : "false") << ",\"seconds\":" << number(card.seconds)
      << ",\"command\":[";
  for (std::size_t i = 0; i < card.command.size(); ++i) {
    out << (i == 0 ? "" : ",") << json_quote(card.command[i]);
  }
  out << "],\"setup\":" << json_quote(card.setup) << ",\"thresholds\":{";
  for (std::size_t i = 0; i < card.thresholds.size(); ++i) {
    out << (i == 0 ? "" : ",") << json_quote(card.thresholds[i].first) << ":" << json_quote(card.thresholds[i].second);
  }
  out << "},\"scenarios\":" << scenarios_json(card.target) << ",\"reference\":" << scenarios_json(card.reference)
      << "}\n";
  return out.str();
}

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
    out << "| " << i + 1 << " | " << r.name << " | " << result_word(r) << " | " << r.detail << " | " << figures_text(r)
        << " |\n";
  }
  out << "\n"
      << std::count_if(results.begin(), results.end(), [](const auto& r) { return r.passed; }) << " of "
      << results.size() << " scenarios passed in " << number(std::round(seconds * 10) / 10) << " s"
      << (all ? "" : " (FAILED)") << "\n";
  return out.str();
}

std::string drill_json(const std::vector<scenario_result>& results, double seconds, bool quick) {
  std::ostringstream out;
  out << "{\"passed\":" << (all_passed(results) ? "true" : "false") << ",\"quick\":" << (quick ? "true" : "false")
      << ",\"seconds\":" << number(seconds) << ",\"scenarios\":" << scenarios_json(results) << "}\n";
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
    out << "<text x=\"" << left << "\" y=\"" << top - 14 << "\" font-weight=\"bold\">" << xml_text(c.title)
        << "</text>\n";
    for (const auto& [a, b] : c.paused) {
      out << "<rect x=\"" << x(a) << "\" y=\"" << top << "\" width=\"" << std::max(x(b) - x(a), 1.0) << "\" height=\""
          << plot_h << "\" fill=\"#fde2b8\"/>\n";
    }
    out << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << plot_w << "\" height=\"" << plot_h
        << "\" fill=\"none\" stroke=\"#444\"/>\n";
    if (c.limit > 0) {
      out << "<line x1=\"" << left << "\" x2=\"" << left + plot_w << "\" y1=\"" << y_live(c.limit) << "\" y2=\""
          << y_live(c.limit) << "\" stroke=\"#c00\" stroke-dasharray=\"6,4\"/>\n<text x=\"" << left + 4 << "\" y=\""
          << y_live(c.limit) - 4 << "\" fill=\"#c00\">" << xml_text(c.limit_label) << "</text>\n";
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
        << "<tspan fill=\"#1f5fbf\">live connections</tspan>  <tspan fill=\"#2a9d3a\">server CPU %</tspan>"
        << (c.paused.empty() ? "" : "  <tspan fill=\"#d08a20\">accepting paused</tspan>") << "</text>\n";
  }
  out << "</svg>\n";
  return out.str();
}

}  // namespace transient::tool
