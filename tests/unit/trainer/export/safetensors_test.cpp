// safetensors: a round trip keeps names, dtypes, shapes, values and metadata; the layout is the
// published one (byte for byte for a tiny file); malformed and truncated files are refused with
// one line naming the file and what is wrong.
#include "trainer/export/safetensors.h"

#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdio>
#include <filesystem>
#include <string>

#include "tests/unit/trainer/test_util.h"

namespace difftrain::trainer {
namespace {

using test_util::error_of;

// The bytes of a file with an 8-byte length, `header` and `data`.
std::string file_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[i] = static_cast<char>(header.size() >> (8 * i));
  return out + header + data;
}

TEST(Safetensors, RoundTripKeepsTensorsAndMetadata) {
  SafetensorsContent content;
  content.tensors = {{"w", torch::randn({3, 4, 1, 1})},
                     {"t", torch::arange(5, torch::kLong)},
                     {"h", torch::randn({2}).to(torch::kHalf)},
                     {"b", torch::randn({2, 2}).to(torch::kBFloat16)},
                     {"e", torch::empty({0, 3})},
                     {"s", torch::randn({4, 6}).t()}};  // non-contiguous
  content.metadata = {{"format", "pt"}};
  const std::string bytes = encode_safetensors(content);
  uint64_t header_bytes = 0;
  for (int i = 0; i < 8; ++i) header_bytes |= uint64_t{static_cast<uint8_t>(bytes[i])} << (8 * i);
  EXPECT_EQ((8 + header_bytes) % 8, 0u);  // the data starts 8-byte aligned
  const SafetensorsContent back = decode_safetensors(bytes, "mem");
  ASSERT_EQ(back.tensors.size(), content.tensors.size());
  for (const auto& [name, tensor] : content.tensors) {
    const at::Tensor& read = back.at(name, "mem");
    EXPECT_EQ(read.scalar_type(), tensor.scalar_type()) << name;
    EXPECT_EQ(read.sizes(), tensor.sizes()) << name;
    EXPECT_TRUE(torch::equal(read, tensor)) << name;
  }
  EXPECT_EQ(back.metadata, content.metadata);
}

TEST(Safetensors, LayoutIsThePublishedOne) {
  // One F32 scalar pair: header {"a":{...}} padded with spaces to 8 bytes, then 8 data bytes.
  const std::string bytes = encode_safetensors({{{"a", torch::tensor({1.0f, 2.0f})}}, {}});
  const std::string header = R"({"a":{"data_offsets":[0,8],"dtype":"F32","shape":[2]}})";
  std::string padded = header;
  padded.append((8 - (8 + padded.size()) % 8) % 8, ' ');
  const float values[2] = {1.0f, 2.0f};
  EXPECT_EQ(bytes, file_bytes(padded, std::string(reinterpret_cast<const char*>(values), 8)));
}

TEST(Safetensors, FileRoundTrip) {
  const std::string path = testing::TempDir() + "/round_trip.safetensors";
  write_safetensors(path, {{{"x", torch::ones({2, 3})}}, {}});
  EXPECT_TRUE(torch::equal(read_safetensors(path).at("x", path), torch::ones({2, 3})));
  std::filesystem::remove(path);
  EXPECT_EQ(error_of([&] { read_safetensors(path); }), path + ": cannot open file");
}

TEST(Safetensors, RefusesMalformedFiles) {
  const std::string data(8, '\0');
  const std::string good = R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  EXPECT_NO_THROW(decode_safetensors(file_bytes(good, data), "f"));
  const auto error = [](const std::string& bytes) {
    return error_of([&] { decode_safetensors(bytes, "f.safetensors"); });
  };
  EXPECT_EQ(error("abc"),
            "f.safetensors: not a valid safetensors file: 3 bytes, shorter than the 8-byte header "
            "length");
  EXPECT_NE(error(file_bytes(good, data).substr(0, 20)).find("(truncated or not safetensors)"),
            std::string::npos);
  EXPECT_NE(error(file_bytes("[1, 2]", "")).find("not a JSON object"), std::string::npos);
  EXPECT_NE(error(file_bytes("{not json", "")).find("not JSON"), std::string::npos);
  EXPECT_NE(error(file_bytes(R"({"a":{"dtype":"F7","shape":[2],"data_offsets":[0,8]}})", data))
                .find("tensor 'a' has unsupported dtype \"F7\""),
            std::string::npos);
  EXPECT_NE(error(file_bytes(R"({"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", data))
                .find("tensor 'a' has shape [-2]"),
            std::string::npos);
  EXPECT_NE(error(file_bytes(R"({"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", data))
                .find("for 12 bytes of F32 [3]"),
            std::string::npos);
  EXPECT_NE(error(file_bytes(R"({"a":{"dtype":"F32","shape":[2]}})", data)).find("lacks"),
            std::string::npos);
  // Truncated data: the tensor ends past the file.
  EXPECT_NE(error(file_bytes(good, data.substr(0, 5))).find("file truncated"), std::string::npos);
  // Extra bytes after the last tensor, and a gap between tensors.
  EXPECT_NE(error(file_bytes(good, data + "xx")).find("2 data bytes after the last tensor"),
            std::string::npos);
  EXPECT_NE(error(file_bytes(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", data))
                .find("starts at data byte 4, want 0"),
            std::string::npos);
  EXPECT_NE(error(file_bytes(R"({"__metadata__":{"k":1}})", "")).find("not a string"),
            std::string::npos);
  // Every message is one line.
  EXPECT_EQ(error(file_bytes(good, data.substr(0, 5))).find('\n'), std::string::npos);
}

}  // namespace
}  // namespace difftrain::trainer
