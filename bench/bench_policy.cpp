// The accept policy's cost on the common path: ready -> accept -> accepted -> release.
// Heap allocations are counted by the replacement global operator new/delete of
// support/allocation_counter.hpp; the figure reported is allocations per accepted connection.
#include <benchmark/benchmark.h>

#include <atomic>
#include <cerrno>
#include <chrono>
#include <cstdlib>
#include <new>

#include "support/allocation_counter.hpp"
#include "transient/policy/accept_policy.hpp"

namespace {
// Counts every operator new of the program (the file replaces the global allocation functions).
const auto& allocations = transient::bench::allocation_count;
}  // namespace

namespace {

using transient::accept_policy;
using transient::step;

transient::accept_policy_config quiet_config(std::uint32_t accepts_per_ready) {
  transient::accept_policy_config config;
  config.accepts_per_ready = accepts_per_ready;
  config.seed = 1;
  config.sink = [](const transient::policy_event&) {};
  return config;
}

// One connection per ready event: on_ready (takes a place) -> accept -> on_accepted (hands
// out the permit; the per-ready cap of 1 ends the burst without a second reservation) ->
// the permit is released.
void BM_accept_path(benchmark::State& state) {
  transient::connection_budget budget(1000);
  accept_policy policy(budget, quiet_config(1));
  const auto now = accept_policy::clock::now();
  std::uint64_t connections = 0;
  const std::size_t before = allocations.load();
  for (auto _ : state) {
    transient::decision d = policy.on_ready(now);
    benchmark::DoNotOptimize(d);
    transient::permit p;
    d = policy.on_accepted(now, p);
    benchmark::DoNotOptimize(d);
    p.release();
    ++connections;
  }
  const std::size_t allocated = allocations.load() - before;
  state.counters["allocs_per_conn"] = static_cast<double>(allocated) / static_cast<double>(connections);
  if (policy.metrics().accepted != connections) {
    state.SkipWithError("the policy did not accept every connection");
  }
}
BENCHMARK(BM_accept_path);

// A burst as a level-triggered loop sees it: 64 connections per ready event, then EAGAIN.
void BM_accept_burst_64(benchmark::State& state) {
  transient::connection_budget budget(1000);
  accept_policy policy(budget, quiet_config(64));
  const auto now = accept_policy::clock::now();
  const std::error_code would_block(EAGAIN, std::system_category());
  std::uint64_t connections = 0;
  const std::size_t before = allocations.load();
  for (auto _ : state) {
    transient::decision d = policy.on_ready(now);
    for (int i = 0; i < 63 && d.next == step::accept; ++i) {
      transient::permit p;
      d = policy.on_accepted(now, p);
      ++connections;
    }
    d = policy.on_accept_failed(now, would_block);
    benchmark::DoNotOptimize(d);
  }
  const std::size_t allocated = allocations.load() - before;
  state.counters["allocs_per_conn"] = static_cast<double>(allocated) / static_cast<double>(connections);
  state.counters["ns_per_conn"] =
      benchmark::Counter(static_cast<double>(connections), benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
}
BENCHMARK(BM_accept_burst_64);

// A release from another thread's point of view: one atomic add, no wake-up (nobody waits).
void BM_permit_release_no_waiter(benchmark::State& state) {
  transient::connection_budget budget(1000);
  for (auto _ : state) {
    transient::permit p = budget.try_acquire();
    benchmark::DoNotOptimize(p.release());
  }
}
BENCHMARK(BM_permit_release_no_waiter);

// One budget shared by N loops is one atomic word: every take and every release of a permit is
// a read-modify-write of it, from whichever thread runs. Here N threads take and release
// permits of one shared budget as fast as they can, the worst case (a real loop does ~20 us of
// other work per connection between the two). With UseRealTime the reported Time is wall time
// per permit over all threads together (the inverse of the machine's permit rate);
// ns_per_permit_per_thread is what one thread waits for its own take + release.
// BM_permit_private is the same with a budget per thread (no sharing): the difference between
// the two is what the sharing costs. With more threads than cores, threads also queue for a
// core, which grows the per-thread figure in both alike.
template <bool Shared>
void permit_take_release(benchmark::State& state) {
  static transient::connection_budget shared(1000);
  transient::connection_budget own(1000);
  transient::connection_budget& budget = Shared ? shared : own;
  const auto start = std::chrono::steady_clock::now();
  for (auto _ : state) {
    transient::permit p = budget.try_acquire();
    benchmark::DoNotOptimize(p.release());
  }
  const double ns = std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - start).count();
  state.counters["ns_per_permit_per_thread"] =
      benchmark::Counter(ns / static_cast<double>(state.iterations()), benchmark::Counter::kAvgThreads);
  if (budget.live() > static_cast<std::uint64_t>(state.threads())) {
    state.SkipWithError("a permit was not given back");
  }
}

void BM_permit_contended(benchmark::State& state) { permit_take_release<true>(state); }
BENCHMARK(BM_permit_contended)->Threads(1)->Threads(2)->Threads(4)->Threads(8)->UseRealTime();

void BM_permit_private(benchmark::State& state) { permit_take_release<false>(state); }
BENCHMARK(BM_permit_private)->Threads(1)->Threads(2)->Threads(4)->Threads(8)->UseRealTime();

}  // namespace

BENCHMARK_MAIN();
