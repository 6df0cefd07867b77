// Sessions and the KV cache (DESIGN §4): incremental = batched, multi-turn = one-shot over the same
// window, conversations side by side, reset/rewind, the window policy, and a decode loop that allocates nothing.
#include <doctest/doctest.h>

#include <atomic>
#include <cstdlib>

#include "core/allocator.h"
#include "models/generate.h"
#include "models/model_dir.h"
#include "models/session.h"
#include "tests/helpers.h"

// Count every heap allocation of the process while armed: glibc lets a program interpose malloc,
// so this sees operator new, Eigen's aligned_malloc and C allocations alike.
extern "C" void* __libc_malloc(size_t);
extern "C" void* __libc_calloc(size_t, size_t);
extern "C" void* __libc_realloc(void*, size_t);
namespace {
std::atomic<bool> g_armed{false};
std::atomic<uint64_t> g_heap_calls{0};
}  // namespace
extern "C" void* malloc(size_t n) {
    if (g_armed.load(std::memory_order_relaxed)) g_heap_calls.fetch_add(1, std::memory_order_relaxed);
    return __libc_malloc(n);
}
extern "C" void* calloc(size_t n, size_t s) {
    if (g_armed.load(std::memory_order_relaxed)) g_heap_calls.fetch_add(1, std::memory_order_relaxed);
    return __libc_calloc(n, s);
}
extern "C" void* realloc(void* p, size_t n) {
    if (g_armed.load(std::memory_order_relaxed)) g_heap_calls.fetch_add(1, std::memory_order_relaxed);
    return __libc_realloc(p, n);
}

using namespace stac;
using namespace stac::test;

namespace {

// Logits of the last position of one fresh batched forward over `window`.
std::vector<float> one_shot_last(const LanguageModel& m, const std::vector<int32_t>& window) {
    auto st = m.new_state();
    Tensor row = Tensor::empty({1, m.info().vocab_size}, DType::F32);
    m.forward(window, *st, LogitRows::Last, row);
    return {row.data<float>(), row.data<float>() + row.numel()};
}

float diff(std::span<const float> a, const std::vector<float>& b) {
    REQUIRE(a.size() == b.size());
    return max_abs_diff(a.data(), b.data(), b.size());
}

std::vector<int32_t> ids(std::initializer_list<int32_t> l) { return l; }

}  // namespace

TEST_CASE("session: multi-turn cached processing equals one forward over the same window") {
    const auto model = load_language_model(gpt2_fixture("tiny-gelu-f32"));
    Session s(*model);
    std::vector<int32_t> all;
    const std::vector<std::vector<int32_t>> turns = {{11, 22, 33, 44}, {5}, {600, 7, 8}, {9, 10, 999, 0, 1, 2}};
    for (const auto& t : turns) {
        const FeedResult r = s.feed(t);
        CHECK_FALSE(r.window_shifted());
        all.insert(all.end(), t.begin(), t.end());
        CHECK(s.position() == int64_t(all.size()));
        CHECK(std::vector<int32_t>(s.tokens().begin(), s.tokens().end()) == all);
        CHECK(diff(s.logits(), one_shot_last(*model, all)) <= 1e-5f);
    }
}

TEST_CASE("session: conversations side by side do not interfere") {
    const auto model = load_language_model(gpt2_fixture("tiny-relu-f16"));
    Conversations pool(*model);
    const std::vector<int32_t> a = {1, 2, 3, 4, 5, 6}, b = {100, 200, 300, 400, 500, 6};
    for (size_t i = 0; i < a.size(); i += 2) {  // interleave two-token chunks
        pool.get(7).feed(std::span<const int32_t>(a).subspan(i, 2));
        pool.get(42).feed(std::span<const int32_t>(b).subspan(i, 2));
    }
    CHECK(pool.size() == 2);
    CHECK(diff(pool.get(7).logits(), one_shot_last(*model, a)) <= 1e-5f);
    CHECK(diff(pool.get(42).logits(), one_shot_last(*model, b)) <= 1e-5f);
    // Same last token, different histories: the logits must differ.
    CHECK(diff(pool.get(7).logits(), one_shot_last(*model, b)) > 1e-3f);
    pool.reset(7);
    CHECK_FALSE(pool.contains(7));
    CHECK(pool.get(7).position() == 0);  // a fresh slot
    CHECK(pool.get(42).position() == 6);
}

TEST_CASE("session: reset and rewind are exact") {
    const auto model = load_language_model(gpt2_fixture("tiny-gelu-f32"));
    Session s(*model);
    s.feed(ids({1, 2, 3, 4, 5, 6, 7, 8, 9, 10}));
    s.rewind(6);
    CHECK(s.position() == 6);
    CHECK_THROWS_AS(s.logits(), Error);  // nothing fed since the rewind
    s.feed(ids({50, 60}));
    CHECK(diff(s.logits(), one_shot_last(*model, {1, 2, 3, 4, 5, 6, 50, 60})) <= 1e-5f);
    s.reset();
    CHECK(s.position() == 0);
    s.feed(ids({50, 60}));
    CHECK(diff(s.logits(), one_shot_last(*model, {50, 60})) <= 1e-5f);
    CHECK_THROWS_AS(s.rewind(3), Error);
}

TEST_CASE("session: the context window policy at and past n_positions") {
    const auto model = load_language_model(gpt2_fixture("tiny-relu-f16"));  // n_positions = 32
    std::vector<int32_t> hist(20), more(12), extra(5);
    for (int i = 0; i < 20; ++i) hist[size_t(i)] = 10 + i;
    for (int i = 0; i < 12; ++i) more[size_t(i)] = 100 + i;
    for (int i = 0; i < 5; ++i) extra[size_t(i)] = 300 + i;

    Session s(*model);
    CHECK(s.max_context() == 32);
    s.feed(hist);
    FeedResult r = s.feed(more);  // exactly 32: fits, nothing dropped
    CHECK_FALSE(r.window_shifted());
    CHECK(s.position() == 32);

    r = s.feed(extra);  // 37 > 32: drop the 5 oldest, re-encode 32 from position 0
    CHECK(r.dropped == 5);
    CHECK(r.reencoded == 32);
    std::vector<int32_t> window(hist.begin() + 5, hist.end());
    window.insert(window.end(), more.begin(), more.end());
    window.insert(window.end(), extra.begin(), extra.end());
    CHECK(std::vector<int32_t>(s.tokens().begin(), s.tokens().end()) == window);
    CHECK(diff(s.logits(), one_shot_last(*model, window)) <= 1e-5f);

    // A single chunk longer than the window keeps its newest tokens.
    std::vector<int32_t> big(45);
    for (int i = 0; i < 45; ++i) big[size_t(i)] = i;
    Session s2(*model);
    r = s2.feed(big);
    CHECK(r.dropped == 13);
    CHECK(std::vector<int32_t>(s2.tokens().begin(), s2.tokens().end()) == std::vector<int32_t>(big.begin() + 13, big.end()));
    CHECK(diff(s2.logits(), one_shot_last(*model, {big.begin() + 13, big.end()})) <= 1e-5f);

    // A smaller max_context, and decoding one token at a time past it.
    Session s3(*model, 8);
    s3.feed(std::span<const int32_t>(big).subspan(0, 8));
    r = s3.feed(ids({77}));
    CHECK(r.dropped == 1);
    CHECK(diff(s3.logits(), one_shot_last(*model, {1, 2, 3, 4, 5, 6, 7, 77})) <= 1e-5f);
    CHECK_THROWS_AS(Session(*model, 33), Error);
}

TEST_CASE("session: bad ids are refused and leave the session as it was") {
    const auto model = load_language_model(gpt2_fixture("tiny-relu-f16"));
    Session s(*model);
    s.feed(ids({1, 2, 3}));
    const std::vector<float> before(s.logits().begin(), s.logits().end());
    CHECK_THROWS_WITH_AS(s.feed(ids({4, 9999})), doctest::Contains("token id 9999"), Error);
    CHECK_THROWS_AS(s.feed(std::vector<int32_t>{}), Error);
    CHECK(s.position() == 3);
    CHECK(diff(s.logits(), before) == 0.0f);
}

TEST_CASE("session: the decode loop allocates nothing") {
    const auto model = load_language_model(gpt2_fixture("tiny-gelu-f32"));
    Session s(*model);
    SamplingOptions so;
    so.temperature = 0.8f;
    so.top_k = 20;
    so.top_p = 0.9f;
    so.repetition_penalty = 1.2f;
    Sampler sampler(so, model->info().vocab_size);
    s.feed(ids({1, 2, 3, 4}));
    // Warm up: the first single-token step sizes the scratch buffers.
    int32_t one[1] = {sampler.sample(s.logits(), s.tokens())};
    s.feed(one);
    const uint64_t stac_before = allocation_count();
    g_heap_calls = 0;
    g_armed = true;
    for (int i = 0; i < 40; ++i) {
        one[0] = sampler.sample(s.logits(), s.tokens());
        s.feed(one);
    }
    g_armed = false;
    CHECK(g_heap_calls.load() == 0);
    CHECK(allocation_count() == stac_before);
    CHECK(s.position() == 45);
    // The counter is live: an allocation while armed is seen.
    g_armed = true;
    std::vector<int>* v = new std::vector<int>(10);
    g_armed = false;
    delete v;
    CHECK(g_heap_calls.load() >= 1);
}
