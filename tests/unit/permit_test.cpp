// A permit owns its place: it keeps its budget (a shared_budget) and its peer_limit alive,
// so it may outlive the policy, loop or server that issued it; a reservation is given back
// without counting a release, a connection's place with one.
#include <arpa/inet.h>
#include <gtest/gtest.h>
#include <netinet/in.h>

#include <chrono>
#include <memory>
#include <utility>

#include "transient/policy/accept_policy.hpp"
#include "transient/policy/budget.hpp"

namespace transient {
namespace {

using namespace std::chrono_literals;

peer_key v4(const char* text) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  EXPECT_EQ(inet_pton(AF_INET, text, &a.sin_addr), 1);
  return peer_key_of(reinterpret_cast<const sockaddr*>(&a), sizeof a);
}

accept_policy_config quiet() {
  accept_policy_config c;
  c.sink = [](const policy_event&) {};
  return c;
}

TEST(Permit, KeepsItsSharedBudgetAliveUntilItIsReleased) {
  auto budget = shared_budget::create(2);
  const std::weak_ptr<shared_budget> watch = budget;
  permit p = budget->budget().try_acquire();
  ASSERT_TRUE(p);
  budget.reset();
  ASSERT_FALSE(watch.expired()) << "the budget went away under a live permit";
  EXPECT_EQ(p.budget()->live(), 1U);
  EXPECT_EQ(p.budget()->peak(), 1U);
  p.release();
  EXPECT_FALSE(p);
  EXPECT_TRUE(watch.expired()) << "the released permit still holds its budget";
}

TEST(Permit, FromAPolicyOutlivesThePolicyAndTheBudget) {
  auto budget = shared_budget::create(2);
  const std::weak_ptr<shared_budget> watch = budget;
  const auto now = accept_policy::time_point{} + 1h;
  permit served;
  {
    accept_policy policy(budget->budget(), quiet());
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    ASSERT_FALSE(policy.on_accepted(now, served, v4("10.0.0.1")).shed_accepted);
    EXPECT_EQ(budget->budget().live(), 2U) << "the connection and the next accept's reservation";
  }  // the policy cancels its reservation
  budget.reset();
  ASSERT_FALSE(watch.expired());
  EXPECT_EQ(served.budget()->live(), 1U);
  served = permit{};  // move-assigning releases the place held
  EXPECT_TRUE(watch.expired());
}

// The policy's reservation for its accept in flight refers to the budget without holding its
// owner (the policy keeps its budget alive); admitted, it holds the owner like any permit. So
// the accept that ends a burst, finding no client, costs no reference count.
TEST(Permit, APolicysReservationHoldsTheBudgetsOwnerOnlyOnceAdmitted) {
  auto budget = shared_budget::create(4);
  const auto now = accept_policy::time_point{} + 1h;
  accept_policy policy(budget->budget(), quiet());
  ASSERT_EQ(policy.on_ready(now).next, step::accept);
  EXPECT_EQ(budget->budget().live(), 1U);
  EXPECT_EQ(budget.use_count(), 1) << "the reservation for the accept in flight holds the budget's owner";
  permit served;
  ASSERT_FALSE(policy.on_accepted(now, served, v4("10.0.0.1")).shed_accepted);
  EXPECT_EQ(budget->budget().live(), 2U) << "the connection and the next accept's reservation";
  EXPECT_EQ(budget.use_count(), 2) << "only the admitted permit holds the budget's owner";
  (void)policy.on_accept_failed(now, std::make_error_code(std::errc::resource_unavailable_try_again));
  EXPECT_EQ(budget->budget().live(), 1U);
  EXPECT_EQ(budget.use_count(), 2);
  served.release();
  EXPECT_EQ(budget.use_count(), 1);
  EXPECT_EQ(budget->budget().live(), 0U);
}

TEST(Permit, KeepsItsPeerLimitAliveAndGivesThePeerItsPlaceBack) {
  auto budget = shared_budget::create(4);
  auto peers = std::make_shared<peer_limit>(1, 64, 7);
  const std::weak_ptr<peer_limit> watch = peers;
  accept_policy_config c = quiet();
  c.peers = peers;
  c.shed = shed_mode::close;
  const auto now = accept_policy::time_point{} + 1h;
  permit first;
  {
    accept_policy policy(budget->budget(), c);
    ASSERT_EQ(policy.on_ready(now).next, step::accept);
    ASSERT_FALSE(policy.on_accepted(now, first, v4("10.0.0.1")).shed_accepted);
    permit second;
    EXPECT_TRUE(policy.on_accepted(now, second, v4("10.0.0.1")).shed_accepted) << "over the cap of 1";
    EXPECT_FALSE(second);
  }
  c.peers.reset();
  EXPECT_EQ(peers->count(v4("10.0.0.1")), 1U);
  peers.reset();
  ASSERT_FALSE(watch.expired()) << "the peer_limit went away under a permit that holds a place in it";
  permit moved = std::move(first);
  EXPECT_FALSE(first);  // NOLINT(bugprone-use-after-move): a moved-from permit holds nothing
  EXPECT_EQ(budget->budget().live(), 1U);
  moved.release();
  EXPECT_TRUE(watch.expired());
  EXPECT_EQ(budget->budget().live(), 0U);
}

TEST(Permit, AReservationIsCancelledAndAConnectionReleased) {
  connection_budget budget(2);
  const std::uint16_t start = budget.generation();
  permit reservation = budget.try_reserve();
  ASSERT_TRUE(reservation.is_reservation());
  EXPECT_EQ(budget.live(), 1U);
  EXPECT_EQ(budget.peak(), 0U) << "a reservation is not a connection";
  reservation.release();
  EXPECT_EQ(budget.live(), 0U);
  EXPECT_EQ(budget.generation(), start) << "no descriptor was freed: not a release";

  permit connection = budget.try_acquire();
  ASSERT_TRUE(connection);
  EXPECT_FALSE(connection.is_reservation());
  EXPECT_EQ(budget.peak(), 1U);
  EXPECT_FALSE(connection.admit()) << "only a reservation is admitted";
  connection.release();
  EXPECT_EQ(budget.live(), 0U);
  EXPECT_EQ(budget.generation(), static_cast<std::uint16_t>(start + 1)) << "a release frees a descriptor";
  EXPECT_FALSE(connection.release()) << "a second release does nothing";
}

TEST(Permit, AReservationRefusedByThePeerCapStaysAReservation) {
  connection_budget budget(4);
  const auto peers = std::make_shared<peer_limit>(1, 64, 7);
  permit a = budget.try_reserve();
  permit b = budget.try_reserve();
  ASSERT_TRUE(a.admit(peers, v4("10.0.0.1")));
  EXPECT_FALSE(b.admit(peers, v4("10.0.0.1")));
  EXPECT_TRUE(b.is_reservation());
  EXPECT_EQ(peers->count(v4("10.0.0.1")), 1U);
  EXPECT_TRUE(b.admit(peers, peer_key{})) << "an unknown peer is never limited";
  EXPECT_EQ(peers.use_count(), 2) << "only the permit counted for the peer holds the peer_limit";
  a.release();
  EXPECT_EQ(peers->count(v4("10.0.0.1")), 0U);
  EXPECT_EQ(peers.use_count(), 1);
}

}  // namespace
}  // namespace transient
