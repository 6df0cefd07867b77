// GPU: device memory and copies through core/ (kernels join with the CUDA backend). Skipped without a GPU.
#include <doctest/doctest.h>

#include "core/tensor.h"
#include "tests/gpu_skip.h"
#include "tests/helpers.h"

using namespace stac;

TEST_SUITE("gpu") {
    TEST_CASE("gpu: host -> device -> host round trip keeps every byte") {
        STAC_REQUIRE_GPU();
        const auto v = stac::test::random_floats(4097, 5);
        Tensor h = Tensor::empty({4097}, DType::F32);
        std::copy(v.begin(), v.end(), h.data<float>());
        const Tensor d = h.to(Device::cuda(0));
        CHECK(d.device() == Device::cuda(0));
        const Tensor d2 = d.clone();  // device -> device
        const Tensor back = d2.to(Device::cpu());
        CHECK(std::equal(v.begin(), v.end(), back.data<float>()));
        CHECK_THROWS_AS(d.data<float>(), Error);  // not host memory
    }

    TEST_CASE("gpu: a device index past the last GPU is refused clearly") {
        STAC_REQUIRE_GPU();
        const int n = cuda_device_count();
        CHECK_THROWS_WITH_AS(Tensor::empty({4}, DType::F32, Device::cuda(n)), doctest::Contains("GPU(s) present"), Error);
    }
}
