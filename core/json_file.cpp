#include "core/json_file.h"

#include <cerrno>
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

}  // namespace stac
