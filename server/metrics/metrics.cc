#include "server/metrics/metrics.h"

#include <algorithm>
#include <charconv>
#include <cmath>
#include <cstdio>

#include "core/check.h"

namespace pagoda::metrics {

namespace {

// Appends {name="value",...[,extra_name="extra_value"]}; nothing when there are no labels.
void append_labels(const std::vector<std::string>& names, const std::vector<std::string>& values,
                   std::string_view extra_name, std::string_view extra_value, std::string* out) {
  if (names.empty() && extra_name.empty()) return;
  out->push_back('{');
  bool first = true;
  auto one = [&](std::string_view n, std::string_view v) {
    if (!first) out->push_back(',');
    first = false;
    out->append(n);
    out->append("=\"");
    out->append(escape_label_value(v));
    out->push_back('"');
  };
  for (size_t i = 0; i < names.size(); ++i) one(names[i], values[i]);
  if (!extra_name.empty()) one(extra_name, extra_value);
  out->push_back('}');
}

void append_sample(std::string_view name, std::string_view suffix,
                   const std::vector<std::string>& names, const std::vector<std::string>& values,
                   std::string_view extra_name, std::string_view extra_value, double v,
                   std::string* out) {
  out->append(name);
  out->append(suffix);
  append_labels(names, values, extra_name, extra_value, out);
  out->push_back(' ');
  out->append(format_value(v));
  out->push_back('\n');
}

}  // namespace

const char* metric_type_name(MetricType type) {
  switch (type) {
    case MetricType::kCounter: return "counter";
    case MetricType::kGauge: return "gauge";
    case MetricType::kHistogram: return "histogram";
  }
  return "untyped";
}

std::string escape_label_value(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '"': out += "\\\""; break;
      case '\n': out += "\\n"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string escape_help(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    switch (c) {
      case '\\': out += "\\\\"; break;
      case '\n': out += "\\n"; break;
      default: out.push_back(c);
    }
  }
  return out;
}

std::string format_value(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::trunc(v) && std::fabs(v) < 1e15) {
    char buf[32];
    std::snprintf(buf, sizeof(buf), "%lld", static_cast<long long>(v));
    return buf;
  }
  char buf[64];
  auto res = std::to_chars(buf, buf + sizeof(buf), v);  // shortest round-trip form
  return std::string(buf, res.ptr);
}

bool valid_metric_name(std::string_view name) {
  if (name.empty()) return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

bool valid_label_name(std::string_view name) {
  if (name.empty() || name.substr(0, 2) == "__") return false;
  for (size_t i = 0; i < name.size(); ++i) {
    char c = name[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

// --- Series -------------------------------------------------------------------------------

void Counter::inc(double amount) {
  if (!(amount >= 0.0)) return;  // negative or NaN: a counter never goes down
  value_.fetch_add(amount, std::memory_order_relaxed);
}

Histogram::Histogram(const std::vector<double>* bounds)
    : bounds_(bounds), counts_(new std::atomic<uint64_t>[bounds->size() + 1]) {
  for (size_t i = 0; i <= bounds_->size(); ++i) counts_[i].store(0, std::memory_order_relaxed);
}

void Histogram::observe(double v) {
  if (std::isnan(v)) return;
  // First bound >= v: Prometheus buckets are inclusive of their upper bound.
  size_t i = std::lower_bound(bounds_->begin(), bounds_->end(), v) - bounds_->begin();
  counts_[i].fetch_add(1, std::memory_order_relaxed);
  sum_.fetch_add(v, std::memory_order_relaxed);
}

Histogram::Snapshot Histogram::snapshot() const {
  Snapshot s;
  s.cumulative.resize(bounds_->size() + 1);
  uint64_t total = 0;
  for (size_t i = 0; i <= bounds_->size(); ++i) {
    total += counts_[i].load(std::memory_order_relaxed);
    s.cumulative[i] = total;
  }
  s.sum = sum_.load(std::memory_order_relaxed);
  return s;
}

// --- Families -----------------------------------------------------------------------------

void FamilyBase::check_arity(size_t n) const {
  PAGODA_CHECK_OP_(n, ==, label_names_.size());
}

void FamilyBase::render(std::string* out) const {
  out->append("# HELP ");
  out->append(name_);
  out->push_back(' ');
  out->append(escape_help(help_));
  out->append("\n# TYPE ");
  out->append(name_);
  out->push_back(' ');
  out->append(metric_type_name(type_));
  out->push_back('\n');
  render_all(out);
}

void CounterFamily::render_one(const std::vector<std::string>& values, const Counter& series,
                               std::string* out) const {
  append_sample(name(), "", label_names(), values, "", "", series.value(), out);
}

void GaugeFamily::render_one(const std::vector<std::string>& values, const Gauge& series,
                             std::string* out) const {
  append_sample(name(), "", label_names(), values, "", "", series.value(), out);
}

void HistogramFamily::render_one(const std::vector<std::string>& values, const Histogram& series,
                                 std::string* out) const {
  Histogram::Snapshot s = series.snapshot();
  for (size_t i = 0; i < bounds_.size(); ++i) {
    append_sample(name(), "_bucket", label_names(), values, "le", format_value(bounds_[i]),
                  static_cast<double>(s.cumulative[i]), out);
  }
  const double count = static_cast<double>(s.cumulative.back());
  append_sample(name(), "_bucket", label_names(), values, "le", "+Inf", count, out);
  append_sample(name(), "_sum", label_names(), values, "", "", s.sum, out);
  append_sample(name(), "_count", label_names(), values, "", "", count, out);
}

// --- Registry -----------------------------------------------------------------------------

Status Registry::check_new(const std::string& name, const std::vector<std::string>& labels) const {
  if (!valid_metric_name(name)) return InvalidArgument("invalid metric name '" + name + "'");
  for (size_t i = 0; i < labels.size(); ++i) {
    if (!valid_label_name(labels[i])) {
      return InvalidArgument("metric " + name + ": invalid label name '" + labels[i] + "'");
    }
    for (size_t j = 0; j < i; ++j) {
      if (labels[i] == labels[j]) {
        return InvalidArgument("metric " + name + ": label '" + labels[i] + "' given twice");
      }
    }
  }
  for (const auto& f : families_) {
    if (f->name() == name) return InvalidArgument("metric " + name + " is already registered");
  }
  return OkStatus();
}

StatusOr<CounterFamily*> Registry::add_counter(std::string name, std::string help,
                                               std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  PAGODA_RETURN_IF_ERROR(check_new(name, label_names));
  if (name.size() < 6 || name.compare(name.size() - 6, 6, "_total") != 0) {
    return InvalidArgument("counter " + name + ": a counter's name ends in _total");
  }
  auto family =
      std::make_unique<CounterFamily>(std::move(name), std::move(help), std::move(label_names));
  CounterFamily* raw = family.get();
  if (raw->label_names().empty()) raw->with({});  // an unlabeled series exists from the start
  families_.push_back(std::move(family));
  return raw;
}

StatusOr<GaugeFamily*> Registry::add_gauge(std::string name, std::string help,
                                           std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  PAGODA_RETURN_IF_ERROR(check_new(name, label_names));
  auto family =
      std::make_unique<GaugeFamily>(std::move(name), std::move(help), std::move(label_names));
  GaugeFamily* raw = family.get();
  if (raw->label_names().empty()) raw->with({});
  families_.push_back(std::move(family));
  return raw;
}

StatusOr<HistogramFamily*> Registry::add_histogram(std::string name, std::string help,
                                                   std::vector<double> bounds,
                                                   std::vector<std::string> label_names) {
  std::lock_guard<std::mutex> lock(mu_);
  PAGODA_RETURN_IF_ERROR(check_new(name, label_names));
  for (const auto& l : label_names) {
    if (l == "le") return InvalidArgument("histogram " + name + ": 'le' is a reserved label");
  }
  if (bounds.empty()) return InvalidArgument("histogram " + name + ": no buckets");
  for (size_t i = 0; i < bounds.size(); ++i) {
    if (!std::isfinite(bounds[i])) {
      return InvalidArgument("histogram " + name +
                             ": bucket bounds must be finite (+Inf is implicit)");
    }
    if (i > 0 && !(bounds[i] > bounds[i - 1])) {
      return InvalidArgument("histogram " + name + ": bucket bounds must be strictly increasing");
    }
  }
  auto family = std::make_unique<HistogramFamily>(std::move(name), std::move(help),
                                                  std::move(label_names), std::move(bounds));
  HistogramFamily* raw = family.get();
  if (raw->label_names().empty()) raw->with({});
  families_.push_back(std::move(family));
  return raw;
}

void Registry::add_collect_hook(std::function<void()> hook) {
  std::lock_guard<std::mutex> lock(mu_);
  hooks_.push_back(std::move(hook));
}

std::string Registry::render() const {
  std::lock_guard<std::mutex> lock(mu_);
  for (const auto& hook : hooks_) hook();
  std::string out;
  for (const auto& f : families_) f->render(&out);
  return out;
}

}  // namespace pagoda::metrics
