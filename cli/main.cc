// pagoda: the command line. `pagoda generate` streams text from a model; `serve` comes with
// the gRPC server.
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "core/flags.h"
#include "core/thread_pool.h"
#include "engine/engine.h"
#include "kernels/backend_factory.h"
#include "models/llama.h"
#include "tokenizer/tokenizer.h"
#ifdef PAGODA_WITH_SERVER
#include "server/serve.h"
#endif

namespace pagoda {
namespace {

constexpr const char* kUsage =
    "usage: pagoda generate [--model DIR|FILE.gguf] [--prompt TEXT] [--max-tokens N]\n"
    "                       [--temperature T] [--top-p P] [--top-k K] [--min-p P]\n"
    "                       [--repetition-penalty R] [--seed S] [--threads N] [--device cpu]\n"
    "                       [--tokenizer FILE] [--stop TEXT] [--ignore-eos]\n"
    "\n"
    "Streams the model's continuation of the prompt to stdout and prints prompt and\n"
    "generation speed to stderr. Without --model it runs the bundled stories260K.\n";

int fail(const Status& s) {
  std::fprintf(stderr, "pagoda: %s\n", s.to_string().c_str());
  return 2;
}

std::string default_model_dir() {
  if (const char* env = std::getenv("PAGODA_MODEL")) return env;
  return PAGODA_DEFAULT_MODEL_DIR;
}

Status run_generate(const std::vector<std::string>& args) {
  PAGODA_ASSIGN_OR_RETURN(
      Flags flags,
      Flags::parse(args,
                   {"model", "prompt", "max-tokens", "temperature", "top-p", "top-k", "min-p",
                    "repetition-penalty", "seed", "threads", "device", "tokenizer", "stop"},
                   {"ignore-eos"}));
  SamplingParams params;
  PAGODA_ASSIGN_OR_RETURN(int64_t max_tokens, flags.get_int("max-tokens", 256, 1, 1 << 20));
  PAGODA_ASSIGN_OR_RETURN(double temperature, flags.get_double("temperature", 0.8, 0.0, 100.0));
  PAGODA_ASSIGN_OR_RETURN(double top_p, flags.get_double("top-p", 0.95, 1e-6, 1.0));
  PAGODA_ASSIGN_OR_RETURN(int64_t top_k, flags.get_int("top-k", 0, 0, 1 << 30));
  PAGODA_ASSIGN_OR_RETURN(double min_p, flags.get_double("min-p", 0.0, 0.0, 1.0));
  PAGODA_ASSIGN_OR_RETURN(double rep, flags.get_double("repetition-penalty", 1.0, 1e-3, 100.0));
  PAGODA_ASSIGN_OR_RETURN(int64_t threads, flags.get_int("threads", 0, 0, 1024));
  params.max_tokens = static_cast<int>(max_tokens);
  params.temperature = static_cast<float>(temperature);
  params.top_p = static_cast<float>(top_p);
  params.top_k = static_cast<int>(top_k);
  params.min_p = static_cast<float>(min_p);
  params.repetition_penalty = static_cast<float>(rep);
  params.ignore_eos = flags.has("ignore-eos");
  if (flags.has("seed")) {
    PAGODA_ASSIGN_OR_RETURN(params.seed, flags.get_uint64("seed"));
  }
  PAGODA_RETURN_IF_ERROR(params.validate());

  const std::string model_path = flags.get_string("model", default_model_dir());
  PAGODA_ASSIGN_OR_RETURN(LoadedModel loaded, load_model(model_path));
  const std::string tok_path = flags.get_string("tokenizer", loaded.tokenizer_path);
  if (tok_path.empty())
    return NotFound("no tokenizer.model beside " + model_path + "; pass --tokenizer FILE");
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<Tokenizer> tokenizer,
                          load_sentencepiece_tokenizer(tok_path));
  if (tokenizer->vocab_size() > loaded.config.vocab_size)
    return InvalidArgument(
        "tokenizer " + tok_path + " has " + std::to_string(tokenizer->vocab_size()) +
        " pieces but the model's vocabulary is " + std::to_string(loaded.config.vocab_size));

  PAGODA_ASSIGN_OR_RETURN(
      std::unique_ptr<Backend> backend,
      make_backend(flags.get_string("device", "cpu"), static_cast<int>(threads)));
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<LlamaModel> model,
                          LlamaModel::create(loaded, backend.get()));

  const std::string prompt = flags.get_string("prompt", "Once upon a time");
  Request request;
  PAGODA_ASSIGN_OR_RETURN(request.prompt_ids, tokenizer->encode(prompt, /*add_bos=*/true));
  request.params = params;
  if (flags.has("stop")) request.stop_strings = {flags.get_string("stop", "")};
  // A CLI run is one request: give the KV cache room for exactly one full context.
  EngineConfig config;
  const int context = loaded.config.max_position_embeddings;
  config.num_blocks = (context + config.block_size - 1) / config.block_size;
  if (request.prompt_ids.size() + static_cast<size_t>(params.max_tokens) >
      static_cast<size_t>(context))
    request.params.max_tokens = std::max(1, context - static_cast<int>(request.prompt_ids.size()));
  PAGODA_ASSIGN_OR_RETURN(std::unique_ptr<Engine> engine,
                          Engine::create(model.get(), tokenizer.get(), config));
  PAGODA_ASSIGN_OR_RETURN(RequestHandle handle, engine->submit(std::move(request)));

  // The prompt is echoed so that the story reads whole; the model's text follows it.
  std::fputs(prompt.c_str(), stdout);
  std::fflush(stdout);
  RequestOutput last;
  for (;;) {
    std::optional<RequestOutput> out = handle.outputs->next();
    std::fputs(out->text.c_str(), stdout);
    std::fflush(stdout);
    if (out->finished) {
      last = std::move(*out);
      break;
    }
  }
  std::fputs("\n", stdout);
  if (last.finish_reason == FinishReason::kError) return last.error;

  const RequestTimings& t = last.timings;
  auto seconds = [](EngineClock::time_point a, EngineClock::time_point b) {
    return std::chrono::duration<double>(b - a).count();
  };
  const double prefill_s = seconds(t.scheduled, t.first_token);
  const double decode_s = seconds(t.first_token, t.finished);
  const int decoded = last.usage.completion_tokens - 1;
  std::fprintf(stderr,
               "[%s | %s] prompt: %d tokens, %.1f tok/s | generation: %d tokens, %.1f tok/s "
               "| finish: %s\n",
               model_path.c_str(), backend->name().c_str(), last.usage.prompt_tokens,
               prefill_s > 0 ? last.usage.prompt_tokens / prefill_s : 0.0,
               last.usage.completion_tokens, decode_s > 0 && decoded > 0 ? decoded / decode_s : 0.0,
               finish_reason_name(last.finish_reason));
  return OkStatus();
}

}  // namespace
}  // namespace pagoda

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (args.empty() || args[0] == "--help" || args[0] == "-h" || args[0] == "help") {
    std::fputs(pagoda::kUsage, args.empty() ? stderr : stdout);
    return args.empty() ? 2 : 0;
  }
  const std::string command = args[0];
  args.erase(args.begin());
  if (command == "generate") {
    for (const auto& a : args)
      if (a == "--help" || a == "-h") {
        std::fputs(pagoda::kUsage, stdout);
        return 0;
      }
    const pagoda::Status s = pagoda::run_generate(args);
    return s.ok() ? 0 : pagoda::fail(s);
  }
#ifdef PAGODA_WITH_SERVER
  if (command == "serve") return pagoda::run_serve(args, pagoda::default_model_dir());
#endif
  std::fprintf(stderr, "pagoda: unknown command '%s'\n\n%s", command.c_str(), pagoda::kUsage);
  return 2;
}
