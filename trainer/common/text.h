// Numbers as text: doubles in the shortest form that reads back exactly, durations as people
// read them.
#pragma once

#include <charconv>
#include <cmath>
#include <cstdio>
#include <string>

namespace difftrain::trainer {

// The shortest decimal that parses back to exactly `value`, in %g style: "0.1", "0.0002",
// "1.0e-08" (a mantissa without a point gets ".0", so that YAML 1.1 readers such as PyYAML read
// a float, not a string); "nan", "inf", "-inf" for the non-finite.
inline std::string format_double(double value) {
  char text[32];
  const auto result = std::to_chars(text, text + sizeof(text), value, std::chars_format::general);
  std::string out(text, result.ptr);
  const size_t e = out.find('e');
  if (e != std::string::npos && out.find('.') == std::string::npos) out.insert(e, ".0");
  return out;
}

// "1h05m", "3m07s"; "?" for a negative or non-finite duration.
inline std::string format_duration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0) return "?";
  const auto s = static_cast<long long>(seconds);
  char text[32];
  if (s >= 3600) {
    std::snprintf(text, sizeof(text), "%lldh%02lldm", s / 3600, s % 3600 / 60);
  } else {
    std::snprintf(text, sizeof(text), "%lldm%02llds", s / 60, s % 60);
  }
  return text;
}

}  // namespace difftrain::trainer
