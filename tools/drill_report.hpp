// What `transient drill` reports: each scenario's verdict and figures, as a table, as JSON,
// and the timelines of the exhaustion scenarios as an SVG chart.
#pragma once

#include <string>
#include <utility>
#include <vector>

namespace transient::tool {

/// One measured figure of a scenario.
struct figure {
  std::string name;  ///< JSON key and table label ("recovery_median_ms").
  double value = 0;  ///< The number.
};

/// One point of a timeline.
struct timeline_sample {
  double t = 0;     ///< Seconds since the scenario started.
  double live = 0;  ///< Connections the server holds (served and still open).
  double cpu = 0;   ///< Server CPU % over the last interval.
};

/// Live connections, paused intervals and CPU of one server over a scenario.
struct timeline {
  std::string title;                              ///< Chart title.
  double limit = 0;                               ///< Horizontal line: the descriptor limit / budget.
  std::string limit_label;                        ///< Its label.
  std::vector<timeline_sample> samples;           ///< In time order.
  std::vector<std::pair<double, double>> paused;  ///< Intervals in which accepting paused.
};

/// The verdict of one scenario.
struct scenario_result {
  std::string name;              ///< "backpressure", ...
  bool passed = false;           ///< Whether its claims held.
  std::string detail;            ///< One line: what was shown, or what failed.
  std::vector<figure> figures;   ///< Its measurements.
  std::vector<timeline> charts;  ///< Timelines for the SVG (scenarios 2 and 4).
  std::string verdict;           ///< The result's word ("LATE", "SPIN+FLOOD"); empty: PASS or FAIL.
};

/// The report card of `transient drill --target`: the target's scenarios, each followed by the
/// same scenario against `transient serve` (the reference, measured in the same run).
struct drill_card {
  std::vector<std::string> command;                             ///< The target's words, `{port}` kept.
  std::string setup;                                            ///< "RLIMIT_NOFILE 64 (soft and hard), HTTP".
  std::vector<scenario_result> target;                          ///< The target's results.
  std::vector<scenario_result> reference;                       ///< transient serve's (empty: --no-reference).
  std::vector<std::pair<std::string, std::string>> thresholds;  ///< Verdict name, what it means.
  double seconds = 0;                                           ///< Duration of the whole run.
  bool quick = false;                                           ///< --quick.
};

/// Progress on stderr: one rewritten line on a terminal, plain lines otherwise.
class progress_line {
 public:
  progress_line();
  /// Shows `text` as the current step.
  void show(const std::string& text);
  /// Shows `text` as a finished step (kept on screen).
  void done(const std::string& text);

 private:
  bool tty_;
};

/// The final table (plain text, one row per scenario).
[[nodiscard]] std::string drill_table(const std::vector<scenario_result>& results, double seconds);
/// One JSON object: passed, seconds, scenarios[{name, passed, detail, figures...}].
[[nodiscard]] std::string drill_json(const std::vector<scenario_result>& results, double seconds, bool quick);
/// The report card as a table (plain text), thresholds below it.
[[nodiscard]] std::string card_table(const drill_card& card);
/// The report card as one JSON object: passed, command, setup, thresholds, scenarios, reference.
[[nodiscard]] std::string card_json(const drill_card& card);
/// A self-contained SVG with one panel per timeline.
[[nodiscard]] std::string drill_svg(const std::vector<scenario_result>& results);

}  // namespace transient::tool
