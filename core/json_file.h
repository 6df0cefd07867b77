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

// Reads a whole file into a string; throws stac::Error naming the file.
std::string read_text_file(const std::filesystem::path& path);

}  // namespace stac
