// Shape / Tensor / Device / allocator behaviour.
#include <doctest/doctest.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "core/allocator.h"
#include "core/device.h"
#include "core/dtype.h"
#include "core/tensor.h"

using namespace stac;

// ---------------------------------------------------------------- Shape

TEST_CASE("tensor: Shape enforces rank <= 4 and non-negative dims") {
    const Shape s0;
    CHECK(s0.rank() == 0);
    CHECK(s0.numel() == 1);
    CHECK(s0.str() == "[]");
    const Shape s4{2, 3, 4, 5};
    CHECK(s4.rank() == 4);
    CHECK(s4.numel() == 120);
    CHECK(s4[3] == 5);
    CHECK(s4.str() == "[2, 3, 4, 5]");
    CHECK(Shape{768, 2304}.str() == "[768, 2304]");
    CHECK(Shape{3, 0, 2}.numel() == 0);
    CHECK(Shape{7}.dims().size() == 1);

    CHECK_THROWS_WITH_AS(Shape({1, 2, 3, 4, 5}), doctest::Contains("rank 5"), Error);
    const std::vector<int64_t> five{1, 1, 1, 1, 1};
    CHECK_THROWS_AS(Shape::from(five), Error);
    CHECK_THROWS_WITH_AS(Shape({2, -1}), doctest::Contains("negative"), Error);
    const std::vector<int64_t> neg{-3};
    CHECK_THROWS_AS(Shape::from(neg), Error);
    const std::vector<int64_t> four{9, 8, 7, 6};
    CHECK(Shape::from(four) == Shape{9, 8, 7, 6});

    CHECK(Shape{2, 3} == Shape{2, 3});
    CHECK_FALSE(Shape{2, 3} == Shape{3, 2});
    CHECK_FALSE(Shape{2, 3} == Shape{2, 3, 1});
    CHECK_FALSE(Shape{} == Shape{1});
    CHECK(Shape{} == Shape());
}

// ---------------------------------------------------------------- Tensor

TEST_CASE("tensor: empty, zeros, alignment and describe") {
    for (DType dt : {DType::F32, DType::F16, DType::BF16, DType::I32, DType::I8, DType::U8}) {
        for (int64_t n : {0, 1, 3, 17, 64, 1000}) {
            const Tensor t = Tensor::empty({n}, dt);
            CHECK(t.defined());
            CHECK(t.numel() == n);
            CHECK(t.nbytes() == size_t(n) * dtype_size(dt));
            CHECK(t.dtype() == dt);
            CHECK(t.device() == Device::cpu());
            CHECK(reinterpret_cast<uintptr_t>(t.raw()) % kHostAlignment == 0);
        }
    }
    CHECK(kHostAlignment == 64);

    // zeros really writes zeros: allocate and dirty some memory first, then check every byte.
    for (int rep = 0; rep < 4; ++rep) {
        Tensor dirty = Tensor::empty({4096}, DType::F32);
        std::memset(dirty.raw(), 0xAB, dirty.nbytes());
    }
    const Tensor z = Tensor::zeros({3, 5, 7, 11}, DType::F32);
    const auto* zb = static_cast<const uint8_t*>(z.raw());
    CHECK(std::all_of(zb, zb + z.nbytes(), [](uint8_t b) { return b == 0; }));
    CHECK(z.nbytes() == 3 * 5 * 7 * 11 * 4);

    CHECK(Tensor::empty({2, 3}, DType::F32).describe() == "F32[2, 3] cpu");
    CHECK(Tensor::empty({4}, DType::BF16).describe() == "BF16[4] cpu");
    CHECK(Tensor::empty({}, DType::I8).describe() == "I8[] cpu");
    CHECK(Tensor::empty({}, DType::I8).numel() == 1);

    const Tensor t = Tensor::empty({2, 3, 4}, DType::F32);
    CHECK(t.dim(0) == 2);
    CHECK(t.dim(-1) == 4);
    CHECK(t.dim(-3) == 2);
    CHECK_THROWS_AS(t.dim(3), Error);
    CHECK_THROWS_AS(t.dim(-4), Error);

    const Tensor undef;
    CHECK_FALSE(undef.defined());
    CHECK(undef.raw() == nullptr);
    CHECK_THROWS_AS(undef.data<float>(), Error);
}

TEST_CASE("tensor: reshape and slice_rows share storage and check ranges") {
    Tensor t = Tensor::empty({4, 3}, DType::F32);
    float* p = t.data<float>();
    for (int i = 0; i < 12; ++i) p[i] = float(i);

    const Tensor r = t.reshape({2, 6});
    CHECK(r.shape() == Shape{2, 6});
    CHECK(r.raw() == t.raw());
    CHECK(r.storage() == t.storage());
    CHECK(t.reshape({12}).data<float>()[11] == 11.0f);
    CHECK_THROWS_WITH_AS(t.reshape({5}), doctest::Contains("reshape"), Error);
    CHECK_THROWS_AS(t.reshape({2, 2, 2}), Error);
    CHECK(Tensor::empty({1, 1}, DType::F32).reshape({}).rank() == 0);

    Tensor s = t.slice_rows(1, 3);
    CHECK(s.shape() == Shape{2, 3});
    CHECK(s.storage() == t.storage());
    CHECK(s.data<float>()[0] == 3.0f);
    CHECK(s.data<float>()[5] == 8.0f);
    s.data<float>()[0] = 100.0f;  // writing through the view is seen in the parent
    CHECK(p[3] == 100.0f);
    const Tensor ss = s.slice_rows(1, 2);  // a slice of a slice composes offsets
    CHECK(ss.shape() == Shape{1, 3});
    CHECK(ss.data<float>()[0] == 6.0f);
    CHECK(t.slice_rows(4, 4).numel() == 0);
    CHECK(t.slice_rows(0, 4).raw() == t.raw());

    CHECK_THROWS_WITH_AS(t.slice_rows(3, 5), doctest::Contains("out of range"), Error);
    CHECK_THROWS_AS(t.slice_rows(-1, 2), Error);
    CHECK_THROWS_AS(t.slice_rows(2, 1), Error);
    CHECK_THROWS_AS(Tensor::empty({}, DType::F32).slice_rows(0, 1), Error);

    // rank-3 rows are whole [C, D] blocks; a 16-bit dtype checks the byte offset uses the element size
    Tensor h = Tensor::empty({3, 2, 2}, DType::F16);
    auto* hp = h.raw_data<uint16_t>();
    for (uint16_t i = 0; i < 12; ++i) hp[i] = i;
    CHECK(h.slice_rows(2, 3).raw_data<uint16_t>()[0] == 8);
}

TEST_CASE("tensor: to(DType) converts between float types and from integers") {
    Tensor f = Tensor::empty({6}, DType::F32);
    const float src[6] = {1.0f, -2.0f, 0.1f, 65504.0f, 65520.0f, 1e-8f};
    std::memcpy(f.raw(), src, sizeof src);

    const Tensor h = f.to(DType::F16);
    CHECK(h.dtype() == DType::F16);
    CHECK(h.shape() == f.shape());
    const uint16_t want_h[6] = {0x3C00, 0xC000, 0x2E66, 0x7BFF, 0x7C00, 0x0000};
    for (int i = 0; i < 6; ++i) CHECK(h.raw_data<uint16_t>()[i] == want_h[i]);

    const Tensor b = f.to(DType::BF16);
    const uint16_t want_b[6] = {0x3F80, 0xC000, 0x3DCD, 0x4780, 0x4780, 0x322C};  // 65504 rounds up to 65536
    for (int i = 0; i < 6; ++i) CHECK(b.raw_data<uint16_t>()[i] == want_b[i]);

    const Tensor hb = h.to(DType::BF16);  // 1.0, -2.0 are exact in both
    CHECK(hb.raw_data<uint16_t>()[0] == 0x3F80);
    CHECK(hb.raw_data<uint16_t>()[1] == 0xC000);
    const Tensor bh = b.to(DType::F16);
    CHECK(bh.raw_data<uint16_t>()[0] == 0x3C00);
    CHECK(bh.raw_data<uint16_t>()[4] == 0x7C00);  // 65536 overflows f16

    const Tensor hf = h.to(DType::F32);
    CHECK(hf.data<float>()[2] == 0.0999755859375f);
    CHECK(std::isinf(hf.data<float>()[4]));
    CHECK(b.to(DType::F32).data<float>()[3] == 65536.0f);
    CHECK(b.to(DType::F32).data<float>()[2] == 0.10009765625f);

    const Tensor same = f.to(DType::F32);  // a copy, not the same storage
    CHECK(same.raw() != f.raw());
    CHECK(std::memcmp(same.raw(), f.raw(), f.nbytes()) == 0);

    Tensor i32 = Tensor::empty({4}, DType::I32);
    const int32_t iv[4] = {-3, 0, 16777217, std::numeric_limits<int32_t>::min()};
    std::memcpy(i32.raw(), iv, sizeof iv);
    const Tensor i32f = i32.to(DType::F32);
    CHECK(i32f.data<float>()[0] == -3.0f);
    CHECK(i32f.data<float>()[1] == 0.0f);
    CHECK(i32f.data<float>()[2] == 16777216.0f);  // nearest f32
    CHECK(i32f.data<float>()[3] == -2147483648.0f);
    CHECK(i32.to(DType::F16).raw_data<uint16_t>()[0] == 0xC200);

    Tensor i8 = Tensor::empty({3}, DType::I8);
    const int8_t i8v[3] = {-128, 127, -1};
    std::memcpy(i8.raw(), i8v, sizeof i8v);
    const Tensor i8f = i8.to(DType::F32);
    CHECK(i8f.data<float>()[0] == -128.0f);
    CHECK(i8f.data<float>()[1] == 127.0f);
    CHECK(i8f.data<float>()[2] == -1.0f);
    CHECK(i8.to(DType::BF16).raw_data<uint16_t>()[0] == 0xC300);

    Tensor u8 = Tensor::empty({2}, DType::U8);
    u8.data<uint8_t>()[0] = 0;
    u8.data<uint8_t>()[1] = 255;
    const Tensor u8f = u8.to(DType::F32);
    CHECK(u8f.data<float>()[0] == 0.0f);
    CHECK(u8f.data<float>()[1] == 255.0f);

    CHECK_THROWS_WITH_AS(f.to(DType::I32), doctest::Contains("not supported"), Error);
    CHECK_THROWS_AS(f.to(DType::U8), Error);
}

TEST_CASE("tensor: clone is a deep copy - data<T>() checks the type") {
    Tensor a = Tensor::empty({2, 2}, DType::I32);
    for (int i = 0; i < 4; ++i) a.data<int32_t>()[i] = 10 * i;
    Tensor c = a.clone();
    CHECK(c.shape() == a.shape());
    CHECK(c.dtype() == a.dtype());
    CHECK(c.raw() != a.raw());
    CHECK(c.storage() != a.storage());
    CHECK(std::memcmp(c.raw(), a.raw(), a.nbytes()) == 0);
    c.data<int32_t>()[1] = -7;
    CHECK(a.data<int32_t>()[1] == 10);
    const Tensor sc = a.slice_rows(1, 2).clone();  // clone of a view copies only the view
    CHECK(sc.numel() == 2);
    CHECK(sc.data<int32_t>()[0] == 20);

    CHECK_THROWS_WITH_AS(a.data<float>(), doctest::Contains("I32[2, 2]"), Error);
    CHECK_THROWS_AS(a.data<uint8_t>(), Error);
    CHECK_THROWS_AS(Tensor::empty({1}, DType::F16).data<float>(), Error);
    CHECK_NOTHROW(a.data<const int32_t>());
}

TEST_CASE("tensor: view_of checks the range fits the storage") {
    auto storage = Storage::allocate(64, Device::cpu());
    const Tensor v = Tensor::view_of(storage, 56, {2}, DType::F32);
    CHECK(static_cast<char*>(v.raw()) == static_cast<char*>(storage->data()) + 56);
    CHECK_NOTHROW(Tensor::view_of(storage, 64, {0}, DType::F32));
    CHECK_NOTHROW(Tensor::view_of(storage, 0, {4, 4}, DType::F32));
    CHECK_THROWS_WITH_AS(Tensor::view_of(storage, 60, {2}, DType::F32), doctest::Contains("does not fit"), Error);
    CHECK_THROWS_AS(Tensor::view_of(storage, 65, {0}, DType::F32), Error);
    CHECK_THROWS_AS(Tensor::view_of(storage, 0, {17}, DType::F32), Error);
    CHECK_THROWS_AS(Tensor::view_of(storage, std::numeric_limits<size_t>::max(), {1}, DType::U8), Error);
    CHECK_THROWS_AS(Tensor::view_of(std::shared_ptr<Storage>(), 0, {1}, DType::U8), Error);

    // A borrowed view keeps its owner alive.
    auto owner = std::make_shared<std::vector<float>>(std::vector<float>{1.0f, 2.0f, 3.0f});
    std::weak_ptr<std::vector<float>> watch = owner;
    Tensor b = Tensor::view_of(owner->data(), {3}, DType::F32, Device::cpu(), owner);
    owner.reset();
    CHECK_FALSE(watch.expired());
    CHECK(b.data<float>()[2] == 3.0f);
    b = Tensor();
    CHECK(watch.expired());
}

TEST_CASE("tensor: allocation_count counts exactly one per host Tensor::empty") {
    const uint64_t a0 = allocation_count();
    Tensor t = Tensor::empty({16}, DType::F32);
    CHECK(allocation_count() == a0 + 1);
    Tensor e = Tensor::empty({0}, DType::F16);
    CHECK(allocation_count() == a0 + 2);
    Tensor z = Tensor::zeros({3, 3}, DType::U8);
    CHECK(allocation_count() == a0 + 3);
    const Tensor r = t.reshape({4, 4});
    const Tensor s = r.slice_rows(1, 2);
    CHECK(allocation_count() == a0 + 3);  // views allocate nothing
    const Tensor c = t.clone();
    CHECK(allocation_count() == a0 + 4);
    const Tensor h = t.to(DType::F16);
    CHECK(allocation_count() == a0 + 5);
    CHECK(t.to(Device::cpu()).raw() == t.raw());  // already there: no copy
    CHECK(allocation_count() == a0 + 5);
    for (int i = 0; i < 10; ++i) (void)Tensor::empty({i, 2}, DType::I32);
    CHECK(allocation_count() == a0 + 15);
}

// ---------------------------------------------------------------- Device

TEST_CASE("tensor: Device parse, str and CUDA availability errors") {
    CHECK(Device::parse("cpu") == Device::cpu());
    CHECK(Device::parse("cuda") == Device::cuda(0));
    CHECK(Device::parse("cuda:3") == Device::cuda(3));
    CHECK(Device::parse("cuda:3").index == 3);
    CHECK(Device::parse("cuda:3").is_cuda());
    CHECK(Device::cpu().str() == "cpu");
    CHECK(Device::cuda(2).str() == "cuda:2");
    CHECK(Device::parse(Device::cuda(11).str()) == Device::cuda(11));
    CHECK_FALSE(Device::cpu() == Device::cuda(0));
    CHECK_FALSE(Device::cuda(0) == Device::cuda(1));
    CHECK_THROWS_WITH_AS(Device::parse("gpu"), doctest::Contains("'gpu'"), Error);
    CHECK_THROWS_WITH_AS(Device::parse("cuda:x"), doctest::Contains("cuda:x"), Error);
    CHECK_THROWS_AS(Device::parse("cuda:-1"), Error);
    CHECK_THROWS_AS(Device::parse("cuda:"), Error);
    CHECK_THROWS_AS(Device::parse("cuda:1x"), Error);
    CHECK_THROWS_AS(Device::parse("cuda:+1"), Error);
    CHECK_THROWS_AS(Device::parse("CPU"), Error);
    CHECK_THROWS_AS(Device::parse(""), Error);

    CHECK_NOTHROW(require_device(Device::cpu()));
    const int n = cuda_device_count();
    CHECK(n >= 0);
    if (!cuda_compiled()) CHECK(n == 0);
    if (n == 0) {
        std::string msg;
        try {
            require_device(Device::cuda());
        } catch (const Error& e) {
            msg = e.what();
        }
        INFO(msg);
        CHECK((msg.find("CUDA") != std::string::npos || msg.find("cuda") != std::string::npos));
        if (!cuda_compiled()) CHECK_THROWS_AS(copy_bytes(&msg, Device::cuda(), &msg, Device::cpu(), 1), Error);
    } else {
        MESSAGE(n << " CUDA GPU(s) present: checking only the out-of-range index");
        CHECK_NOTHROW(require_device(Device::cuda(0)));
    }
    // An index past the last GPU is missing on every machine.
    const uint64_t a0 = allocation_count();
    CHECK_THROWS_AS(require_device(Device::cuda(n)), Error);
    CHECK_THROWS_WITH_AS(Tensor::empty({4}, DType::F32, Device::cuda(n)), doctest::Contains("cuda:"), Error);
    CHECK_THROWS_AS(Tensor::zeros({4}, DType::F32, Device::cuda(n)), Error);
    CHECK_THROWS_AS(Tensor::empty({4}, DType::F32).to(Device::cuda(n)), Error);
    CHECK(allocation_count() == a0 + 1);  // only the host tensor of the last line was allocated
}
