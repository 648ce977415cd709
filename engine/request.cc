#include "engine/request.h"

namespace pagoda {

const char* finish_reason_name(FinishReason r) {
  switch (r) {
    case FinishReason::kNone: return "none";
    case FinishReason::kLength: return "length";
    case FinishReason::kStop: return "stop";
    case FinishReason::kStopSequence: return "stop_sequence";
    case FinishReason::kCancelled: return "cancelled";
    case FinishReason::kTimeLimit: return "time_limit";
    case FinishReason::kContentFilter: return "content_filter";
    case FinishReason::kError: return "error";
  }
  return "?";
}

void OutputChannel::push(RequestOutput out) {
  bool wake = false;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;  // nothing follows the final message
    closed_ = out.finished;
    queue_.push_back(std::move(out));
    wake = waiting_ > 0;
  }
  // The engine pushes to every running request each step: a wake-up is a system call, so it is
  // made only when a consumer waits (one that comes later finds the queue non-empty).
  if (wake) cv_.notify_all();
}

std::optional<RequestOutput> OutputChannel::next(std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [&] { return !queue_.empty(); };
  ++waiting_;
  bool got = true;
  if (timeout) {
    got = cv_.wait_for(lock, *timeout, ready);
  } else {
    cv_.wait(lock, ready);
  }
  --waiting_;
  if (!got) return std::nullopt;
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

std::optional<RequestOutput> OutputChannel::next_merged(
    std::optional<std::chrono::milliseconds> timeout) {
  std::optional<RequestOutput> first = next(timeout);
  if (!first) return first;
  std::lock_guard<std::mutex> lock(mu_);
  while (!queue_.empty() && !first->finished) {
    RequestOutput& more = queue_.front();
    first->new_token_ids.insert(first->new_token_ids.end(), more.new_token_ids.begin(),
                                more.new_token_ids.end());
    first->text += more.text;
    for (auto& lp : more.logprobs) first->logprobs.push_back(std::move(lp));
    first->finished = more.finished;
    first->finish_reason = more.finish_reason;
    first->usage = more.usage;
    first->timings = more.timings;
    first->num_preemptions = more.num_preemptions;
    if (more.timeline) first->timeline = std::move(more.timeline);
    first->error = more.error;
    queue_.pop_front();
  }
  return first;
}

bool OutputChannel::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

}  // namespace pagoda
