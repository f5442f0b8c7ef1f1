#include "controller/store/label_selector.h"

#include <algorithm>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "common/status_macros.h"

namespace ferry::controller {
namespace {

bool ValidToken(absl::string_view s) {
  if (s.empty() || s.size() > 317) return false;  // prefix/name per k8s
  return std::all_of(s.begin(), s.end(), [](char c) {
    return absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' ||
           c == '/';
  });
}

// Splits on commas that are not inside parentheses.
absl::StatusOr<std::vector<absl::string_view>> SplitTerms(absl::string_view s) {
  std::vector<absl::string_view> terms;
  int depth = 0;
  size_t start = 0;
  for (size_t i = 0; i < s.size(); ++i) {
    if (s[i] == '(') ++depth;
    if (s[i] == ')' && --depth < 0) break;
    if (s[i] == ',' && depth == 0) {
      terms.push_back(s.substr(start, i - start));
      start = i + 1;
    }
  }
  if (depth != 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("label selector \"", s, "\": unbalanced parentheses"));
  }
  terms.push_back(s.substr(start));
  return terms;
}

}  // namespace

absl::StatusOr<LabelSelector::Requirement> LabelSelector::ParseTerm(
    absl::string_view term) {
  term = absl::StripAsciiWhitespace(term);
  auto bad = [&](absl::string_view why) {
    return absl::InvalidArgumentError(absl::StrCat(
        "label selector term \"", term, "\": ", why,
        " (expected k=v, k!=v, k in (a,b), k notin (a,b), k or !k)"));
  };
  if (term.empty()) return bad("empty term");
  Requirement req;
  if (term[0] == '!') {
    req.key = std::string(absl::StripAsciiWhitespace(term.substr(1)));
    req.op = Op::kNotExists;
  } else if (size_t pos = term.find("!="); pos != term.npos) {
    req.key = std::string(absl::StripAsciiWhitespace(term.substr(0, pos)));
    req.op = Op::kNotIn;
    req.values.emplace_back(absl::StripAsciiWhitespace(term.substr(pos + 2)));
  } else if (size_t pos = term.find('='); pos != term.npos) {
    size_t vpos = pos + 1;
    if (vpos < term.size() && term[vpos] == '=') ++vpos;
    req.key = std::string(absl::StripAsciiWhitespace(term.substr(0, pos)));
    req.op = Op::kIn;
    req.values.emplace_back(absl::StripAsciiWhitespace(term.substr(vpos)));
  } else if (size_t open = term.find('('); open != term.npos) {
    if (term.back() != ')') return bad("missing ')'");
    std::vector<absl::string_view> head = absl::StrSplit(
        term.substr(0, open), ' ', absl::SkipWhitespace());
    if (head.size() != 2) return bad("expected '<key> in|notin (...)'");
    req.key = std::string(head[0]);
    if (head[1] == "in") {
      req.op = Op::kIn;
    } else if (head[1] == "notin") {
      req.op = Op::kNotIn;
    } else {
      return bad(absl::StrCat("unknown operator \"", head[1], "\""));
    }
    absl::string_view list = term.substr(open + 1, term.size() - open - 2);
    for (absl::string_view v : absl::StrSplit(list, ',')) {
      req.values.emplace_back(absl::StripAsciiWhitespace(v));
      if (!ValidToken(req.values.back())) return bad("bad value in list");
    }
  } else {
    req.key = std::string(term);
    req.op = Op::kExists;
  }
  if (!ValidToken(req.key)) return bad("bad key");
  for (const std::string& v : req.values) {
    // An empty value is legal in k8s ("k=" matches k with value "").
    if (!v.empty() && !ValidToken(v)) return bad("bad value");
  }
  return req;
}

absl::StatusOr<LabelSelector> LabelSelector::Parse(absl::string_view text) {
  LabelSelector selector;
  if (absl::StripAsciiWhitespace(text).empty()) return selector;
  ASSIGN_OR_RETURN(std::vector<absl::string_view> terms, SplitTerms(text));
  for (absl::string_view term : terms) {
    ASSIGN_OR_RETURN(Requirement req, ParseTerm(term));
    selector.requirements_.push_back(std::move(req));
  }
  return selector;
}

bool LabelSelector::Matches(const Labels& labels) const {
  for (const Requirement& req : requirements_) {
    auto it = labels.find(req.key);
    const bool has = it != labels.end();
    const bool in_values =
        has && std::find(req.values.begin(), req.values.end(), it->second) !=
                   req.values.end();
    switch (req.op) {
      case Op::kIn:
        if (!in_values) return false;
        break;
      case Op::kNotIn:
        if (in_values) return false;
        break;
      case Op::kExists:
        if (!has) return false;
        break;
      case Op::kNotExists:
        if (has) return false;
        break;
    }
  }
  return true;
}

}  // namespace ferry::controller
