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
    case FinishReason::kError: return "error";
  }
  return "?";
}

void OutputChannel::push(RequestOutput out) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (closed_) return;  // nothing follows the final message
    closed_ = out.finished;
    queue_.push_back(std::move(out));
  }
  cv_.notify_all();
}

std::optional<RequestOutput> OutputChannel::next(std::optional<std::chrono::milliseconds> timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  auto ready = [&] { return !queue_.empty(); };
  if (timeout) {
    if (!cv_.wait_for(lock, *timeout, ready)) return std::nullopt;
  } else {
    cv_.wait(lock, ready);
  }
  RequestOutput out = std::move(queue_.front());
  queue_.pop_front();
  return out;
}

bool OutputChannel::closed() const {
  std::lock_guard<std::mutex> lock(mu_);
  return closed_;
}

}  // namespace pagoda
