#include "bench/serve/arrivals.h"

#include <cmath>
#include <string>

namespace pagoda::bench {

Status validate_arrivals(const ArrivalConfig& c) {
  if (c.concurrency > 0 && c.rate > 0)
    return InvalidArgument("give either --rate or --concurrency, not both");
  if (c.concurrency < 0) return InvalidArgument("--concurrency must be >= 1");
  if (c.concurrency == 0 && !(c.rate > 0))
    return InvalidArgument("--rate must be > 0 requests/s (or use --concurrency C)");
  if (!std::isfinite(c.rate)) return InvalidArgument("--rate must be a finite number");
  if (!(c.burstiness > 0) || !std::isfinite(c.burstiness))
    return InvalidArgument("--burstiness must be > 0 (1 = Poisson)");
  return OkStatus();
}

ArrivalProcess::ArrivalProcess(const ArrivalConfig& c)
    : rate_(c.rate), burstiness_(c.burstiness), rng_(mix_seed(c.seed, 3)) {}

double ArrivalProcess::next_gap() {
  if (burstiness_ == 1.0) return rng_.exponential(1.0 / rate_);
  return rng_.gamma(burstiness_, 1.0 / (rate_ * burstiness_));
}

}  // namespace pagoda::bench
