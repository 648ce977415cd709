// Request arrival processes. With a rate: inter-arrival gaps drawn from a gamma distribution with
// shape = burstiness and mean 1/rate (scale = 1 / (rate * burstiness)), as vLLM's
// benchmark_serving; burstiness 1 is a Poisson process (exponential gaps), < 1 burstier, > 1
// more regular. Without a rate: a fixed number of requests in flight (closed loop).
#pragma once

#include <cstdint>

#include "bench/serve/rng.h"
#include "core/status.h"

namespace pagoda::bench {

struct ArrivalConfig {
  double rate = 0;          // requests/s; 0 with concurrency > 0 means closed loop
  double burstiness = 1.0;  // gamma shape
  int concurrency = 0;      // closed loop: requests kept in flight
  uint64_t seed = 0;
};

Status validate_arrivals(const ArrivalConfig& config);

// The gaps between successive sends of an open-loop (rate) run, in seconds, in order.
class ArrivalProcess {
 public:
  explicit ArrivalProcess(const ArrivalConfig& config);
  double next_gap();

 private:
  double rate_, burstiness_;
  Rng rng_;
};

}  // namespace pagoda::bench
