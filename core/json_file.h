// Reading JSON files (config.json, snn_config.json, ...) with errors that name the file.
#pragma once

#include <filesystem>
#include <string>

#include <nlohmann/json.hpp>

namespace stac {

// Parses a JSON file; throws stac::Error naming the file when it is missing or not valid JSON.
nlohmann::json read_json_file(const std::filesystem::path& path);

// Writes JSON (pretty, 2-space indent) through a temporary file renamed into place.
void write_json_file(const std::filesystem::path& path, const nlohmann::json& value);

// Typed config values with errors that name `source` and the key. A missing or null key gives
// `def`, or throws when `required`; integers must lie in [lo, hi]; floats must be finite and > 0
// when `positive`.
int64_t json_int(const nlohmann::json& j, const char* key, int64_t def, const std::string& source, bool required,
                 int64_t lo, int64_t hi);
bool json_bool(const nlohmann::json& j, const char* key, bool def, const std::string& source);
double json_number(const nlohmann::json& j, const char* key, double def, const std::string& source, bool positive);

// Reads a whole file into a string; throws stac::Error naming the file.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace stac
