// Helpers for collect-on-scrape collectors: build prometheus::MetricFamily
// values directly (no registry state), so a series exists exactly while the
// thing it describes does — a deleted VM's series vanish on the next scrape.
#ifndef FERRY_COMMON_METRICS_FAMILIES_H_
#define FERRY_COMMON_METRICS_FAMILIES_H_

#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "prometheus/metric_family.h"
#include "prometheus/metric_type.h"

namespace ferry::metrics {

using LabelList = std::vector<std::pair<std::string, std::string>>;

prometheus::MetricFamily MakeFamily(std::string name, std::string help,
                                    prometheus::MetricType type);

// Appends one sample; `family.type` decides which field carries the value.
void AddSample(prometheus::MetricFamily& family, const LabelList& labels,
               double value);

// A label value from an enum value's name: "VM_PHASE_RUNNING" with prefix
// "VM_PHASE_" -> "running". Values come only from the enum, so the label
// set stays bounded.
std::string EnumLabel(const std::string& name, std::string_view prefix);

}  // namespace ferry::metrics

#endif  // FERRY_COMMON_METRICS_FAMILIES_H_
