#include "bench/serve/workload.h"

#include <algorithm>
#include <cmath>

#include "bench/serve/rng.h"

namespace pagoda::bench {

namespace {
constexpr uint64_t kRequestStream = 1;
constexpr uint64_t kPrefixStream = 2;

void append_tokens(Rng& rng, int n, int vocab, std::vector<int>* out) {
  for (int i = 0; i < n; ++i)
    out->push_back(static_cast<int>(rng.uniform_int(kFirstTokenId, vocab - 1)));
}

int lognormal_len(Rng& rng, double mu, double sigma, int lo, int hi) {
  const double v = std::round(rng.lognormal(mu, sigma));
  return static_cast<int>(std::clamp(v, static_cast<double>(lo), static_cast<double>(hi)));
}
}  // namespace

const char* length_mode_name(LengthMode mode) {
  switch (mode) {
    case LengthMode::kFixed: return "fixed";
    case LengthMode::kRandom: return "random";
    case LengthMode::kLongTail: return "long-tail";
  }
  return "?";
}

Status validate_workload(const WorkloadConfig& c) {
  if (c.vocab_size <= kFirstTokenId + 1)
    return InvalidArgument("vocab size " + std::to_string(c.vocab_size) + " is too small");
  if (c.shared_prefix < 0) return InvalidArgument("--shared-prefix must be >= 0");
  if (c.num_prefixes < 1) return InvalidArgument("--num-prefixes must be >= 1");
  int max_in = 0, max_out = 0;
  switch (c.mode) {
    case LengthMode::kFixed:
      if (c.input_len < 1 || c.output_len < 1)
        return InvalidArgument("--input-len and --output-len must be >= 1");
      max_in = c.input_len;
      max_out = c.output_len;
      break;
    case LengthMode::kRandom:
      if (c.input_min < 1 || c.output_min < 1 || c.input_min > c.input_max ||
          c.output_min > c.output_max)
        return InvalidArgument(
            "--random-lengths needs 1 <= MIN <= MAX for both input and output (IN_MIN:IN_MAX,"
            "OUT_MIN:OUT_MAX)");
      max_in = c.input_max;
      max_out = c.output_max;
      break;
    case LengthMode::kLongTail: return OkStatus();  // fitted into the context per request
  }
  if (c.context_length > 0 && c.shared_prefix + max_in + max_out > c.context_length)
    return InvalidArgument("prefix + input + output lengths (up to " +
                           std::to_string(c.shared_prefix + max_in + max_out) +
                           ") exceed the model's context of " + std::to_string(c.context_length));
  return OkStatus();
}

std::vector<int> make_prefix(const WorkloadConfig& c, int k) {
  Rng rng(mix_seed(c.seed, kPrefixStream, static_cast<uint64_t>(k)));
  std::vector<int> out;
  out.reserve(c.shared_prefix);
  append_tokens(rng, c.shared_prefix, c.vocab_size, &out);
  return out;
}

RequestSpec make_request(const WorkloadConfig& c, uint64_t index) {
  Rng rng(mix_seed(c.seed, kRequestStream, index));
  RequestSpec spec;
  int in = 0, out = 0;
  switch (c.mode) {
    case LengthMode::kFixed:
      in = c.input_len;
      out = c.output_len;
      break;
    case LengthMode::kRandom:
      in = static_cast<int>(rng.uniform_int(c.input_min, c.input_max));
      out = static_cast<int>(rng.uniform_int(c.output_min, c.output_max));
      break;
    case LengthMode::kLongTail: {
      const LongTailParams& p = c.long_tail;
      in = lognormal_len(rng, p.input_mu, p.input_sigma, p.input_min, p.input_max);
      out = lognormal_len(rng, p.output_mu, p.output_sigma, p.output_min, p.output_max);
      if (c.context_length > 0) {
        const int room = c.context_length - c.shared_prefix;
        in = std::max(1, std::min(in, room / 2));
        out = std::max(1, std::min(out, room - in));
      }
      break;
    }
  }
  if (c.shared_prefix > 0) {
    spec.prefix_id = static_cast<int>(index % static_cast<uint64_t>(c.num_prefixes));
    spec.prompt = make_prefix(c, spec.prefix_id);
  }
  append_tokens(rng, in, c.vocab_size, &spec.prompt);
  spec.output_len = out;
  return spec;
}

}  // namespace pagoda::bench
