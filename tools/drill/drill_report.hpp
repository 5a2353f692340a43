// What `transient drill` reports: each scenario's verdict and figures, as a table, as JSON,
// and the timelines of the exhaustion scenarios as an SVG chart.
#pragma once

#include <chrono>
#include <condition_variable>
#include <mutex>
#include <string>
#include <thread>
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
  double t = 0;         ///< Seconds since the scenario started.
  double live = 0;      ///< Connections the server holds (served and still open).
  double runnable = 0;  ///< Server runnable % (on a CPU or waiting for one) over the last interval.
};

/// One release of a held connection in a recovery trial, and when the waiting client was served.
struct release_mark {
  double released = 0;    ///< Seconds since the scenario started.
  double served = -1;     ///< When the waiting client got its answer; negative: it did not.
  double latency_ms = 0;  ///< served - released, in ms (as measured, CPU waits included).
};

/// Live connections, paused intervals and CPU of one server over a scenario.
struct timeline {
  std::string title;                              ///< Chart title.
  double limit = 0;                               ///< Horizontal line: the descriptor limit / budget.
  std::string limit_label;                        ///< Its label.
  std::vector<timeline_sample> samples;           ///< In time order.
  std::vector<std::pair<double, double>> paused;  ///< Intervals in which accepting paused.
  std::vector<release_mark> releases;             ///< Releases and the served moments after them.
};

/// The verdict of one scenario.
struct scenario_result {
  std::string name;              ///< "backpressure", ...
  bool passed = false;           ///< Whether its claims held.
  std::string detail;            ///< One line: what was shown, or what failed.
  std::vector<figure> figures;   ///< Its measurements.
  std::vector<timeline> charts;  ///< Timelines for the SVG (scenarios 2 and 4).
  std::string verdict;           ///< The result's word ("LATE", "SPIN+FLOOD"); empty: PASS or FAIL.
  std::string fix;               ///< When it failed: one line of what to change.
};

/// The report card of `transient drill --target`: the target's scenarios, each followed by the
/// same scenario against `transient serve` (the reference, measured in the same run).
struct drill_card {
  std::vector<std::string> command;                             ///< The target's words, `{port}` kept.
  std::string setup;                                            ///< "RLIMIT_NOFILE 64 (soft and hard), HTTP".
  std::vector<int> numbers;                                     ///< Each result's scenario number.
  std::vector<scenario_result> target;                          ///< The target's results.
  std::vector<scenario_result> reference;                       ///< transient serve's (empty: --no-reference).
  std::vector<std::pair<std::string, std::string>> thresholds;  ///< Verdict name, what it means.
  double seconds = 0;                                           ///< Duration of the whole run.
  bool quick = false;                                           ///< --quick.
};

/// Progress on stderr: one rewritten line on a terminal, plain lines otherwise. Between
/// begin() and the next done(), a quiet step is shown again every 4 s with its time and bound,
/// so that no scenario runs silent for longer.
class progress_line {
 public:
  progress_line();
  ~progress_line();
  progress_line(const progress_line&) = delete;
  progress_line& operator=(const progress_line&) = delete;
  /// Starts a step that may take up to `bound`: shows `text`.
  void begin(const std::string& text, std::chrono::seconds bound);
  /// Shows `text` as the current step.
  void show(const std::string& text);
  /// Shows `text` as a finished step (kept on screen).
  void done(const std::string& text);

 private:
  void write(const std::string& text, bool finished);
  void tick();

  bool tty_;
  std::mutex mutex_;
  std::condition_variable wake_;
  std::string current_;  // the step in progress; empty: none
  std::chrono::steady_clock::time_point began_{};
  std::chrono::steady_clock::time_point shown_{};
  std::chrono::seconds bound_{0};
  bool stop_ = false;
  std::thread ticker_;
};

/// The final table (plain text, one row per scenario), each row numbered by `numbers` (the
/// scenarios' numbers; 1, 2, ... where it has none).
[[nodiscard]] std::string drill_table(const std::vector<scenario_result>& results, double seconds,
                                      const std::vector<int>& numbers = {});
/// One JSON object: passed, seconds, scenarios[{name, passed, detail, figures...}].
[[nodiscard]] std::string drill_json(const std::vector<scenario_result>& results, double seconds, bool quick);
/// The report card as a table (plain text), thresholds below it.
[[nodiscard]] std::string card_table(const drill_card& card);
/// The report card as one JSON object: passed, command, setup, thresholds, scenarios, reference.
[[nodiscard]] std::string card_json(const drill_card& card);
/// A self-contained SVG with one panel per timeline.
[[nodiscard]] std::string drill_svg(const std::vector<scenario_result>& results);

}  // namespace transient::tool
