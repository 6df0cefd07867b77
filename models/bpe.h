// The merge loop of byte-pair encoding, shared by stac's BPE tokenizers. A piece of n bytes starts
// as n one-byte parts; the tokenizer supplies rank(start, mid, end): the priority of merging the
// adjacent parts [start, mid) and [mid, end) (lower first; kNoBpeRank: never). Repeatedly the
// adjacent pair with the lowest rank is merged, the leftmost among equal ranks, until no pair
// has a rank. emit(start, end) then receives the final parts in order.
//
// The two tokenizers differ only in rank: tiktoken (GPT-2) ranks a pair by the bytes it would
// make, [start, end), ignoring mid; Hugging Face ranks the pair (left token, right token) by its
// line in merges. Two implementations of the same loop: a plain scan (rescans all pairs after each
// merge, O(n^2)), the reference, and a min-heap (O(n log n)) for long pieces; tests compare them.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

namespace stac {

inline constexpr uint32_t kNoBpeRank = std::numeric_limits<uint32_t>::max();

// Buffers reused across the pieces of one encode() call.
struct BpeScratch {
    std::vector<uint32_t> bound;  // scan: part boundaries 0 = b0 < b1 < ... < n
    std::vector<uint32_t> rank;   // scan: rank[j] = merging parts j and j + 1 (kNoBpeRank past the end)
    std::vector<uint32_t> next, prev;  // heap: the parts as a linked list by start byte
    struct Candidate {
        uint32_t rank, start, end;  // merge the part at start with its right neighbour, ending at end
    };
    std::vector<Candidate> heap;
};

// The plain loop (for GPT-2 this is tiktoken's _byte_pair_merge).
template <typename Rank, typename Emit>
void bpe_merge_scan(uint32_t n, Rank&& rank, BpeScratch& sc, Emit&& emit) {
    auto& b = sc.bound;
    auto& r = sc.rank;
    b.resize(n + 1);
    for (uint32_t i = 0; i <= n; ++i) b[i] = i;
    auto pair_rank = [&](size_t j) { return j + 2 < b.size() ? rank(b[j], b[j + 1], b[j + 2]) : kNoBpeRank; };
    r.resize(b.size());
    for (size_t j = 0; j < b.size(); ++j) r[j] = pair_rank(j);
    while (true) {
        size_t best = 0;
        for (size_t j = 1; j < r.size(); ++j)
            if (r[j] < r[best]) best = j;
        if (r.empty() || r[best] == kNoBpeRank) break;
        b.erase(b.begin() + std::ptrdiff_t(best) + 1);
        r.erase(r.begin() + std::ptrdiff_t(best) + 1);
        r[best] = pair_rank(best);
        if (best > 0) r[best - 1] = pair_rank(best - 1);
    }
    for (size_t j = 0; j + 1 < b.size(); ++j) emit(b[j], b[j + 1]);
}

// The same merges in the same order: a min-heap of (rank, start) picks the lowest rank and, among
// equal ranks, the leftmost, as the scan does. A merge keeps the left part's start, and parts only
// grow, so a candidate (start, end) is still the pair it was made for iff its left part is still
// there and that part and its right neighbour still end at end (then mid is unchanged too).
template <typename Rank, typename Emit>
void bpe_merge_heap(uint32_t n, Rank&& rank, BpeScratch& sc, Emit&& emit) {
    using Candidate = BpeScratch::Candidate;
    auto& next = sc.next;
    auto& prev = sc.prev;
    auto& heap = sc.heap;
    next.resize(n);
    prev.resize(n);
    heap.clear();
    constexpr uint32_t kGone = kNoBpeRank;  // next[] of a part merged into its left neighbour
    auto later = [](const Candidate& a, const Candidate& c) {
        return a.rank != c.rank ? a.rank > c.rank : a.start > c.start;
    };
    auto push = [&](uint32_t start, uint32_t mid, uint32_t end) {
        const uint32_t r = rank(start, mid, end);
        if (r == kNoBpeRank) return;
        heap.push_back({r, start, end});
        std::push_heap(heap.begin(), heap.end(), later);
    };
    for (uint32_t i = 0; i < n; ++i) {
        next[i] = i + 1;
        prev[i] = i - 1;  // wraps for i == 0; never read there
    }
    for (uint32_t i = 0; i + 1 < n; ++i) push(i, i + 1, i + 2);
    while (!heap.empty()) {
        std::pop_heap(heap.begin(), heap.end(), later);
        const Candidate c = heap.back();
        heap.pop_back();
        const uint32_t i = c.start;
        if (next[i] == kGone || next[i] >= n || next[next[i]] != c.end) continue;  // stale
        next[next[i]] = kGone;
        next[i] = c.end;
        if (c.end < n) prev[c.end] = i;
        if (i > 0) push(prev[i], i, c.end);
        if (c.end < n) push(i, c.end, next[c.end]);
    }
    for (uint32_t i = 0; i < n; i = next[i]) emit(i, next[i]);
}

}  // namespace stac
