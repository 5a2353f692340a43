// transient_bench_classify: the cost of classify() and of `ec == condition::X`.
// Goal (issue 2): classify <= 3 ns per call, no heap allocation (counter allocs_per_call).
#include <benchmark/benchmark.h>

#include <array>
#include <cerrno>
#include <system_error>

#include "support/allocation_counter.hpp"
#include "transient/errors/classify.hpp"

namespace {

// A mix of the codes an accept loop sees, so the table lookups are not one cached line.
const std::array<std::error_code, 8> codes{
    std::error_code(EAGAIN, std::system_category()),     std::error_code(EMFILE, std::system_category()),
    std::error_code(ECONNRESET, std::system_category()), std::error_code(EINTR, std::system_category()),
    std::error_code(ENFILE, std::generic_category()),    std::error_code(ENOBUFS, std::system_category()),
    std::error_code(EINVAL, std::system_category()),     std::error_code(ENOENT, std::system_category()),
};

void report_allocations(benchmark::State& state, std::size_t before) {
  const auto allocations = transient::bench::allocation_count.load() - before;
  state.counters["allocs_per_call"] =
      benchmark::Counter(static_cast<double>(allocations) / static_cast<double>(state.iterations()));
}

// Calls `check` on the codes in turn (with the call's number) as the benchmark's loop, and
// reports its heap allocations per call.
template <typename Check>
void measure(benchmark::State& state, Check check) {
  const auto before = transient::bench::allocation_count.load();
  std::size_t i = 0;
  for (auto _ : state) {
    const auto& ec = codes[i & (codes.size() - 1)];
    benchmark::DoNotOptimize(ec);
    const auto result = check(ec, i++);
    benchmark::DoNotOptimize(result);
  }
  report_allocations(state, before);
}

void BM_classify(benchmark::State& state) {
  measure(state,
          [](const std::error_code& ec, std::size_t) { return transient::classify(transient::operation::accept, ec); });
}
BENCHMARK(BM_classify);

void BM_classify_every_operation(benchmark::State& state) {
  measure(state, [](const std::error_code& ec, std::size_t i) {
    return transient::classify(static_cast<transient::operation>(i % transient::operation_count), ec);
  });
}
BENCHMARK(BM_classify_every_operation);

void BM_condition_equivalence(benchmark::State& state) {
  measure(state, [](const std::error_code& ec, std::size_t) { return ec == transient::condition::fd_exhausted; });
}
BENCHMARK(BM_condition_equivalence);

// Reference: the cheapest possible check, a compare of the raw errno values.
void BM_reference_errno_compare(benchmark::State& state) {
  measure(state, [](const std::error_code& ec, std::size_t) { return ec.value() == EMFILE || ec.value() == ENFILE; });
}
BENCHMARK(BM_reference_errno_compare);

}  // namespace

BENCHMARK_MAIN();
