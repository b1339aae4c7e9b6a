// safetensors encoding and validating decoder; see safetensors.h. The format's own description:
// https://github.com/huggingface/safetensors#format (little-endian only; we check the host is).
#include "trainer/export/safetensors.h"

#include <algorithm>
#include <array>
#include <bit>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <set>
#include <stdexcept>

namespace difftrain::trainer {
namespace {

static_assert(std::endian::native == std::endian::little,
              "safetensors stores little-endian bytes; this build copies them as they are");

// A header larger than this is not a model's index of tensors but a corrupt length field.
constexpr uint64_t kMaxHeaderBytes = uint64_t{100} << 20;

struct DtypeName {
  at::ScalarType type;
  const char* name;
};
constexpr std::array<DtypeName, 10> kDtypes{{{at::kDouble, "F64"},
                                             {at::kFloat, "F32"},
                                             {at::kHalf, "F16"},
                                             {at::kBFloat16, "BF16"},
                                             {at::kLong, "I64"},
                                             {at::kInt, "I32"},
                                             {at::kShort, "I16"},
                                             {at::kChar, "I8"},
                                             {at::kByte, "U8"},
                                             {at::kBool, "BOOL"}}};

const char* dtype_name(at::ScalarType type, const std::string& tensor) {
  for (const DtypeName& entry : kDtypes) {
    if (entry.type == type) return entry.name;
  }
  throw std::runtime_error("safetensors: tensor '" + tensor + "' has dtype " +
                           std::string(c10::toString(type)) + ", which the format cannot store");
}

bool dtype_from_name(const std::string& name, at::ScalarType* type) {
  for (const DtypeName& entry : kDtypes) {
    if (name == entry.name) {
      *type = entry.type;
      return true;
    }
  }
  return false;
}

[[noreturn]] void malformed(const std::string& origin, const std::string& what) {
  throw std::runtime_error(origin + ": not a valid safetensors file: " + what);
}

// One header entry, checked against the data section of `data_bytes` bytes.
struct Entry {
  std::string name;
  at::ScalarType type;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

Entry parse_entry(const std::string& name, const nlohmann::json& value, uint64_t data_bytes,
                  const std::string& origin) {
  const std::string where = "tensor '" + name + "'";
  if (!value.is_object() || !value.contains("dtype") || !value.contains("shape") ||
      !value.contains("data_offsets")) {
    malformed(origin, where + " lacks dtype, shape or data_offsets");
  }
  Entry entry{name, at::kFloat, {}, 0, 0};
  const nlohmann::json& dtype = value["dtype"];
  if (!dtype.is_string() || !dtype_from_name(dtype.get<std::string>(), &entry.type)) {
    malformed(origin, where + " has unsupported dtype " + dtype.dump());
  }
  const nlohmann::json& shape = value["shape"];
  if (!shape.is_array()) malformed(origin, where + " has shape " + shape.dump());
  uint64_t elements = 1;
  for (const nlohmann::json& size : shape) {
    if (!size.is_number_unsigned() || size.get<uint64_t>() > (uint64_t{1} << 40)) {
      malformed(origin, where + " has shape " + shape.dump());
    }
    entry.shape.push_back(size.get<int64_t>());
    elements *= size.get<uint64_t>();
    if (elements > (uint64_t{1} << 40)) malformed(origin, where + " has shape " + shape.dump());
  }
  const nlohmann::json& offsets = value["data_offsets"];
  if (!offsets.is_array() || offsets.size() != 2 || !offsets[0].is_number_unsigned() ||
      !offsets[1].is_number_unsigned()) {
    malformed(origin, where + " has data_offsets " + offsets.dump());
  }
  entry.begin = offsets[0].get<uint64_t>();
  entry.end = offsets[1].get<uint64_t>();
  const uint64_t want = elements * at::elementSize(entry.type);
  if (entry.begin > entry.end || entry.end - entry.begin != want) {
    malformed(origin, where + " has data_offsets " + offsets.dump() + " for " +
                          std::to_string(want) + " bytes of " + dtype.get<std::string>() + " " +
                          shape.dump());
  }
  if (entry.end > data_bytes) {
    malformed(origin, where + " ends at byte " + std::to_string(entry.end) + " of " +
                          std::to_string(data_bytes) + " data bytes (file truncated?)");
  }
  return entry;
}

}  // namespace

const at::Tensor& SafetensorsContent::at(const std::string& name, const std::string& origin) const {
  for (const auto& [key, tensor] : tensors) {
    if (key == name) return tensor;
  }
  throw std::runtime_error(origin + ": no tensor '" + name + "'");
}

bool SafetensorsContent::contains(const std::string& name) const {
  return std::any_of(tensors.begin(), tensors.end(),
                     [&](const auto& entry) { return entry.first == name; });
}

std::string encode_safetensors(const SafetensorsContent& content) {
  nlohmann::json header = nlohmann::json::object();
  if (!content.metadata.empty()) header["__metadata__"] = content.metadata;
  std::vector<at::Tensor> data;
  uint64_t offset = 0;
  for (const auto& [name, tensor] : content.tensors) {
    if (name == "__metadata__" || header.contains(name)) {
      throw std::runtime_error("safetensors: tensor name '" + name + "' is reserved or repeated");
    }
    at::Tensor cpu = tensor.detach().to(at::kCPU).contiguous();
    const uint64_t bytes = cpu.numel() * cpu.element_size();
    header[name] = {{"dtype", dtype_name(cpu.scalar_type(), name)},
                    {"shape", cpu.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(std::move(cpu));
  }
  std::string text = header.dump();
  // Spaces up to a multiple of 8, so the data (and every 8-byte dtype in it) starts aligned.
  text.append((8 - (8 + text.size()) % 8) % 8, ' ');
  std::string out(8, '\0');
  const uint64_t length = text.size();
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>(length >> (8 * i));
  out += text;
  out.reserve(out.size() + offset);
  for (const at::Tensor& tensor : data) {
    out.append(static_cast<const char*>(tensor.data_ptr()), tensor.numel() * tensor.element_size());
  }
  return out;
}

SafetensorsContent decode_safetensors(const std::string& bytes, const std::string& origin) {
  if (bytes.size() < 8) {
    malformed(origin,
              std::to_string(bytes.size()) + " bytes, shorter than the 8-byte header length");
  }
  uint64_t length = 0;
  for (int i = 0; i < 8; ++i) {
    length |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[static_cast<size_t>(i)])) << (8 * i);
  }
  if (length > kMaxHeaderBytes || length > bytes.size() - 8) {
    malformed(origin, "header length " + std::to_string(length) + " but the file has " +
                          std::to_string(bytes.size()) + " bytes (truncated or not safetensors)");
  }
  nlohmann::json header;
  try {
    header =
        nlohmann::json::parse(bytes.begin() + 8, bytes.begin() + 8 + static_cast<int64_t>(length));
  } catch (const nlohmann::json::exception&) {
    malformed(origin, "the header is not JSON");
  }
  if (!header.is_object()) malformed(origin, "the header is not a JSON object");

  const uint64_t data_bytes = bytes.size() - 8 - length;
  SafetensorsContent content;
  std::vector<Entry> entries;
  for (const auto& [name, value] : header.items()) {
    if (name == "__metadata__") {
      if (!value.is_object()) malformed(origin, "__metadata__ is not an object");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string())
          malformed(origin, "__metadata__ value of '" + key + "' is not a string");
        content.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    entries.push_back(parse_entry(name, value, data_bytes, origin));
  }
  // The byte ranges must tile the data section: sorted by start, each begins where the last ended.
  std::vector<const Entry*> by_offset;
  for (const Entry& entry : entries) by_offset.push_back(&entry);
  std::sort(by_offset.begin(), by_offset.end(), [](const Entry* a, const Entry* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  uint64_t position = 0;
  for (const Entry* entry : by_offset) {
    if (entry->begin != position) {
      malformed(origin, "tensor '" + entry->name + "' starts at data byte " +
                            std::to_string(entry->begin) + ", want " + std::to_string(position) +
                            " (gap or overlap)");
    }
    position = entry->end;
  }
  if (position != data_bytes) {
    malformed(origin, std::to_string(data_bytes - position) +
                          " data bytes after the last tensor (file padded or corrupt)");
  }
  const char* data = bytes.data() + 8 + length;
  for (const Entry& entry : entries) {
    at::Tensor tensor = at::empty(entry.shape, at::TensorOptions().dtype(entry.type));
    std::memcpy(tensor.data_ptr(), data + entry.begin, entry.end - entry.begin);
    content.tensors.emplace_back(entry.name, std::move(tensor));
  }
  return content;
}

SafetensorsContent read_safetensors(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error(path + ": cannot open file");
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  return decode_safetensors(bytes, path);
}

void write_safetensors(const std::string& path, const SafetensorsContent& content) {
  const std::string bytes = encode_safetensors(content);
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) throw std::runtime_error(path + ": write failed");
}

}  // namespace difftrain::trainer
