#include "core/json_file.h"

#include <cerrno>
#include <cmath>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"

namespace stac {

std::string read_text_file(const std::filesystem::path& path) {
    std::error_code ec;
    if (!std::filesystem::exists(path, ec)) fail("{}: file not found", path.string());
    if (std::filesystem::is_directory(path, ec)) fail("{}: is a directory, expected a file", path.string());
    std::ifstream in(path, std::ios::binary);
    if (!in) fail("{}: cannot open: {}", path.string(), std::strerror(errno));
    std::ostringstream ss;
    ss << in.rdbuf();
    if (in.bad()) fail("{}: read error", path.string());
    return ss.str();
}

nlohmann::json read_json_file(const std::filesystem::path& path) {
    const std::string text = read_text_file(path);
    try {
        return nlohmann::json::parse(text);
    } catch (const nlohmann::json::exception& e) {
        fail("{}: not valid JSON: {}", path.string(), e.what());
    }
}

void write_json_file(const std::filesystem::path& path, const nlohmann::json& value) {
    const std::filesystem::path tmp = path.string() + ".tmp";
    {
        std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
        if (!out) fail("{}: cannot open for writing", tmp.string());
        out << value.dump(2) << '\n';
        if (!out.flush()) fail("{}: write failed", tmp.string());
    }
    std::error_code ec;
    std::filesystem::rename(tmp, path, ec);
    if (ec) fail("{}: cannot move {} into place: {}", path.string(), tmp.string(), ec.message());
}

int64_t json_int(const nlohmann::json& j, const char* key, int64_t def, const std::string& source, bool required,
                 int64_t lo, int64_t hi) {
    if (!j.contains(key) || j[key].is_null()) {
        if (required) fail("{}: missing \"{}\"", source, key);
        return def;
    }
    const nlohmann::json& v = j[key];
    if (!v.is_number_integer()) fail("{}: \"{}\" must be an integer, found {}", source, key, v.dump());
    const int64_t x = v.get<int64_t>();
    if (x < lo || x > hi) fail("{}: \"{}\" = {} is out of range [{}, {}]", source, key, x, lo, hi);
    return x;
}

bool json_bool(const nlohmann::json& j, const char* key, bool def, const std::string& source) {
    if (!j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_boolean()) fail("{}: \"{}\" must be true or false, found {}", source, key, j[key].dump());
    return j[key].get<bool>();
}

double json_number(const nlohmann::json& j, const char* key, double def, const std::string& source, bool positive) {
    if (!j.contains(key) || j[key].is_null()) return def;
    if (!j[key].is_number()) fail("{}: \"{}\" must be a number, found {}", source, key, j[key].dump());
    const double x = j[key].get<double>();
    if (!std::isfinite(x) || (positive && !(x > 0)))
        fail("{}: \"{}\" = {} must be a {}finite number", source, key, x, positive ? "positive " : "");
    return x;
}

}  // namespace stac
