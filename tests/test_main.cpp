// The doctest runner of the single stac test binary (one file per area beside it).
#define DOCTEST_CONFIG_IMPLEMENT_WITH_MAIN
#include <doctest/doctest.h>
