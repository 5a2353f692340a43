// `transient drill --target`: the drill judges small servers written for the test (re-arm,
// sleep, die, ignore SIGTERM, fork) as it should, passes `transient serve`, ends on time, and
// leaves no process behind.
#include <gmock/gmock.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <unistd.h>

#include <sys/wait.h>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <fstream>
#include <string>

#include "support/run_command.hpp"

namespace {

using testing::HasSubstr;
using namespace std::chrono_literals;

using clock_type = std::chrono::steady_clock;

const std::string server = TRANSIENT_DRILL_TARGET_SERVER;

// The JSON object of the target's scenario named `name` (scenario objects hold no nested
// objects; the target's scenarios come before the reference's).
std::string scenario_object(const std::string& json, const std::string& name) {
  const std::size_t at = json.find("{\"name\":\"" + name + "\"");
  if (at == std::string::npos) {
    return {};
  }
  return json.substr(at, json.find('}', at) - at + 1);
}

// The value of figure `name` in a scenario object; NAN if absent or null.
double figure(const std::string& object, const std::string& name) {
  const std::size_t at = object.find("\"" + name + "\":");
  return at == std::string::npos ? NAN : std::strtod(object.c_str() + at + name.size() + 3, nullptr);
}

struct drill_run {
  transient::test::command_result result;
  double seconds = 0;
};

// Runs `transient drill --target COMMAND --quick --json ARGS...`, bounded.
drill_run drill(const std::string& command, std::vector<std::string> args = {}, std::chrono::milliseconds bound = 60s) {
  args.insert(args.begin(), {"drill", "--target", command, "--quick", "--json"});
  const auto start = clock_type::now();
  drill_run run{transient::test::run_command(TRANSIENT_CLI_PATH, args, bound), 0};
  run.seconds = std::chrono::duration<double>(clock_type::now() - start).count();
  return run;
}

// The object of the scenario `name` in a drill `run` that failed (exit status 1), which must
// give the target the verdict `verdict`.
std::string judged(const drill_run& run, const std::string& name, const std::string& verdict) {
  const auto& r = run.result;
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const std::string object = scenario_object(r.out, name);
  EXPECT_THAT(object, HasSubstr("\"verdict\":\"" + verdict + "\"")) << object;
  return object;
}

// A file name for a pid, unique to this test process.
std::string pid_path(const std::string& what) {
  return "/tmp/transient_drill_target_" + std::to_string(::getpid()) + "_" + what + ".pid";
}

pid_t read_pid(const std::string& path) {
  std::ifstream in(path);
  pid_t pid = -1;
  in >> pid;
  return pid;
}

// True if `pid` no longer exists (not even as a zombie).
bool gone(pid_t pid) { return ::kill(pid, 0) != 0 && errno == ESRCH; }

// The process whose pid the test server wrote to the file `pids` is gone (`what` says which
// it is); the file is removed.
void expect_gone(const std::string& pids, const std::string& what) {
  const pid_t pid = read_pid(pids);
  std::remove(pids.c_str());
  ASSERT_GT(pid, 0) << what;
  EXPECT_TRUE(gone(pid)) << what;
}

// Two processes that spin for at most `bound` (both cores busy, as on a loaded CI machine);
// killed and reaped when it goes.
class cpu_burners {
 public:
  explicit cpu_burners(std::chrono::seconds bound) {
    for (auto& pid : pids_) {
      pid = ::fork();
      if (pid == 0) {
        const auto end = clock_type::now() + bound;
        while (clock_type::now() < end) {
        }
        ::_exit(0);
      }
    }
  }
  ~cpu_burners() {
    for (const pid_t pid : pids_) {
      if (pid > 0) {
        ::kill(pid, SIGKILL);
        ::waitpid(pid, nullptr, 0);
      }
    }
  }
  cpu_burners(const cpu_burners&) = delete;
  cpu_burners& operator=(const cpu_burners&) = delete;

 private:
  std::array<pid_t, 2> pids_{-1, -1};
};

TEST(DrillTargetCli, TransientServePassesEveryScenarioAsTargetAndReference) {
  const std::string svg = "/tmp/transient_drill_target_" + std::to_string(::getpid()) + ".svg";
  const auto run = drill(std::string(TRANSIENT_CLI_PATH) + " serve --listen 127.0.0.1:{port}", {"--svg", svg},
                         std::chrono::seconds(90));
  const auto& r = run.result;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_EQ(r.out.rfind("{\"passed\":true,", 0), 0U) << r.out;
  for (const auto* name :
       {"exhaustion and recovery", "CPU and log while exhausted", "backpressure", "clean stop", "slow clients"}) {
    const std::string object = scenario_object(r.out, name);
    EXPECT_THAT(object, HasSubstr("\"passed\":true")) << name << ": " << object;
  }
  const std::size_t reference = r.out.find("\"reference\":[");
  ASSERT_NE(reference, std::string::npos);
  EXPECT_EQ(r.out.find("\"passed\":false"), std::string::npos) << "the reference passes too: " << r.out;
  const std::string exhaustion = scenario_object(r.out, "exhaustion and recovery");
  EXPECT_LT(figure(exhaustion, "recovery_max_own_ms"), 100) << exhaustion;
  EXPECT_EQ(figure(exhaustion, "probes_served"), 3) << exhaustion;
  EXPECT_THAT(r.out, HasSubstr("\"thresholds\":{\"spin\":"));
  std::ifstream in(svg);
  const std::string chart((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  EXPECT_THAT(chart, HasSubstr("exhaustion and recovery: transient, RLIMIT_NOFILE 64"));
  EXPECT_THAT(chart, HasSubstr("exhaustion and recovery: transient serve, RLIMIT_NOFILE 64"));
  std::remove(svg.c_str());
}

TEST(DrillTargetCli, ReArmOnEmfileIsJudgedASpinAndAFlood) {
  const auto run = drill(server + " rearm {port}", {"--scenarios", "2", "--no-reference"});
  const std::string object = judged(run, "CPU and log while exhausted", "SPIN+FLOOD");
  EXPECT_GT(figure(object, "runnable_percent_exhausted"), 20) << object;
  EXPECT_GT(figure(object, "log_lines_per_s"), 20) << object;
  EXPECT_THAT(object, HasSubstr("\"fix\":\"stop polling the listener while accept fails with EMFILE")) << object;
}

TEST(DrillTargetCli, ASpinningTargetIsJudgedASpinWhileBothCoresAreBusy) {
  // A CPU share shrinks with the load; the time the target is runnable does not.
  const cpu_burners burners(std::chrono::seconds(60));
  const auto r = transient::test::run_command(
      TRANSIENT_CLI_PATH,
      {"drill", "--target", server + " rearm {port}", "--quick", "--scenarios", "2", "--no-reference"},
      std::chrono::seconds(60));
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  EXPECT_THAT(r.out, HasSubstr("| 2 | CPU and log while exhausted | target | SPIN+FLOOD | runnable ")) << r.out;
  EXPECT_THAT(r.out, HasSubstr("what to change:\n  2 CPU and log while exhausted (SPIN+FLOOD): stop polling the "
                               "listener while accept fails with EMFILE"))
      << r.out;
  EXPECT_THAT(r.err, HasSubstr("[1/1] scenario 2, CPU and log while exhausted")) << r.err;
}

TEST(DrillTargetCli, AServerThatClosesAfterEachAnswerIsReportedAsNotFillableWithTheWayToDrillIt) {
  const auto run = drill(server + " close {port}", {"--scenarios", "1,2", "--no-reference"});
  for (const auto* name : {"exhaustion and recovery", "CPU and log while exhausted"}) {
    const std::string object = judged(run, name, "CANNOT FILL");
    EXPECT_THAT(object, HasSubstr("it does not keep connections")) << object;
    EXPECT_THAT(object, HasSubstr("could not fill its descriptor table")) << object;
    EXPECT_THAT(object, HasSubstr("--protocol tcp")) << object;
    EXPECT_THAT(object, testing::Not(HasSubstr("did not bind"))) << object;
  }
  // As the fix says: with --protocol tcp the drill holds connections that send nothing.
  const auto tcp = drill(server + " close {port}", {"--scenarios", "1", "--no-reference", "--protocol", "tcp"});
  EXPECT_EQ(tcp.result.exit_code, 0) << tcp.result.out << tcp.result.err;
}

TEST(DrillTargetCli, AServerThatLeftTheGroupAndIgnoresSigtermIsNoCleanStop) {
  // The drill's child (sh) dies of SIGTERM; the server, in a session of its own, ignores it and
  // listens on (it closes each connection after answering, so no connection stays open).
  const std::string pids = pid_path("escaped");
  const auto run = drill("sh -c 'setsid " + server + " close,ignore-term {port} " + pids + " & wait'",
                         {"--scenarios", "4", "--no-reference"});
  const std::string object = judged(run, "clean stop", "IGNORES SIGTERM");
  EXPECT_THAT(object, HasSubstr("still listened")) << object;
  EXPECT_EQ(figure(object, "escaped_listeners"), 1) << object;
  expect_gone(pids, "the drill left the escaped server running");
}

TEST(DrillTargetCli, FixedOneSecondSleepIsJudgedLate) {
  const auto run = drill(server + " sleep {port}", {"--scenarios", "1", "--no-reference"});
  const std::string object = judged(run, "exhaustion and recovery", "LATE");
  EXPECT_GT(figure(object, "recovery_max_ms"), 100) << object;
  EXPECT_LT(figure(object, "recovery_max_ms"), 2500) << object;
  EXPECT_EQ(figure(object, "probes_served"), 3) << object;
}

TEST(DrillTargetCli, ExitOnFirstAcceptErrorIsJudgedDead) {
  const auto run = drill(server + " die {port}", {"--scenarios", "1,2", "--no-reference"});
  for (const auto* name : {"exhaustion and recovery", "CPU and log while exhausted"}) {
    const std::string object = judged(run, name, "DEAD");
    EXPECT_THAT(object, HasSubstr("exit status 1")) << object;
  }
}

TEST(DrillTargetCli, IgnoringSigtermIsJudgedAndKilledOnTime) {
  const std::string pids = pid_path("ignore");
  const auto run = drill(server + " ignore-term {port} " + pids, {"--scenarios", "4", "--no-reference"});
  const std::string object = judged(run, "clean stop", "IGNORES SIGTERM");
  EXPECT_EQ(figure(object, "processes_after_kill"), 0) << object;
  EXPECT_LT(run.seconds, 10) << "stop bound 2 s, then SIGKILL";
  expect_gone(pids, "the drill left its target running");
}

TEST(DrillTargetCli, AForkedProcessIsReportedAndLeftBehindByNothing) {
  const std::string pids = pid_path("fork");
  const auto run = drill(server + " fork {port} " + pids, {"--scenarios", "4", "--no-reference"});
  const std::string object = judged(run, "clean stop", "LEFT PROCESSES");
  EXPECT_EQ(figure(object, "processes_left"), 1) << object;
  expect_gone(pids, "the forked process outlived the drill");
}

TEST(DrillTargetCli, AForkedProcessIsKilledWhenTheDrillEndsAnyScenario) {
  // Exhaustion and recovery never stops the target gently: the drill still ends its group.
  const std::string pids = pid_path("fork1");
  const auto run = drill(server + " fork {port} " + pids, {"--scenarios", "1", "--no-reference"});
  EXPECT_EQ(run.result.exit_code, 0) << run.result.out << run.result.err;
  expect_gone(pids, "the forked process outlived the drill");
}

TEST(DrillTargetCli, ATargetThatFailsToStartOrNeverListensGetsAClearVerdictInTime) {
  const auto fails = drill("/bin/false {port}", {"--scenarios", "4", "--no-reference"});
  EXPECT_EQ(fails.result.exit_code, 1);
  EXPECT_THAT(scenario_object(fails.result.out, "clean stop"),
              HasSubstr("did not start: exited with status 1 before it answered"));
  const auto silent = drill("sleep 30", {"--scenarios", "4", "--no-reference", "--ready-timeout", "300ms"});
  EXPECT_EQ(silent.result.exit_code, 1);
  EXPECT_THAT(scenario_object(silent.result.out, "clean stop"), HasSubstr("never listened on 127.0.0.1:"));
  EXPECT_LT(silent.seconds, 5) << "the ready timeout bounds the wait; sleep 30 is killed";
}

TEST(DrillTargetCli, AMissingProgramIsAUsageErrorAtOnce) {
  const auto missing = drill("/nonexistent/server {port}");
  EXPECT_EQ(missing.result.exit_code, 2);
  EXPECT_EQ(
      missing.result.err,
      "transient drill: cannot run '/nonexistent/server': no such executable file (try 'transient drill --help')\n");
  EXPECT_LT(missing.seconds, 2) << "no scenario runs";
  const auto unknown = drill("no-such-server-program {port}");
  EXPECT_EQ(unknown.result.exit_code, 2);
  EXPECT_THAT(unknown.result.err, HasSubstr("cannot run 'no-such-server-program': not found in PATH"));
}

TEST(DrillTargetCli, AQuietScenarioShowsProgressWithItsBoundEveryFewSeconds) {
  const auto silent = drill("sleep 30", {"--scenarios", "4", "--no-reference", "--ready-timeout", "7s"});
  EXPECT_THAT(silent.result.err, HasSubstr("scenario 4, clean stop ... (4 s of at most 20 s)")) << silent.result.err;
  EXPECT_LT(silent.seconds, 12);
}

TEST(DrillTargetCli, ACommandWithoutThePortGetsAHint) {
  const auto silent = drill("sleep 30", {"--scenarios", "4", "--no-reference", "--ready-timeout", "300ms"});
  EXPECT_THAT(silent.result.err, HasSubstr("the command has no {port}")) << silent.result.err;
  EXPECT_THAT(silent.result.err, HasSubstr("writes it where {port} stands")) << silent.result.err;
  const std::string object = scenario_object(silent.result.out, "clean stop");
  EXPECT_THAT(object, HasSubstr("\"fix\":\"make the command listen on 127.0.0.1:{port}")) << object;
}

TEST(DrillTargetCli, TheCommandIsSplitLikeShellWordsWithThePortInPlace) {
  // The server's third argument is its pid file: a name with a space, quoted.
  const std::string pids = pid_path("split word");
  const auto run =
      drill(server + " good {port} '" + pids + "' \"c\\\"d\" e\\ f", {"--scenarios", "5", "--no-reference"});
  const auto& r = run.result;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  EXPECT_THAT(r.out,
              HasSubstr("\"command\":[\"" + server + "\",\"good\",\"{port}\",\"" + pids + "\",\"c\\\"d\",\"e f\"]"));
  EXPECT_GT(read_pid(pids), 0) << "the quoted word reached the server whole";
  EXPECT_THAT(scenario_object(r.out, "slow clients"), HasSubstr("\"passed\":true"));
  std::remove(pids.c_str());
}

TEST(DrillTargetCli, TcpProtocolJudgesAcceptsWithoutHttp) {
  const auto run = drill(server + " good {port}", {"--scenarios", "1", "--no-reference", "--protocol", "tcp"});
  const auto& r = run.result;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string object = scenario_object(r.out, "exhaustion and recovery");
  EXPECT_EQ(figure(object, "probes_served"), 3) << object;
}

// The overload scenario's counts in `object` add up: every client connected, dropped or refused
// at connect; every connected one answered in time, late, or not at all.
void expect_overload_accounted(const std::string& object) {
  EXPECT_EQ(figure(object, "connected") + figure(object, "dropped") + figure(object, "refused_connect"),
            figure(object, "clients"))
      << object;
  EXPECT_EQ(figure(object, "answered_in_time") + figure(object, "waste") + figure(object, "late_503") +
                figure(object, "no_answer"),
            figure(object, "connected"))
      << object;
  EXPECT_EQ(figure(object, "goodput") + figure(object, "refused_503_in_time"), figure(object, "answered_in_time"))
      << object;
  EXPECT_GE(figure(object, "netns_listen_overflows"), 0) << "read from /proc/net/netstat: " << object;
}

TEST(DrillTargetCli, OverloadShowsTheWasteOfABlockingHandler) {
  // 300 clients at once, each giving up after 1 s, against one thread answering 100 a second:
  // the clients it answers after their first second are served for nobody.
  const auto run = drill(server + " handler {port}", {"--scenarios", "6", "--no-reference"});
  const auto& r = run.result;
  EXPECT_EQ(r.exit_code, 1) << r.out << r.err;
  const std::string object = scenario_object(r.out, "overload");
  EXPECT_THAT(object, HasSubstr("\"verdict\":\"WASTE")) << object;
  EXPECT_EQ(figure(object, "clients"), 300) << object;
  EXPECT_GT(figure(object, "waste"), 0) << object;
  EXPECT_GT(figure(object, "goodput"), 0) << object;
  EXPECT_THAT(object, HasSubstr("\"fix\":\"do not serve a connection that waited in the accept queue")) << object;
  expect_overload_accounted(object);
  EXPECT_THAT(r.err, HasSubstr("[1/1] scenario 6, overload")) << r.err;
}

TEST(DrillTargetCli, OverloadPassesAServerThatAnswersAtOnce) {
  const auto run = drill(server + " good {port}", {"--scenarios", "6", "--no-reference"});
  const auto& r = run.result;
  EXPECT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string object = scenario_object(r.out, "overload");
  EXPECT_THAT(object, HasSubstr("\"verdict\":\"PASS\"")) << object;
  EXPECT_EQ(figure(object, "waste"), 0) << object;
  EXPECT_EQ(figure(object, "no_answer"), 0) << object;
  expect_overload_accounted(object);
  // It needs each answer's status: over TCP alone there is nothing to count.
  const auto tcp = drill(server + " good {port}", {"--scenarios", "6", "--no-reference", "--protocol", "tcp"});
  EXPECT_EQ(tcp.result.exit_code, 0) << tcp.result.out << tcp.result.err;
  EXPECT_THAT(scenario_object(tcp.result.out, "overload"), HasSubstr("\"verdict\":\"N/A\""));
}

TEST(DrillTargetCli, ARestartThatClosesTheListenerLosesRequestsAndSaysSo) {
  const auto run =
      drill(server + " hup-reopen {port}", {"--scenarios", "7", "--no-reference", "--restart", "kill -HUP {pid}"});
  const std::string object = judged(run, "restart", "RESTART LOSS");
  EXPECT_EQ(figure(object, "restarts"), 5) << object;
  EXPECT_GT(figure(object, "refused") + figure(object, "reset") + figure(object, "unanswered"), 0) << object;
  EXPECT_GT(figure(object, "answered"), 0) << object;
  EXPECT_THAT(run.result.out, HasSubstr("hand it to the new process")) << "the fix";
}

TEST(DrillTargetCli, ARestartThatKeepsADescriptorEachTimeIsLeftDescriptors) {
  const auto run =
      drill(server + " hup-leak {port}", {"--scenarios", "7", "--no-reference", "--restart", "kill -HUP {pid}"});
  const std::string object = judged(run, "restart", "LEFT DESCRIPTORS");
  EXPECT_EQ(figure(object, "restarts"), 5) << object;
  EXPECT_EQ(figure(object, "listener_descriptors_after") - figure(object, "listener_descriptors_before"), 5) << object;
  EXPECT_EQ(figure(object, "refused") + figure(object, "reset") + figure(object, "unanswered"), 0) << object;
  EXPECT_EQ(figure(object, "restarts_with_new_listeners"), 0) << "the same process kept listening: " << object;
}

TEST(DrillTargetCli, TransientServeRestartedInPlaceLosesNothing) {
  const auto run = drill(std::string(TRANSIENT_CLI_PATH) + " serve --listen 127.0.0.1:{port}",
                         {"--scenarios", "7", "--no-reference", "--restart", "kill -HUP {pid}"});
  const auto& r = run.result;
  ASSERT_EQ(r.exit_code, 0) << r.out << r.err;
  const std::string object = scenario_object(r.out, "restart");
  EXPECT_THAT(object, HasSubstr("\"verdict\":\"PASS\"")) << object;
  EXPECT_EQ(figure(object, "restarts"), 5) << object;
  EXPECT_EQ(figure(object, "restarts_with_new_listeners"), 5) << "each SIGHUP started a successor: " << object;
  EXPECT_GT(figure(object, "answered"), 0) << object;
  EXPECT_EQ(figure(object, "refused") + figure(object, "reset") + figure(object, "unanswered"), 0) << object;
}

TEST(DrillTargetCli, WithoutRestartTheRestartScenarioIsSkippedAndSaysWhy) {
  const auto run = drill(server + " good {port}", {"--scenarios", "7", "--no-reference"});
  ASSERT_EQ(run.result.exit_code, 0) << run.result.out << run.result.err;
  const std::string object = scenario_object(run.result.out, "restart");
  EXPECT_THAT(object, HasSubstr("\"verdict\":\"SKIPPED\"")) << object;
  EXPECT_THAT(object, HasSubstr("needs --restart")) << object;
  const auto missing = transient::test::run_command(
      TRANSIENT_CLI_PATH, {"drill", "--target", server + " good {port}", "--restart", "no-such-program-here {pid}"},
      std::chrono::seconds(5));
  EXPECT_EQ(missing.exit_code, 2);
  EXPECT_THAT(missing.err, HasSubstr("--restart: cannot run 'no-such-program-here'"));
}

TEST(DrillTargetCli, BadTargetArgumentsGetOneLineAndExitTwo) {
  const auto quote = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--target", "server 'port"});
  EXPECT_EQ(quote.exit_code, 2);
  EXPECT_EQ(quote.err, "transient drill: unterminated single quote in the command (try 'transient drill --help')\n");
  const auto protocol =
      transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--target", "x {port}", "--protocol", "udp"});
  EXPECT_EQ(protocol.exit_code, 2);
  EXPECT_THAT(protocol.err, HasSubstr("--protocol is http or tcp, not 'udp'"));
  const auto empty = transient::test::run_command(TRANSIENT_CLI_PATH, {"drill", "--target", "  "});
  EXPECT_EQ(empty.exit_code, 2);
  EXPECT_THAT(empty.err, HasSubstr("the command is empty"));
  for (const auto* list : {"1,,2", "12", "1,", ",1", "1,1", "8", "0", "07", ""}) {
    const auto bad = transient::test::run_command(TRANSIENT_CLI_PATH,
                                                  {"drill", "--target", server + " good {port}", "--scenarios", list},
                                                  std::chrono::seconds(5));
    EXPECT_EQ(bad.exit_code, 2) << list;
    EXPECT_EQ(std::count(bad.err.begin(), bad.err.end(), '\n'), 1) << list << ": " << bad.err;
  }
}

}  // namespace
