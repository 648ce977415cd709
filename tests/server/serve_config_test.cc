#include "server/serve_config.h"

#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>

namespace pagoda {
namespace {

std::string write_yaml(const std::string& name, const std::string& text) {
  const auto path =
      std::filesystem::temp_directory_path() / ("pagoda_serve_config_" + name + ".yaml");
  std::ofstream(path) << text;
  return path.string();
}

TEST(ServeConfigTest, DefaultsListenOnLoopback) {
  auto c = parse_serve_config({});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->host, "127.0.0.1");
  EXPECT_EQ(c->port, 50051);
  EXPECT_EQ(c->engine.policy, SchedulingPolicy::kFcfs);
  EXPECT_TRUE(c->engine.enable_prefix_caching);
  EXPECT_FALSE(c->engine.decode_graphs);
  EXPECT_TRUE(c->engine.device_sampling);
  EXPECT_FALSE(c->engine.async_scheduling);
}

TEST(ServeConfigTest, FileValuesAndFlagsOverrideThem) {
  const std::string path = write_yaml("override", R"(
port: 6000
max_num_seqs: 8
policy: priority
prefix-caching: false
cuda-graphs: true
device-sampling: false
async-scheduling: true
max-logprobs: 3
drain_timeout: 2.5
)");
  auto c = parse_serve_config({"--config", path, "--port", "7000"});
  ASSERT_TRUE(c.ok()) << c.status().to_string();
  EXPECT_EQ(c->port, 7000);  // the flag wins
  EXPECT_EQ(c->engine.max_num_seqs, 8);
  EXPECT_EQ(c->engine.policy, SchedulingPolicy::kPriority);
  EXPECT_FALSE(c->engine.enable_prefix_caching);
  EXPECT_TRUE(c->engine.decode_graphs);
  EXPECT_FALSE(c->engine.device_sampling);
  EXPECT_TRUE(c->engine.async_scheduling);
  EXPECT_EQ(c->engine.max_logprobs, 3);
  EXPECT_DOUBLE_EQ(c->drain_timeout_seconds, 2.5);
}

TEST(ServeConfigTest, ErrorsNameTheKeyOrFlag) {
  auto expect_error = [](std::vector<std::string> args, const std::string& needle) {
    auto c = parse_serve_config(args);
    ASSERT_FALSE(c.ok()) << needle;
    EXPECT_NE(c.status().message().find(needle), std::string::npos) << c.status().message();
  };
  expect_error({"--config", write_yaml("unknown", "prot: 1\n")}, "unknown key 'prot'");
  expect_error({"--config", write_yaml("nested", "port:\n  a: 1\n")},
               "'port' must have a single value");
  expect_error({"--config", write_yaml("badyaml", "port: [1\n")}, "not valid YAML");
  expect_error({"--config", write_yaml("badvalue", "max_num_seqs: lots\n")},
               "--max-num-seqs must be an integer");
  expect_error({"--config", "/nonexistent/pagoda.yaml"}, "/nonexistent/pagoda.yaml");
  expect_error({"--port", "70000"}, "--port must be in [0, 65535]");
  expect_error({"--policy", "random"}, "--policy must be fcfs or priority");
  expect_error({"--prefix-caching", "maybe"}, "--prefix-caching must be true or false");
  expect_error({"--cuda-graphs", "yes"}, "--cuda-graphs must be true or false");
  expect_error({"--device-sampling", "1"}, "--device-sampling must be true or false");
  expect_error({"--async-scheduling", "yes"}, "--async-scheduling must be true or false");
  expect_error({"--max-logprobs", "21"}, "--max-logprobs must be in [0, 20]");
  expect_error({"--bogus", "1"}, "unknown flag --bogus");
  expect_error({"--config"}, "--config needs a value");
}

}  // namespace
}  // namespace pagoda
