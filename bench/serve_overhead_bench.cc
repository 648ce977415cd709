// pagoda-bench serve-overhead: the same requests through the Engine directly and through the
// gRPC server on loopback (in-process server, real TCP, streaming Generate calls from one
// client thread per request); prints both throughputs and their ratio. Target (issue 4): the
// gRPC path reaches at least 95% of the direct path.
#include <grpcpp/grpcpp.h>

#include <chrono>
#include <cstdio>
#include <thread>

#include "bench/bench_modes.h"
#include "bench/synthetic_rig.h"
#include "core/flags.h"
#include "core/thread_pool.h"
#include "kernels/backend_factory.h"
#include "models/synthetic.h"
#include "server/generation_service.h"

namespace pagoda {

namespace {

double since(std::chrono::steady_clock::time_point t) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t).count();
}

std::vector<int> prompt_for(int i, int len, int vocab) {
  std::vector<int> p(len);
  for (int k = 0; k < len; ++k) p[k] = (i * 7919 + k * 104729) % vocab;
  return p;
}

}  // namespace

Status run_serve_overhead_bench(const std::vector<std::string>& args) {
  PAGODA_ASSIGN_OR_RETURN(Flags flags, Flags::parse(args, {"shape", "dtype", "threads", "device", "num-requests",
                                                           "input-len", "output-len", "rounds"}));
  PAGODA_ASSIGN_OR_RETURN(int64_t n, flags.get_int("num-requests", 64, 1, 4096));
  PAGODA_ASSIGN_OR_RETURN(int64_t in_len, flags.get_int("input-len", 64, 1, 1 << 16));
  PAGODA_ASSIGN_OR_RETURN(int64_t out_len, flags.get_int("output-len", 64, 1, 1 << 16));
  PAGODA_ASSIGN_OR_RETURN(int64_t rounds, flags.get_int("rounds", 3, 1, 100));
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<SyntheticRig> rig,
                          build_synthetic_rig(flags, "stories260K", "f32", in_len + out_len,
                                              "--input-len + --output-len"));
  const std::string& shape = rig->shape;
  const ModelConfig& config = rig->loaded.config;
  LlamaModel* model = rig->model.get();
  EngineConfig ec;
  ec.max_model_len = static_cast<int>(in_len + out_len);
  ec.enable_prefix_caching = false;
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine, Engine::create(model, nullptr, ec));

  // The in-process server, on a loopback port the OS picks.
  ServeConfig sc;
  sc.max_queue_requests = static_cast<int>(n) + 1;
  ServerState state(sc);
  ModelIdentity id;
  id.id = shape;
  id.vocab_size = config.vocab_size;
  id.context_length = ec.max_model_len;
  state.set_ready(engine.get(), nullptr, id);
  GenerationService service(&state);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(&service);
  std::unique_ptr<grpc::Server> server = builder.BuildAndStart();
  if (!server || port == 0) return Unavailable("cannot start the loopback server");
  auto channel = grpc::CreateChannel("127.0.0.1:" + std::to_string(port), grpc::InsecureChannelCredentials());
  auto stub = pagoda::v1::Generation::NewStub(channel);

  auto direct_round = [&]() -> StatusOr<double> {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<RequestHandle> handles;
    for (int i = 0; i < n; ++i) {
      Request r;
      r.prompt_ids = prompt_for(i, static_cast<int>(in_len), config.vocab_size);
      r.params.temperature = 0;
      r.params.ignore_eos = true;
      r.params.max_tokens = static_cast<int>(out_len);
      PAGODA_ASSIGN_OR_RETURN(RequestHandle h, engine->submit(std::move(r)));
      handles.push_back(std::move(h));
    }
    int64_t tokens = 0;
    for (auto& h : handles)
      for (;;) {
        auto out = h.outputs->next();
        tokens += static_cast<int64_t>(out->new_token_ids.size());
        if (out->finished) break;
      }
    return tokens / since(t0);
  };
  auto grpc_round = [&]() -> StatusOr<double> {
    const auto t0 = std::chrono::steady_clock::now();
    std::vector<std::thread> clients;
    std::vector<int64_t> tokens(n, 0);
    std::vector<grpc::Status> results(n);
    for (int i = 0; i < n; ++i) {
      clients.emplace_back([&, i] {
        pagoda::v1::GenerateRequest req;
        for (int t : prompt_for(i, static_cast<int>(in_len), config.vocab_size))
          req.mutable_token_ids()->add_ids(static_cast<uint32_t>(t));
        req.mutable_sampling()->set_temperature(0);
        req.mutable_stop()->set_max_tokens(static_cast<uint32_t>(out_len));
        req.mutable_stop()->set_ignore_eos(true);
        req.set_return_token_ids(true);
        grpc::ClientContext ctx;
        auto reader = stub->Generate(&ctx, req);
        pagoda::v1::GenerateResponse chunk;
        while (reader->Read(&chunk)) tokens[i] += chunk.token_ids_size();
        results[i] = reader->Finish();
      });
    }
    for (auto& c : clients) c.join();
    for (const auto& s : results)
      if (!s.ok()) return Internal("a gRPC request failed: " + s.error_message());
    int64_t total = 0;
    for (int64_t t : tokens) total += t;
    if (total != n * out_len) return Internal("gRPC path returned " + std::to_string(total) + " tokens");
    return total / since(t0);
  };

  // Alternate the two paths so drift in the machine's speed hits both alike.
  PAGODA_RETURN_IF_ERROR(direct_round().status());  // warm-up
  double best_direct = 0, best_grpc = 0;
  for (int r = 0; r < rounds; ++r) {
    PAGODA_ASSIGN_OR_RETURN(double d, direct_round());
    PAGODA_ASSIGN_OR_RETURN(double g, grpc_round());
    best_direct = std::max(best_direct, d);
    best_grpc = std::max(best_grpc, g);
  }
  server->Shutdown();
  std::printf("| shape | requests | in | out | direct tok/s | gRPC loopback tok/s | gRPC / direct |\n");
  std::printf("|---|---|---|---|---|---|---|\n");
  std::printf("| %s | %lld | %lld | %lld | %.1f | %.1f | %.1f%% |\n", shape.c_str(), static_cast<long long>(n),
              static_cast<long long>(in_len), static_cast<long long>(out_len), best_direct, best_grpc,
              100.0 * best_grpc / best_direct);
  return OkStatus();
}

}  // namespace pagoda
