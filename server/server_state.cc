#include "server/server_state.h"

#include <cstdio>
#include <random>

namespace pagoda {

std::string make_instance_id() {
  std::random_device rd;
  const uint64_t v = (uint64_t{rd()} << 32) | rd();
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

void ServerState::set_ready(Engine* engine, const Tokenizer* tokenizer, ModelIdentity identity) {
  tokenizer_ = tokenizer;
  identity_ = std::move(identity);
  engine_.store(engine);  // last: publishes the fields above to readers of engine()
}

bool ServerState::admit(int prompt_tokens, std::string* why) {
  std::lock_guard<std::mutex> lock(mu_);
  if (queued_requests_ >= config_.max_queue_requests) {
    *why = "the waiting queue is full (" + std::to_string(queued_requests_) + " requests, limit " +
           std::to_string(config_.max_queue_requests) + "); retry later";
    return false;
  }
  if (queued_tokens_ + prompt_tokens > config_.max_queue_tokens) {
    *why = "the waiting queue is full (" + std::to_string(queued_tokens_) +
           " prompt tokens queued, limit " + std::to_string(config_.max_queue_tokens) +
           "); retry later";
    return false;
  }
  ++queued_requests_;
  queued_tokens_ += prompt_tokens;
  return true;
}

void ServerState::leave_queue(int prompt_tokens) {
  std::lock_guard<std::mutex> lock(mu_);
  --queued_requests_;
  queued_tokens_ -= prompt_tokens;
}

void ServerState::track(RequestId id) {
  std::lock_guard<std::mutex> lock(mu_);
  in_flight_.insert(id);
}

void ServerState::untrack(RequestId id) {
  {
    std::lock_guard<std::mutex> lock(mu_);
    in_flight_.erase(id);
  }
  idle_cv_.notify_all();
}

std::set<RequestId> ServerState::in_flight() const {
  std::lock_guard<std::mutex> lock(mu_);
  return in_flight_;
}

bool ServerState::wait_idle(std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return idle_cv_.wait_for(lock, timeout, [&] { return in_flight_.empty(); });
}

}  // namespace pagoda
