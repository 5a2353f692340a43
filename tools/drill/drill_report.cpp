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

// Seconds with one decimal ("6.3").
std::string seconds_text(double seconds) {
  std::ostringstream out;
  out << std::fixed << std::setprecision(1) << seconds;
  return out.str();
}

// "what to change:" and one line per failed result that carries a fix; "" if none.
std::string fixes_text(const std::vector<scenario_result>& results, const std::vector<int>& numbers) {
  std::string out;
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    if (!r.passed && !r.fix.empty()) {
      const int n = i < numbers.size() ? numbers[i] : static_cast<int>(i + 1);
      out += "  " + std::to_string(n) + " " + r.name + " (" + (r.verdict.empty() ? "FAIL" : r.verdict) + "): " + r.fix +
             "\n";
    }
  }
  return out.empty() ? out : "\nwhat to change:\n" + out;
}

std::string figures_text(const scenario_result& r) {
  std::string out;
  for (const auto& f : r.figures) {
    out += (out.empty() ? "" : ", ") + f.name + " " + number(f.value);
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
    if (!r.fix.empty()) {
      out << ",\"fix\":" << json_quote(r.fix);
    }
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

progress_line::progress_line() : tty_(::isatty(2) == 1) {
  ticker_ = std::thread([this] { tick(); });
}

progress_line::~progress_line() {
  {
    const std::lock_guard lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  ticker_.join();
}

void progress_line::begin(const std::string& text, std::chrono::seconds bound) {
  {
    const std::lock_guard lock(mutex_);
    began_ = std::chrono::steady_clock::now();
    bound_ = bound;
  }
  show(text);
}

void progress_line::show(const std::string& text) {
  const std::lock_guard lock(mutex_);
  current_ = text;
  write(text, false);
}

void progress_line::done(const std::string& text) {
  const std::lock_guard lock(mutex_);
  current_.clear();
  write(text, true);
}

void progress_line::write(const std::string& text, bool finished) {
  shown_ = std::chrono::steady_clock::now();
  if (tty_) {
    std::cerr << "\r\033[K" << (finished ? text : text.substr(0, 100)) << (finished ? "\n" : "") << std::flush;
  } else {
    std::cerr << text << '\n' << std::flush;
  }
}

void progress_line::tick() {
  std::unique_lock lock(mutex_);
  while (!stop_) {
    wake_.wait_for(lock, std::chrono::seconds(1));
    const auto now = std::chrono::steady_clock::now();
    if (stop_ || current_.empty() || now - shown_ < std::chrono::seconds(4)) {
      continue;
    }
    const auto running = std::chrono::duration_cast<std::chrono::seconds>(now - began_).count();
    write(current_ + " (" + std::to_string(running) + " s of at most " + std::to_string(bound_.count()) + " s)", false);
  }
}

std::string card_table(const drill_card& card) {
  std::ostringstream out;
  out << "target: " << joined(card.command) << "\n"
      << "setup:  " << card.setup << "\n\n"
      << "| # | scenario | server | result | what it showed | figures |\n|---|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < card.target.size(); ++i) {
    const auto& r = card.target[i];
    out << "| " << (i < card.numbers.size() ? card.numbers[i] : static_cast<int>(i + 1)) << " | " << r.name
        << " | target | " << result_word(r) << " | " << r.detail << " | " << figures_text(r) << " |\n";
    if (i < card.reference.size()) {
      const auto& ref = card.reference[i];
      out << "|   |   | transient serve | " << result_word(ref) << " | " << ref.detail << " | " << figures_text(ref)
          << " |\n";
    }
  }
  out << fixes_text(card.target, card.numbers) << "\nthresholds:\n";
  for (const auto& [name, meaning] : card.thresholds) {
    out << "  " << name << ": " << meaning << "\n";
  }
  const auto passed = std::count_if(card.target.begin(), card.target.end(), [](const auto& r) { return r.passed; });
  out << "\nthe target passed " << passed << " of " << card.target.size() << " scenarios in "
      << seconds_text(card.seconds) << " s" << (all_passed(card.target) ? "" : " (FAILED)");
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

std::string drill_table(const std::vector<scenario_result>& results, double seconds, const std::vector<int>& numbers) {
  std::ostringstream out;
  std::size_t width = 8;
  for (const auto& r : results) {
    width = std::max(width, r.name.size());
  }
  const bool all = std::all_of(results.begin(), results.end(), [](const auto& r) { return r.passed; });
  out << "| # | scenario | result | what it showed | figures |\n|---|---|---|---|---|\n";
  for (std::size_t i = 0; i < results.size(); ++i) {
    const auto& r = results[i];
    out << "| " << (i < numbers.size() ? numbers[i] : static_cast<int>(i + 1)) << " | " << r.name << " | "
        << result_word(r) << " | " << r.detail << " | " << figures_text(r) << " |\n";
  }
  out << "\n"
      << std::count_if(results.begin(), results.end(), [](const auto& r) { return r.passed; }) << " of "
      << results.size() << " scenarios passed in " << seconds_text(seconds) << " s" << (all ? "" : " (FAILED)") << "\n"
      << fixes_text(results, numbers);
  return out.str();
}

std::string drill_json(const std::vector<scenario_result>& results, double seconds, bool quick) {
  std::ostringstream out;
  out << "{\"passed\":" << (all_passed(results) ? "true" : "false") << ",\"quick\":" << (quick ? "true" : "false")
      << ",\"seconds\":" << number(seconds) << ",\"scenarios\":" << scenarios_json(results) << "}\n";
  return out.str();
}

}  // namespace transient::tool
