// Kubernetes-style label selectors, the syntax of List*Request.label_selector:
//   "k=v", "k==v", "k!=v", "k in (a,b)", "k notin (a,b)", "k", "!k"
// joined by commas (AND). Semantics follow Kubernetes: "k!=v" and
// "k notin (...)" also match objects that lack k.
#ifndef FERRY_CONTROLLER_STORE_LABEL_SELECTOR_H_
#define FERRY_CONTROLLER_STORE_LABEL_SELECTOR_H_

#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "google/protobuf/map.h"

namespace ferry::controller {

class LabelSelector {
 public:
  using Labels = google::protobuf::Map<std::string, std::string>;

  // The empty string selects everything. INVALID_ARGUMENT names the bad term.
  static absl::StatusOr<LabelSelector> Parse(absl::string_view text);

  bool Matches(const Labels& labels) const;
  bool empty() const { return requirements_.empty(); }

 private:
  enum class Op { kIn, kNotIn, kExists, kNotExists };
  struct Requirement {
    std::string key;
    Op op;
    std::vector<std::string> values;
  };
  static absl::StatusOr<Requirement> ParseTerm(absl::string_view term);

  std::vector<Requirement> requirements_;
};

}  // namespace ferry::controller

#endif  // FERRY_CONTROLLER_STORE_LABEL_SELECTOR_H_
