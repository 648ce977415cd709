#include "engine/kv_block_manager.h"

#include <gtest/gtest.h>

#include <numeric>
#include <random>
#include <set>

namespace pagoda {
namespace {

using Blocks = std::vector<int32_t>;

std::vector<int32_t> iota_tokens(int n, int first) {
  std::vector<int32_t> t(n);
  std::iota(t.begin(), t.end(), first);
  return t;
}

// Allocates room for all of tokens (reusing the cached prefix) and marks them computed.
void compute_all(KvBlockManager& m, KvSequence& s, const std::vector<int32_t>& tokens) {
  const PrefixMatch match = m.match_prefix(&s, tokens);
  ASSERT_TRUE(m.allocate(&s, static_cast<int>(tokens.size()), match));
  m.cache_computed(&s, tokens, static_cast<int>(tokens.size()));
  m.check_invariants();
}

TEST(KvBlockManagerTest, AllOrNothingAndGrowth) {
  KvBlockManager m(4, 4, /*enable_prefix_caching=*/false);
  KvSequence a, b;
  ASSERT_TRUE(m.allocate(&a, 9));
  EXPECT_EQ(a.blocks, (Blocks{0, 1, 2}));
  EXPECT_FALSE(m.allocate(&b, 8));  // 2 blocks needed, 1 free: nothing taken
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(m.num_free(), 1);
  ASSERT_TRUE(m.allocate(&a, 12));  // 9 -> 12 tokens: still 3 blocks
  EXPECT_EQ(a.blocks.size(), 3u);
  ASSERT_TRUE(m.allocate(&a, 13));
  EXPECT_EQ(a.blocks, (Blocks{0, 1, 2, 3}));
  EXPECT_DOUBLE_EQ(m.usage(), 1.0);
  m.check_invariants();
  m.free(&a);
  EXPECT_TRUE(a.blocks.empty());
  EXPECT_EQ(m.num_free(), 4);
  EXPECT_EQ(m.num_evictable(), 0);  // caching off: nothing stays cached
  ASSERT_TRUE(m.allocate(&b, 8));
  EXPECT_EQ(b.blocks, (Blocks{0, 1}));  // the head block, freed last, is reused first
  EXPECT_DOUBLE_EQ(m.usage(), 0.5);
  m.check_invariants();
}

TEST(KvBlockManagerTest, SharedPrefixTakesReferences) {
  KvBlockManager m(8, 4, true);
  const auto p = iota_tokens(10, 100);
  KvSequence a;
  compute_all(m, a, p);  // blocks 0, 1 full and cached; block 2 holds 2 tokens
  EXPECT_TRUE(m.is_cached(a.blocks[0]));
  EXPECT_TRUE(m.is_cached(a.blocks[1]));
  EXPECT_FALSE(m.is_cached(a.blocks[2]));

  auto q = std::vector<int32_t>(p.begin(), p.begin() + 8);
  q.insert(q.end(), {7, 7, 7, 7, 7});  // 13 tokens, the first 8 shared
  KvSequence b;
  const PrefixMatch match = m.match_prefix(&b, q);
  EXPECT_EQ(match.blocks, (Blocks{a.blocks[0], a.blocks[1]}));
  ASSERT_TRUE(m.allocate(&b, 13, match));
  EXPECT_EQ(b.blocks.size(), 4u);
  EXPECT_EQ(m.ref_count(a.blocks[0]), 2);
  EXPECT_EQ(m.ref_count(a.blocks[1]), 2);
  EXPECT_EQ(m.ref_count(b.blocks[2]), 1);
  EXPECT_EQ(m.prefix_queries(), 10 + 13);  // a's query missed, b's hit 8 tokens
  EXPECT_EQ(m.prefix_hits(), 8);
  m.check_invariants();
  m.free(&a);
  EXPECT_EQ(m.ref_count(b.blocks[0]), 1);
  EXPECT_EQ(m.num_evictable(), 0);  // still referenced by b
  m.free(&b);
  EXPECT_EQ(m.num_free(), 8);
  m.check_invariants();
}

// At least the last token is computed: hits <= floor((n - 1) / block_size) blocks.
TEST(KvBlockManagerTest, CapRuleLeavesTheLastTokenToCompute) {
  KvBlockManager m(8, 4, true);
  const auto p = iota_tokens(8, 0);
  KvSequence a;
  compute_all(m, a, p);
  m.free(&a);
  const struct {
    int len;
    size_t hit_blocks;
  } cases[] = {{8, 1}, {9, 2}, {5, 1}, {4, 0}, {1, 0}};
  for (const auto& c : cases) {
    std::vector<int32_t> q = iota_tokens(c.len, 0);
    KvSequence s;
    EXPECT_EQ(m.match_prefix(&s, q).blocks.size(), c.hit_blocks) << "prompt of " << c.len;
  }
}

// Freed cached blocks are evicted least recently freed first, each sequence from its tail.
TEST(KvBlockManagerTest, LruEvictionOrder) {
  KvBlockManager m(6, 2, true);
  KvSequence a, b;
  compute_all(m, a, {1, 2, 3, 4});  // blocks 0, 1
  compute_all(m, b, {5, 6, 7, 8});  // blocks 2, 3
  m.free(&a);                       // LRU: 1 0
  m.free(&b);                       // LRU: 1 0 3 2
  EXPECT_EQ(m.num_evictable(), 4);
  EXPECT_EQ(m.num_free(), 6);
  KvSequence c;
  ASSERT_TRUE(m.allocate(&c, 6));  // 2 never-cached blocks first, then evicts block 1
  EXPECT_EQ(c.blocks, (Blocks{4, 5, 1}));
  EXPECT_EQ(m.evictions(), 1);
  m.check_invariants();
  // a's head block survives (a chain is evicted from its tail); its second block is gone.
  KvSequence a2;
  EXPECT_EQ(m.match_prefix(&a2, Blocks{1, 2, 3, 4, 9}).blocks, (Blocks{0}));
  ASSERT_TRUE(m.allocate(&c, 12));  // three more: 0, 3, 2 in LRU order
  EXPECT_EQ(c.blocks, (Blocks{4, 5, 1, 0, 3, 2}));
  EXPECT_EQ(m.evictions(), 4);
  KvSequence b2;
  EXPECT_TRUE(m.match_prefix(&b2, Blocks{5, 6, 7, 8, 9}).blocks.empty());
  m.check_invariants();
}

// A hit on an evictable block takes it out of the LRU list, so allocation cannot evict it,
// and the pool does not count it twice.
TEST(KvBlockManagerTest, HitOnEvictableBlockIsNotEvictedOrDoubleCounted) {
  KvBlockManager m(3, 2, true);
  KvSequence a;
  compute_all(m, a, {1, 2, 3, 4});  // blocks 0, 1 cached
  m.free(&a);                       // evictable 0, 1; free 2
  ASSERT_EQ(m.num_free(), 3);

  KvSequence b;
  const std::vector<int32_t> q = {1, 2, 3, 4, 5, 6, 7};  // 4 blocks: 2 hits + 2 fresh > 3
  const PrefixMatch match = m.match_prefix(&b, q);
  ASSERT_EQ(match.blocks, (Blocks{0, 1}));
  EXPECT_FALSE(m.can_allocate(b, 7, match));
  EXPECT_FALSE(m.allocate(&b, 7, match));
  EXPECT_TRUE(b.blocks.empty());
  EXPECT_EQ(m.num_evictable(), 2);   // nothing changed
  EXPECT_EQ(m.prefix_queries(), 4);  // a failed allocation counts no query
  m.check_invariants();

  ASSERT_TRUE(m.allocate(&b, 6, match));  // 2 hits + 1 fresh
  EXPECT_EQ(b.blocks, (Blocks{0, 1, 2}));
  EXPECT_EQ(m.num_evictable(), 0);
  EXPECT_EQ(m.ref_count(0), 1);
  EXPECT_EQ(m.evictions(), 0);
  m.check_invariants();
}

TEST(KvBlockManagerTest, CacheSaltPreventsSharing) {
  KvBlockManager m(8, 2, true);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};
  KvSequence a(std::string("tenant-a"));
  compute_all(m, a, p);
  KvSequence other(std::string("tenant-b")), none, same(std::string("tenant-a"));
  EXPECT_TRUE(m.match_prefix(&other, p).blocks.empty());
  EXPECT_TRUE(m.match_prefix(&none, p).blocks.empty());
  EXPECT_EQ(m.match_prefix(&same, p).blocks.size(), 2u);
  EXPECT_NE(hash_cache_salt("tenant-a"), hash_cache_salt("tenant-b"));
  EXPECT_NE(hash_cache_salt(""), hash_cache_salt("tenant-a"));
}

// Two sequences compute the same prefix at once: the first to finish caches it; the other's
// blocks stay private and return to the free list, not the LRU.
TEST(KvBlockManagerTest, DuplicatePrefixComputedTwiceStaysPrivate) {
  KvBlockManager m(8, 2, true);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};
  KvSequence a, b;
  ASSERT_TRUE(m.allocate(&a, 5, m.match_prefix(&a, p)));
  ASSERT_TRUE(m.allocate(&b, 5, m.match_prefix(&b, p)));
  m.cache_computed(&a, p, 5);
  m.cache_computed(&b, p, 5);
  EXPECT_TRUE(m.is_cached(a.blocks[0]));
  EXPECT_FALSE(m.is_cached(b.blocks[0]));
  m.check_invariants();
  m.free(&b);
  EXPECT_EQ(m.num_evictable(), 0);
  m.free(&a);
  EXPECT_EQ(m.num_evictable(), 2);
  m.check_invariants();
}

TEST(KvBlockManagerTest, DisabledCachingNeverMatches) {
  KvBlockManager m(8, 2, false);
  const std::vector<int32_t> p = {1, 2, 3, 4, 5};
  KvSequence a, b;
  compute_all(m, a, p);
  EXPECT_FALSE(m.is_cached(a.blocks[0]));
  m.free(&a);
  EXPECT_TRUE(m.match_prefix(&b, p).blocks.empty());
  EXPECT_EQ(m.num_evictable(), 0);
  EXPECT_EQ(m.prefix_queries(), 0);
  m.check_invariants();
}

TEST(KvBlockManagerTest, ChainHashDependsOnParentAndEveryToken) {
  const std::vector<int32_t> t = {1, 2, 3, 4};
  std::set<uint64_t> seen = {hash_kv_block(0, t), hash_kv_block(1, t)};
  for (size_t i = 0; i < t.size(); ++i) {
    auto u = t;
    u[i] += 1;
    seen.insert(hash_kv_block(0, u));
  }
  seen.insert(hash_kv_block(0, std::vector<int32_t>{1, 2, 3}));
  seen.insert(hash_kv_block(0, std::vector<int32_t>{2, 1, 3, 4}));
  EXPECT_EQ(seen.size(), 8u);
  EXPECT_EQ(hash_kv_block(7, t), hash_kv_block(7, t));
}

// With every hash equal, the hash only finds candidates: tokens, salt and parent decide.
TEST(KvBlockManagerTest, CollidingHashesNeverGiveWrongHits) {
  KvBlockManager m(16, 2, true);
  m.set_hash_mask_for_testing(0);
  KvSequence a;
  compute_all(m, a, {1, 2, 3, 4, 5, 6, 7});  // block 0 cached; block 1 collides with it
  EXPECT_TRUE(m.is_cached(a.blocks[0]));
  EXPECT_FALSE(m.is_cached(a.blocks[1]));
  KvSequence same, other, salted(std::string("s")), second;
  EXPECT_EQ(m.match_prefix(&same, Blocks{1, 2, 3, 4, 5, 6, 7}).blocks, (Blocks{a.blocks[0]}));
  EXPECT_TRUE(m.match_prefix(&other, Blocks{1, 9, 3, 4, 5}).blocks.empty());
  EXPECT_TRUE(m.match_prefix(&salted, Blocks{1, 2, 3, 4, 5}).blocks.empty());
  // {3, 4} as a first block equals a's second block's tokens, but not its place in a chain.
  EXPECT_TRUE(m.match_prefix(&second, Blocks{3, 4, 5}).blocks.empty());
  m.check_invariants();
}

// The case a parent-hash check would get wrong. S computes P+C alongside A, which caches P
// first; S adopts A's block as its parent and caches its own C block under it. A's P block is
// evicted while S still holds C; then B caches Q, a different first block with the same (1-bit)
// hash. Q+C must not hit S's C block: it was computed after P, not Q.
TEST(KvBlockManagerTest, ChildOfAnEvictedParentIsNotReused) {
  constexpr uint64_t kMask = 1;
  const uint64_t root = hash_cache_salt("");
  auto h = [&](uint64_t parent, const Blocks& t) { return hash_kv_block(parent, t) & kMask; };
  const Blocks pb = {1, 0};
  Blocks qb, cb;  // find Q, C with h(P) == h(Q) and h(h(P), C) != h(P)
  for (int32_t x = 0; x < 64 && qb.empty(); ++x)
    if (h(root, Blocks{2, x}) == h(root, pb)) qb = {2, x};
  for (int32_t x = 0; x < 64 && cb.empty(); ++x)
    if (h(h(root, pb), Blocks{3, x}) != h(root, pb)) cb = {3, x};
  ASSERT_FALSE(qb.empty());
  ASSERT_FALSE(cb.empty());

  KvBlockManager m(5, 2, true);
  m.set_hash_mask_for_testing(kMask);
  const Blocks a_tokens = {pb[0], pb[1], 0};
  const Blocks s_tokens = {pb[0], pb[1], cb[0], cb[1], 0};
  KvSequence a, s;
  ASSERT_TRUE(m.allocate(&a, 3, m.match_prefix(&a, a_tokens)));
  ASSERT_TRUE(m.allocate(&s, 5, m.match_prefix(&s, s_tokens)));
  m.cache_computed(&a, a_tokens, 3);
  m.cache_computed(&s, s_tokens, 5);
  ASSERT_TRUE(m.is_cached(a.blocks[0]));
  ASSERT_FALSE(m.is_cached(s.blocks[0]));  // the twin of a's block
  ASSERT_TRUE(m.is_cached(s.blocks[1]));   // chained to a's block
  const int32_t p_block = a.blocks[0];
  m.free(&a);
  KvSequence fill1, fill2;
  ASSERT_TRUE(m.allocate(&fill1, 2));  // a's second block
  ASSERT_TRUE(m.allocate(&fill2, 2));  // evicts a's P block
  ASSERT_EQ(fill2.blocks, (Blocks{p_block}));
  m.free(&fill1);
  m.free(&fill2);
  KvSequence b;
  compute_all(m, b, {qb[0], qb[1], 0});
  ASSERT_EQ(b.blocks[0], p_block);  // even the same block id: only the epoch tells them apart
  ASSERT_TRUE(m.is_cached(b.blocks[0]));

  KvSequence d;
  EXPECT_EQ(m.match_prefix(&d, Blocks{qb[0], qb[1], cb[0], cb[1], 0}).blocks,
            (Blocks{b.blocks[0]}));
  KvSequence e;  // S's own tokens: P is gone, so nothing hits
  EXPECT_TRUE(m.match_prefix(&e, s_tokens).blocks.empty());
  m.check_invariants();
}

TEST(KvBlockManagerDeathTest, DoubleFreeIsCaught) {
  KvBlockManager m(4, 2, true);
  KvSequence a;
  ASSERT_TRUE(m.allocate(&a, 3));
  KvSequence copy = a;
  m.free(&a);
  EXPECT_DEATH(m.free(&copy), "CHECK failed");
}

// Random traffic straight on the manager: allocations, growth, computation, frees.
TEST(KvBlockManagerTest, RandomTrafficKeepsInvariants) {
  std::mt19937 rng(11);
  KvBlockManager m(24, 4, true);
  struct Seq {
    KvSequence kv;
    std::vector<int32_t> tokens;
    int computed = 0;
  };
  std::vector<Seq> seqs(6);
  for (int step = 0; step < 4000; ++step) {
    Seq& s = seqs[rng() % seqs.size()];
    const int op = static_cast<int>(rng() % 4);
    if (op == 0 || s.tokens.empty()) {
      m.free(&s.kv);
      s = Seq{KvSequence(rng() % 4 == 0 ? std::string("salt") : std::string()), {}, 0};
      const int len = 1 + static_cast<int>(rng() % 20);
      for (int i = 0; i < len; ++i) s.tokens.push_back(static_cast<int32_t>(i < 8 ? i : rng() % 3));
      const PrefixMatch match = m.match_prefix(&s.kv, s.tokens);
      if (m.allocate(&s.kv, static_cast<int>(match.blocks.size()) * 4 + 1, match))
        s.computed = static_cast<int>(match.blocks.size()) * 4;
      else
        s.tokens.clear();
    } else if (s.computed < static_cast<int>(s.tokens.size())) {
      const int n = std::min<int>(1 + rng() % 6, static_cast<int>(s.tokens.size()) - s.computed);
      if (m.allocate(&s.kv, s.computed + n)) {
        s.computed += n;
        m.cache_computed(&s.kv, s.tokens, s.computed);
        if (s.computed == static_cast<int>(s.tokens.size()))
          s.tokens.push_back(static_cast<int32_t>(rng() % 3));
      }
    }
    m.check_invariants();
  }
  for (Seq& s : seqs) m.free(&s.kv);
  EXPECT_EQ(m.num_free(), 24);
  for (int b = 0; b < 24; ++b) EXPECT_EQ(m.ref_count(b), 0);
  EXPECT_GT(m.prefix_hits(), 0);
  EXPECT_GT(m.evictions(), 0);
  m.check_invariants();
}

}  // namespace
}  // namespace pagoda
