// The f64 gradient check of every differentiable op, and the registry test that makes a new op
// without a gradient check fail.
#include <doctest/doctest.h>

#include <set>
#include <string>

#include "engine/autograd.h"
#include "engine/dispatch.h"
#include "kernels/common/registry.h"
#include "tests/support/gradcheck.h"

using namespace seg;
using namespace seg::test;

TEST_CASE("every differentiable op has a gradient check, and every case names a catalog op") {
  // An op counts as covered by a case whose checked graph holds the op's own node, not only by a
  // case carrying its name: a case that reaches the op through other ops checks their backward.
  std::set<std::string> covered;
  for (const GradCase& c : all_grad_cases()) {
    if (c.parity_only) continue;
    Generator gen(1234);
    const std::set<std::string> nodes = graph_node_names(c.fn(c.inputs(gen)));
    const std::string node = backward_node_name(c.op);
    CHECK_MESSAGE(nodes.count(node) == 1, "case ", c.op, " [", c.name, "]: no ", node,
                  " node in its graph");
    if (nodes.count(node) == 1) covered.insert(c.op);
  }
  std::set<std::string> catalog;
  for (const OpInfo& info : kOpCatalog) {
    catalog.insert(std::string(info.name));
    if (info.differentiable) {
      CHECK_MESSAGE(covered.count(std::string(info.name)) == 1, "no gradient check for op ", info.name);
    }
  }
  for (const std::string& op : covered) CHECK_MESSAGE(catalog.count(op) == 1, "unknown op in cases: ", op);
}

TEST_CASE("every op with kernels is registered on the CPU") {
  for (const OpInfo& info : kOpCatalog) {
    if (info.has_kernels) {
      CHECK_MESSAGE(kernel_registry().has(info.id, DeviceType::cpu), "no CPU kernels for op ", info.name);
    }
  }
}

TEST_CASE("gradient check of every differentiable op (f64, central differences)") {
  for (const GradCase& c : all_grad_cases()) {
    if (c.parity_only) continue;
    CAPTURE(c.op);
    CAPTURE(c.name);
    GradCheckResult r = check_gradients(c);
    CHECK_MESSAGE(r.ok, r.message);
    CHECK_MESSAGE(r.checked > 0, "no element checked for ", c.op, " [", c.name, "]");
    CHECK_MESSAGE(r.nodes.count(backward_node_name(c.op)) == 1, "no ", backward_node_name(c.op),
                  " node in the graph of ", c.op, " [", c.name, "]");
  }
}
