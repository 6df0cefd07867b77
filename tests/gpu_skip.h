// GPU tests skip visibly when no CUDA device is present: under CTest (STAC_CTEST=1) the case exits
// with code 77, which CTest reports as "Skipped"; run directly, it prints a message and returns.
#pragma once

#include <cstdlib>
#include <string>

#include <doctest/doctest.h>

#include "core/device.h"

#define STAC_REQUIRE_GPU()                                                                              \
    do {                                                                                                \
        if (stac::cuda_device_count() == 0) {                                                           \
            MESSAGE("SKIPPED: no CUDA GPU (" << std::string(stac::cuda_compiled() ? "CUDA build" : "CPU-only build") \
                                             << ")");                                                   \
            if (const char* e = std::getenv("STAC_CTEST"); e && e[0] == '1') std::_Exit(77);            \
            return;                                                                                     \
        }                                                                                               \
    } while (0)
