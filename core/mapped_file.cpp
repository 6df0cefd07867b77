#include "core/mapped_file.h"

#include <cerrno>
#include <cstring>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"

namespace stac {

MappedFile::~MappedFile() {
    if (data) munmap(const_cast<uint8_t*>(data), size);
}

std::shared_ptr<const MappedFile> MappedFile::open(const std::string& file, uint64_t min_size, const char* format) {
    const int fd = ::open(file.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) fail("{}: cannot open: {}", file, std::strerror(errno));
    struct stat st {};
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        ::close(fd);
        fail("{}: not a regular file", file);
    }
    const auto file_size = uint64_t(st.st_size);
    if (file_size < min_size) {
        ::close(fd);
        fail("{}: file is {} bytes, too short for a {} (needs at least {})", file, file_size, format, min_size);
    }
    void* addr = mmap(nullptr, file_size, PROT_READ, MAP_PRIVATE, fd, 0);
    const int err = errno;
    ::close(fd);
    if (addr == MAP_FAILED) fail("{}: cannot map {} bytes: {}", file, file_size, std::strerror(err));
    auto m = std::make_shared<MappedFile>();
    m->data = static_cast<const uint8_t*>(addr);
    m->size = file_size;
    return m;
}

}  // namespace stac
