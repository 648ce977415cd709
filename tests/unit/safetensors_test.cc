// The safetensors loader on files written here: good files (F32/F16/BF16, sharded) and each way
// a file can be broken.
#include "models/loaders/safetensors.h"

#include <gtest/gtest.h>

#include "core/dtype.h"
#include "tests/unit/model_file_test_util.h"

namespace pagoda {
namespace {

using testing::safetensors_file;
using testing::safetensors_raw;
using testing::StTensor;
using testing::TempDir;
using testing::write_file;

std::string f32_bytes(const std::vector<float>& v) {
  return testing::bytes_of(v);
}
std::string f16_bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float x : v) h.push_back(f32_to_f16(x));
  return testing::bytes_of(h);
}
std::string bf16_bytes(const std::vector<float>& v) {
  std::vector<uint16_t> h;
  for (float x : v) h.push_back(f32_to_bf16(x));
  return testing::bytes_of(h);
}

std::vector<float> values(const TensorView& t) {
  std::vector<float> out;
  for (int64_t i = 0; i < t.numel(); ++i) out.push_back(load_as_f32(t.data, t.dtype, i));
  return out;
}

// Expects `status` to fail with `code` and a message naming `path` and every one of `mentions`.
void expect_error(const Status& status, StatusCode code, const std::string& path,
                  std::initializer_list<std::string> mentions) {
  ASSERT_FALSE(status.ok());
  EXPECT_EQ(status.code(), code) << status.to_string();
  EXPECT_NE(status.message().find(path), std::string::npos) << status.to_string();
  for (const std::string& m : mentions) {
    EXPECT_NE(status.message().find(m), std::string::npos)
        << "'" << m << "' in " << status.to_string();
  }
}

const std::vector<float> kA = {1.0f, -2.5f, 3.25f, 0.0f, 1e-3f, -7.0f};  // [2, 3]
const std::vector<float> kB = {1.5f, -2.0f, 0.25f, 65504.0f};            // [4], exact in f16
const std::vector<float> kC = {1.0f, -0.5f, 3.0f, 256.0f};               // [2, 2], exact in bf16

std::vector<StTensor> three_tensors() {
  return {{"a", "F32", {2, 3}, f32_bytes(kA)},
          {"b", "F16", {4}, f16_bytes(kB)},
          {"c", "BF16", {2, 2}, bf16_bytes(kC)}};
}

TEST(Safetensors, LoadsF32F16Bf16AsViewsIntoTheMapping) {
  TempDir dir;
  const std::string path = dir.file("model.safetensors");
  write_file(path, safetensors_file(three_tensors()));
  WeightStore store;
  std::vector<std::string> names;
  ASSERT_TRUE(load_safetensors(path, &store, &names).ok());
  EXPECT_EQ(names, (std::vector<std::string>{"a", "b", "c"}));
  auto a = store.get("a", {2, 3});
  auto b = store.get("b", {4});
  auto c = store.get("c", {2, 2});
  ASSERT_TRUE(a.ok() && b.ok() && c.ok());
  EXPECT_EQ(a->dtype, DType::kF32);
  EXPECT_EQ(b->dtype, DType::kF16);
  EXPECT_EQ(c->dtype, DType::kBF16);
  EXPECT_EQ(values(*a), kA);
  EXPECT_EQ(values(*b), kB);
  EXPECT_EQ(values(*c), kC);
  // Zero-copy: the tensors sit in the file's data section back to back.
  EXPECT_EQ(b->as<char>() - a->as<char>(), 24);
  EXPECT_EQ(c->as<char>() - b->as<char>(), 8);
  // get() checks the shape and the name.
  EXPECT_EQ(store.get("a", {3, 2}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(store.get("zzz", {1}).status().code(), StatusCode::kNotFound);
}

TEST(Safetensors, UnalignedDataIsCopied) {
  TempDir dir;
  const std::string path = dir.file("odd.safetensors");
  write_file(path, safetensors_file({{"a", "F32", {2, 3}, f32_bytes(kA)}}, /*pad_to=*/1));
  WeightStore store;
  ASSERT_TRUE(load_safetensors(path, &store).ok());
  auto a = store.get("a", {2, 3});
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(reinterpret_cast<uintptr_t>(a->data) % 4, 0u);
  EXPECT_EQ(values(*a), kA);
}

TEST(Safetensors, Sharded) {
  TempDir dir;
  write_file(dir.file("model-00001-of-00002.safetensors"),
             safetensors_file({{"a", "F32", {2, 3}, f32_bytes(kA)}}));
  write_file(
      dir.file("model-00002-of-00002.safetensors"),
      safetensors_file({{"b", "F16", {4}, f16_bytes(kB)}, {"c", "BF16", {2, 2}, bf16_bytes(kC)}}));
  const std::string index = dir.file("model.safetensors.index.json");
  write_file(index, R"({"metadata": {"total_size": 40}, "weight_map": {
      "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors",
      "c": "model-00002-of-00002.safetensors"}})");
  WeightStore store;
  ASSERT_TRUE(load_safetensors_index(index, &store).ok());
  EXPECT_EQ(store.tensors().size(), 3u);
  EXPECT_EQ(values(*store.get("c", {2, 2})), kC);

  // A tensor the index puts in a shard that lacks it.
  write_file(index, R"({"weight_map": {"a": "model-00001-of-00002.safetensors",
      "d": "model-00001-of-00002.safetensors"}})");
  WeightStore store2;
  expect_error(load_safetensors_index(index, &store2), StatusCode::kNotFound,
               dir.file("model-00001-of-00002.safetensors"), {"'d'"});

  // A shard that does not exist.
  write_file(index, R"({"weight_map": {"a": "model-00009-of-00009.safetensors"}})");
  WeightStore store3;
  expect_error(load_safetensors_index(index, &store3), StatusCode::kNotFound,
               dir.file("model-00009-of-00009.safetensors"), {});

  // A broken index.
  write_file(index, R"({"weight_map": ["a"]})");
  WeightStore store4;
  expect_error(load_safetensors_index(index, &store4), StatusCode::kInvalidArgument, index,
               {"weight_map"});
}

TEST(Safetensors, MissingFile) {
  TempDir dir;
  WeightStore store;
  expect_error(load_safetensors(dir.file("nope.safetensors"), &store), StatusCode::kNotFound,
               dir.file("nope.safetensors"), {});
}

TEST(Safetensors, TruncatedFile) {
  TempDir dir;
  const std::string path = dir.file("t.safetensors");
  const std::string good = safetensors_file(three_tensors());
  write_file(path, good.substr(0, good.size() - 3));  // cuts into tensor c
  WeightStore store;
  expect_error(load_safetensors(path, &store), StatusCode::kDataLoss, path, {"'c'", "truncated"});
  write_file(path, good.substr(0, 5));  // not even the header length
  expect_error(load_safetensors(path, &store), StatusCode::kDataLoss, path, {"truncated"});
  // Every shorter prefix fails cleanly.
  for (size_t n = 0; n < good.size(); ++n) {
    write_file(path, good.substr(0, n));
    WeightStore s;
    EXPECT_FALSE(load_safetensors(path, &s).ok()) << n;
  }
}

TEST(Safetensors, HeaderLengthBeyondFile) {
  TempDir dir;
  const std::string path = dir.file("h.safetensors");
  std::string bytes = safetensors_file(three_tensors());
  const uint64_t huge = 1u << 20;
  std::memcpy(bytes.data(), &huge, 8);
  write_file(path, bytes);
  WeightStore store;
  expect_error(load_safetensors(path, &store), StatusCode::kDataLoss, path,
               {"header length 1048576"});
}

TEST(Safetensors, HeaderLiesAboutOffsets) {
  TempDir dir;
  const std::string path = dir.file("lie.safetensors");
  WeightStore store;
  // Overlapping tensors.
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},
      "b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                                   f32_bytes({1, 2, 3})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path,
               {"'a'", "'b'", "overlap"});
  // Offsets past the data.
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}})",
                                   f32_bytes({1, 2})));
  expect_error(load_safetensors(path, &store), StatusCode::kDataLoss, path, {"'a'", "[0, 16)"});
  // Reversed offsets.
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}})",
                                   f32_bytes({1, 2})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path, {"reversed"});
}

TEST(Safetensors, OffsetsNotMatchingShape) {
  TempDir dir;
  const std::string path = dir.file("shape.safetensors");
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[2,3],"data_offsets":[0,20]}})",
                                   f32_bytes(kA)));
  WeightStore store;
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path,
               {"'a'", "20 bytes", "[2, 3]", "needs 24"});
  write_file(path, safetensors_raw(R"({"a":{"dtype":"BF16","shape":[2,3],"data_offsets":[0,24]}})",
                                   f32_bytes(kA)));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path, {"needs 12"});
}

TEST(Safetensors, UnsupportedAndUnknownDtypes) {
  TempDir dir;
  const std::string path = dir.file("dtype.safetensors");
  WeightStore store;
  write_file(path, safetensors_raw(R"({"q":{"dtype":"I8","shape":[8],"data_offsets":[0,8]}})",
                                   f32_bytes({1, 2})));
  expect_error(load_safetensors(path, &store), StatusCode::kUnimplemented, path, {"'q'", "I8"});
  write_file(path, safetensors_raw(R"({"d":{"dtype":"F64","shape":[1],"data_offsets":[0,8]}})",
                                   f32_bytes({1, 2})));
  expect_error(load_safetensors(path, &store), StatusCode::kUnimplemented, path, {"'d'", "F64"});
  write_file(path, safetensors_raw(R"({"z":{"dtype":"Q7","shape":[1],"data_offsets":[0,4]}})",
                                   f32_bytes({1})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path, {"'z'", "Q7"});
}

TEST(Safetensors, MalformedHeader) {
  TempDir dir;
  const std::string path = dir.file("json.safetensors");
  WeightStore store;
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[1],)", f32_bytes({1})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path,
               {"not valid JSON"});
  write_file(path, safetensors_raw(R"([1, 2])", f32_bytes({1})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path, {"object"});
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}})",
                                   f32_bytes({1})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path,
               {"'a'", "shape"});
  write_file(path, safetensors_raw(R"({"a":{"dtype":"F32","shape":[1]}})", f32_bytes({1})));
  expect_error(load_safetensors(path, &store), StatusCode::kInvalidArgument, path,
               {"'a'", "data_offsets"});
  write_file(path,
             safetensors_raw(R"({"a":{"dtype":"F32","shape":[1,1,1,1,1],"data_offsets":[0,4]}})",
                             f32_bytes({1})));
  expect_error(load_safetensors(path, &store), StatusCode::kUnimplemented, path, {"'a'", "dims"});
}

}  // namespace
}  // namespace pagoda
