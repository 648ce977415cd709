#include "engine/kv_block_manager.h"

#include <algorithm>
#include <cstring>

#include "core/check.h"

namespace pagoda {
namespace {

// xxHash64's primes and rounds: a fast, well-mixed 64-bit hash over 32-bit token ids.
constexpr uint64_t kP1 = 0x9E3779B185EBCA87ull;
constexpr uint64_t kP2 = 0xC2B2AE3D27D4EB4Full;
constexpr uint64_t kP3 = 0x165667B19E3779F9ull;
constexpr uint64_t kP4 = 0x85EBCA77C2B2AE63ull;
constexpr uint64_t kSaltDomain = 0x70A60DA5A17ull;  // keeps salt hashes apart from block hashes

uint64_t rotl(uint64_t x, int r) {
  return (x << r) | (x >> (64 - r));
}

uint64_t avalanche(uint64_t h) {
  h ^= h >> 33;
  h *= kP2;
  h ^= h >> 29;
  h *= kP3;
  h ^= h >> 32;
  return h;
}

}  // namespace

uint64_t hash_kv_block(uint64_t parent_hash, std::span<const int32_t> tokens) {
  uint64_t h = parent_hash * kP1 + kP4;
  for (int32_t t : tokens) {
    uint64_t k = static_cast<uint64_t>(static_cast<uint32_t>(t)) * kP2;
    k = rotl(k, 31) * kP1;
    h ^= k;
    h = rotl(h, 27) * kP1 + kP4;
  }
  h ^= static_cast<uint64_t>(tokens.size());
  return avalanche(h);
}

uint64_t hash_cache_salt(const std::string& salt) {
  uint64_t h = 0xcbf29ce484222325ull;  // FNV-1a 64
  for (unsigned char c : salt) {
    h ^= c;
    h *= 0x100000001b3ull;
  }
  return avalanche(h ^ kSaltDomain);
}

KvSequence::KvSequence(std::string cache_salt)
    : salt(std::move(cache_salt)), root_hash(hash_cache_salt(salt)) {}

KvBlockManager::KvBlockManager(int num_blocks, int block_size, bool enable_prefix_caching)
    : block_size_(block_size),
      prefix_caching_(enable_prefix_caching),
      ref_(num_blocks, 0),
      meta_(num_blocks),
      lru_prev_(num_blocks + 1, num_blocks),
      lru_next_(num_blocks + 1, num_blocks) {
  PAGODA_CHECK_GT(num_blocks, 0);
  PAGODA_CHECK_GT(block_size, 0);
  if (prefix_caching_) block_tokens_.assign(static_cast<size_t>(num_blocks) * block_size, 0);
  free_.reserve(num_blocks);
  // Lowest ids on top of the stack, so a fresh pool hands out 0, 1, 2, ...
  for (int b = num_blocks - 1; b >= 0; --b) free_.push_back(b);
}

double KvBlockManager::usage() const {
  return 1.0 - static_cast<double>(num_free()) / static_cast<double>(num_blocks());
}

void KvBlockManager::ensure_hashes(KvSequence* seq, std::span<const int32_t> tokens,
                                   int num_full) const {
  PAGODA_CHECK_LE(static_cast<size_t>(num_full) * block_size_, tokens.size());
  auto& hashes = seq->block_hashes;
  while (static_cast<int>(hashes.size()) < num_full) {
    const size_t i = hashes.size();
    const uint64_t parent = i == 0 ? seq->root_hash : hashes[i - 1];
    hashes.push_back(hash_kv_block(parent, tokens.subspan(i * block_size_, block_size_)) &
                     hash_mask_);
  }
}

bool KvBlockManager::entry_matches(int32_t block, KvSequence::CacheRef parent,
                                   std::span<const int32_t> tokens, const KvSequence& seq,
                                   bool first) const {
  const BlockMeta& m = meta_[block];
  if (!m.cached) return false;
  if (first) {
    if (m.parent_block != -1 || m.salt != seq.salt) return false;
  } else if (m.parent_block != parent.block || m.parent_epoch != parent.epoch) {
    return false;
  }
  return std::memcmp(&block_tokens_[static_cast<size_t>(block) * block_size_], tokens.data(),
                     sizeof(int32_t) * block_size_) == 0;
}

PrefixMatch KvBlockManager::match_prefix(KvSequence* seq, std::span<const int32_t> tokens) {
  PrefixMatch m;
  if (!prefix_caching_ || !seq->blocks.empty() || tokens.empty()) return m;
  m.num_query_tokens = static_cast<int>(tokens.size());
  const int max_blocks = static_cast<int>((tokens.size() - 1) / block_size_);
  ensure_hashes(seq, tokens, max_blocks);
  KvSequence::CacheRef parent;
  for (int i = 0; i < max_blocks; ++i) {
    const auto it = cache_.find(seq->block_hashes[i]);
    if (it == cache_.end()) break;
    const int32_t b = it->second;
    if (!entry_matches(b, parent, tokens.subspan(i * block_size_, block_size_), *seq, i == 0))
      break;  // a hash collision: a miss
    m.blocks.push_back(b);
    parent = {b, meta_[b].epoch};
  }
  return m;
}

int KvBlockManager::num_evictable_hits(const PrefixMatch& prefix) const {
  int n = 0;
  for (int32_t b : prefix.blocks) n += ref_[b] == 0;
  return n;
}

bool KvBlockManager::can_allocate(const KvSequence& seq, int num_tokens,
                                  const PrefixMatch& prefix) const {
  const bool fresh = seq.blocks.empty();
  const int have = static_cast<int>(fresh ? prefix.blocks.size() : seq.blocks.size());
  const int need = std::max(0, blocks_for(num_tokens) - have);
  // Evictable blocks this sequence is about to reuse cannot also serve as fresh blocks.
  const int available = num_free() - (fresh ? num_evictable_hits(prefix) : 0);
  return need <= available;
}

bool KvBlockManager::allocate(KvSequence* seq, int num_tokens, const PrefixMatch& prefix) {
  PAGODA_CHECK_GE(num_tokens, 0);
  const bool fresh = seq->blocks.empty();
  PAGODA_CHECK(fresh || prefix.blocks.empty());
  if (!can_allocate(*seq, num_tokens, prefix)) return false;
  if (fresh) {
    PAGODA_CHECK_LE(prefix.blocks.size(), seq->block_hashes.size());
    for (int32_t b : prefix.blocks) {
      PAGODA_CHECK(meta_[b].cached);
      if (ref_[b] == 0) lru_remove(b);
      ++ref_[b];
      seq->blocks.push_back(b);
    }
    seq->committed.clear();
    for (int32_t b : prefix.blocks) seq->committed.push_back({b, meta_[b].epoch});
    queries_ += prefix.num_query_tokens;
    hits_ += static_cast<int64_t>(prefix.blocks.size()) * block_size_;
  }
  const int need = blocks_for(num_tokens) - static_cast<int>(seq->blocks.size());
  for (int i = 0; i < need; ++i) seq->blocks.push_back(take_block());
  return true;
}

int32_t KvBlockManager::take_block() {
  int32_t b;
  if (!free_.empty()) {
    b = free_.back();
    free_.pop_back();
  } else {
    b = lru_next_[num_blocks()];  // least recently freed
    PAGODA_CHECK_NE(b, num_blocks());
    lru_remove(b);
    BlockMeta& m = meta_[b];
    PAGODA_CHECK_EQ(cache_.erase(m.hash), 1u);
    m = BlockMeta{};
    ++evictions_;
  }
  PAGODA_CHECK_EQ(ref_[b], 0);
  ref_[b] = 1;
  return b;
}

void KvBlockManager::cache_computed(KvSequence* seq, std::span<const int32_t> tokens,
                                    int num_computed) {
  if (!prefix_caching_) return;
  PAGODA_CHECK_LE(static_cast<size_t>(num_computed), tokens.size());
  const int full = num_computed / block_size_;
  PAGODA_CHECK_LE(full, static_cast<int>(seq->blocks.size()));
  auto& committed = seq->committed;
  if (full <= static_cast<int>(committed.size())) return;
  ensure_hashes(seq, tokens, full);
  for (int i = static_cast<int>(committed.size()); i < full; ++i) {
    const int32_t b = seq->blocks[i];
    PAGODA_CHECK(!meta_[b].cached);  // a fresh block of this sequence
    PAGODA_CHECK_EQ(ref_[b], 1);     // nobody else can see it yet
    const KvSequence::CacheRef parent = i == 0 ? KvSequence::CacheRef{} : committed[i - 1];
    const auto block_tokens = tokens.subspan(static_cast<size_t>(i) * block_size_, block_size_);
    KvSequence::CacheRef ref;  // none: the chain broke at a collision
    if (i == 0 || parent.block >= 0) {
      const auto [it, inserted] = cache_.emplace(seq->block_hashes[i], b);
      if (inserted) {
        BlockMeta& m = meta_[b];
        m.cached = true;
        m.hash = seq->block_hashes[i];
        m.epoch = next_epoch_++;
        m.parent_block = parent.block;
        m.parent_epoch = parent.epoch;
        if (i == 0) m.salt = seq->salt;
        std::memcpy(&block_tokens_[static_cast<size_t>(b) * block_size_], block_tokens.data(),
                    sizeof(int32_t) * block_size_);
        ref = {b, m.epoch};
      } else if (entry_matches(it->second, parent, block_tokens, *seq, i == 0)) {
        ref = {it->second, meta_[it->second].epoch};  // a twin computed by another sequence
      }
    }
    committed.push_back(ref);
  }
}

void KvBlockManager::free(KvSequence* seq) {
  for (auto it = seq->blocks.rbegin(); it != seq->blocks.rend(); ++it) {
    const int32_t b = *it;
    PAGODA_CHECK_GE(b, 0);
    PAGODA_CHECK_LT(b, num_blocks());
    PAGODA_CHECK_GT(ref_[b], 0);  // a double free
    if (--ref_[b] > 0) continue;
    if (meta_[b].cached) {
      lru_push_back(b);
    } else {
      free_.push_back(b);
    }
  }
  seq->blocks.clear();
  seq->committed.clear();
}

void KvBlockManager::lru_remove(int32_t b) {
  const int32_t p = lru_prev_[b], n = lru_next_[b];
  lru_next_[p] = n;
  lru_prev_[n] = p;
  lru_prev_[b] = lru_next_[b] = num_blocks();
  --num_evictable_;
}

void KvBlockManager::lru_push_back(int32_t b) {
  const int32_t s = num_blocks();
  const int32_t last = lru_prev_[s];
  lru_next_[last] = b;
  lru_prev_[b] = last;
  lru_next_[b] = s;
  lru_prev_[s] = b;
  ++num_evictable_;
}

void KvBlockManager::check_invariants() const {
  const int n = num_blocks();
  std::vector<uint8_t> where(n, 0);  // 1: free list, 2: LRU list
  int in_use = 0, cached = 0;
  for (int b = 0; b < n; ++b) {
    PAGODA_CHECK_GE(ref_[b], 0);
    in_use += ref_[b] > 0;
    cached += meta_[b].cached;
  }
  for (int32_t b : free_) {
    PAGODA_CHECK_GE(b, 0);
    PAGODA_CHECK_LT(b, n);
    PAGODA_CHECK_EQ(static_cast<int>(where[b]), 0);  // listed twice
    where[b] = 1;
    PAGODA_CHECK_EQ(ref_[b], 0);  // free and referenced
    PAGODA_CHECK(!meta_[b].cached);
  }
  int walked = 0;
  for (int32_t b = lru_next_[n]; b != n; b = lru_next_[b]) {
    PAGODA_CHECK_GE(b, 0);
    PAGODA_CHECK_LT(b, n);
    PAGODA_CHECK_EQ(static_cast<int>(where[b]), 0);  // in both lists, or a cycle
    where[b] = 2;
    PAGODA_CHECK_EQ(ref_[b], 0);  // evictable and referenced
    PAGODA_CHECK(meta_[b].cached);
    PAGODA_CHECK_EQ(lru_next_[lru_prev_[b]], b);
    ++walked;
  }
  PAGODA_CHECK_EQ(walked, num_evictable_);
  PAGODA_CHECK_EQ(static_cast<int>(free_.size()) + num_evictable_ + in_use, n);
  PAGODA_CHECK_EQ(static_cast<size_t>(cached), cache_.size());
  for (const auto& [h, b] : cache_) {
    PAGODA_CHECK_GE(b, 0);
    PAGODA_CHECK_LT(b, n);
    PAGODA_CHECK(meta_[b].cached);
    PAGODA_CHECK_EQ(meta_[b].hash, h);
    PAGODA_CHECK_GT(meta_[b].epoch, 0u);
    PAGODA_CHECK_LT(meta_[b].epoch, next_epoch_);
  }
  if (!prefix_caching_) PAGODA_CHECK_EQ(cached, 0);
}

}  // namespace pagoda
