// A small metrics registry: counters, gauges and fixed-bucket histograms, each a family of series
// keyed by label values, rendered in the Prometheus text exposition format 0.0.4.
//
// Hot path: look a series up once (Family::with(), under the family's mutex) and keep the
// returned pointer; updating it is a few relaxed atomics. Series live as long as the registry and
// never move. Bad names are a Status at registration; a wrong number of label values is a broken
// invariant (PAGODA_CHECK).
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

#include "core/status.h"

namespace pagoda::metrics {

enum class MetricType { kCounter, kGauge, kHistogram };
const char* metric_type_name(MetricType type);

// A monotonically increasing value. inc() with a negative or NaN amount is ignored.
class Counter {
 public:
  void inc(double amount = 1.0);
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// A value that goes up and down.
class Gauge {
 public:
  void set(double v) { value_.store(v, std::memory_order_relaxed); }
  void inc(double amount = 1.0) { value_.fetch_add(amount, std::memory_order_relaxed); }
  void dec(double amount = 1.0) { value_.fetch_sub(amount, std::memory_order_relaxed); }
  double value() const { return value_.load(std::memory_order_relaxed); }

 private:
  std::atomic<double> value_{0.0};
};

// Observations counted into fixed buckets: bucket i counts v <= bounds[i] (and > bounds[i-1]);
// the last, implicit bucket is +Inf. NaN observations are dropped.
class Histogram {
 public:
  explicit Histogram(const std::vector<double>* bounds);
  void observe(double v);

  struct Snapshot {
    std::vector<uint64_t> cumulative;  // bounds.size() + 1 entries; the last is +Inf == count
    double sum = 0.0;
  };
  Snapshot snapshot() const;
  const std::vector<double>& bounds() const { return *bounds_; }

 private:
  const std::vector<double>* bounds_;  // owned by the family
  std::unique_ptr<std::atomic<uint64_t>[]> counts_;
  std::atomic<double> sum_{0.0};
};

// Common part of a family: name, help, label names; renders its series.
class FamilyBase {
 public:
  FamilyBase(std::string name, std::string help, std::vector<std::string> label_names,
             MetricType type)
      : name_(std::move(name)),
        help_(std::move(help)),
        label_names_(std::move(label_names)),
        type_(type) {}
  virtual ~FamilyBase() = default;

  const std::string& name() const { return name_; }
  const std::string& help() const { return help_; }
  const std::vector<std::string>& label_names() const { return label_names_; }
  MetricType type() const { return type_; }

  // Appends "# HELP", "# TYPE" and one line per sample, series ordered by label values.
  void render(std::string* out) const;

 protected:
  virtual void render_all(std::string* out) const = 0;
  void check_arity(size_t n) const;

 private:
  std::string name_, help_;
  std::vector<std::string> label_names_;
  MetricType type_;
};

template <typename T>
class Family : public FamilyBase {
 public:
  using FamilyBase::FamilyBase;

  // The series for these label values (one per label name, in order), created on first use.
  T* with(const std::vector<std::string>& values) {
    check_arity(values.size());
    std::lock_guard<std::mutex> lock(mu_);
    auto it = series_.find(values);
    if (it != series_.end()) return it->second.get();
    return series_.emplace(values, make()).first->second.get();
  }

 protected:
  virtual std::unique_ptr<T> make() const = 0;
  virtual void render_one(const std::vector<std::string>& values, const T& series,
                          std::string* out) const = 0;
  void render_all(std::string* out) const override {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [values, series] : series_) render_one(values, *series, out);
  }

 private:
  mutable std::mutex mu_;
  std::map<std::vector<std::string>, std::unique_ptr<T>> series_;
};

class CounterFamily : public Family<Counter> {
 public:
  CounterFamily(std::string name, std::string help, std::vector<std::string> labels)
      : Family(std::move(name), std::move(help), std::move(labels), MetricType::kCounter) {}

 protected:
  std::unique_ptr<Counter> make() const override { return std::make_unique<Counter>(); }
  void render_one(const std::vector<std::string>& values, const Counter& series,
                  std::string* out) const override;
};

class GaugeFamily : public Family<Gauge> {
 public:
  GaugeFamily(std::string name, std::string help, std::vector<std::string> labels)
      : Family(std::move(name), std::move(help), std::move(labels), MetricType::kGauge) {}

 protected:
  std::unique_ptr<Gauge> make() const override { return std::make_unique<Gauge>(); }
  void render_one(const std::vector<std::string>& values, const Gauge& series,
                  std::string* out) const override;
};

class HistogramFamily : public Family<Histogram> {
 public:
  HistogramFamily(std::string name, std::string help, std::vector<std::string> labels,
                  std::vector<double> bounds)
      : Family(std::move(name), std::move(help), std::move(labels), MetricType::kHistogram),
        bounds_(std::move(bounds)) {}
  const std::vector<double>& bounds() const { return bounds_; }

 protected:
  std::unique_ptr<Histogram> make() const override { return std::make_unique<Histogram>(&bounds_); }
  void render_one(const std::vector<std::string>& values, const Histogram& series,
                  std::string* out) const override;

 private:
  std::vector<double> bounds_;
};

// Owns families; renders them in registration order. Thread-safe.
class Registry {
 public:
  // InvalidArgument for a bad metric or label name, a name already registered, a counter whose
  // name does not end in "_total", a histogram label named "le", or bounds that are empty, not
  // finite or not strictly increasing.
  StatusOr<CounterFamily*> add_counter(std::string name, std::string help,
                                       std::vector<std::string> label_names = {});
  StatusOr<GaugeFamily*> add_gauge(std::string name, std::string help,
                                   std::vector<std::string> label_names = {});
  StatusOr<HistogramFamily*> add_histogram(std::string name, std::string help,
                                           std::vector<double> bounds,
                                           std::vector<std::string> label_names = {});

  // Runs before each render(), e.g. to sample a gauge from the engine at scrape time. Hooks must
  // not call render() or add hooks.
  void add_collect_hook(std::function<void()> hook);

  // The whole registry in the text exposition format 0.0.4.
  std::string render() const;

 private:
  Status check_new(const std::string& name, const std::vector<std::string>& labels) const;

  mutable std::mutex mu_;
  std::vector<std::unique_ptr<FamilyBase>> families_;
  std::vector<std::function<void()>> hooks_;
};

// The Content-Type that goes with Registry::render().
inline constexpr std::string_view kExpositionContentType =
    "text/plain; version=0.0.4; charset=utf-8";

// Exposed for tests and for other renderers.
std::string escape_label_value(std::string_view v);  // \ -> \\, " -> \", newline -> \n
std::string escape_help(std::string_view v);         // \ -> \\, newline -> \n
std::string format_value(double v);                  // 3, 0.25, 1e+20, +Inf, -Inf, NaN
bool valid_metric_name(std::string_view name);       // [a-zA-Z_:][a-zA-Z0-9_:]*
bool valid_label_name(std::string_view name);        // [a-zA-Z_][a-zA-Z0-9_]*, not "__*"

}  // namespace pagoda::metrics
