// KvBlockManager: the paged KV cache's block pool with reference counts and prefix caching.
// Pure logic over integers (block ids, token ids); no model, no threads, no device memory.
//
// The pool has `num_blocks` blocks of `block_size` token slots. A sequence (one request's view
// of the cache, a KvSequence the caller owns) holds an ordered list of blocks: its block table.
// Token position p of a sequence lives in slot blocks[p / block_size] * block_size +
// p % block_size.
//
// Prefix caching (optional). A FULL block is identified by a 64-bit chain hash
//   hash(block i) = H(hash(block i - 1), its block_size token ids),  hash(block -1) = H(salt),
// so equal prefixes give equal hashes, and a cache salt (a tenant key, say) keeps sequences with
// different salts from ever sharing. A collision must never give a wrong hit, so the hash only
// finds a candidate: every cache entry also keeps its token ids, (for a first block) the salt,
// and its parent as (block id, caching epoch) — a block gets a new epoch each time it enters
// the cache — and a lookup walks the chain from block 0 comparing all of these. By induction a
// hit holds exactly the sequence's tokens before it; a collision only costs a miss.
// A block enters the cache once computation has filled it (cache_computed()). A new
// sequence reuses the longest chain of cached blocks at the start of its tokens, capped at
// floor((num_tokens - 1) / block_size) blocks so that at least its last token is computed (the
// vLLM V1 rule; it also means a shared block is never written: every write lands after the
// shared prefix). When a block's reference count drops to zero it goes to
//   - the free list, if it is not cached, or
//   - the back of an LRU list of evictable blocks, if it is cached: its contents stay reusable
//     by hash until its memory is needed.
// Allocation takes free-list blocks first, then evicts the least recently freed cached block
// (dropping its hash entry). A hit on an evictable block takes it back out of the LRU list.
// A sequence frees its blocks last-first, so the LRU evicts a chain from its tail and the
// shared heads of chains live longest.
//
// All operations are O(1) per block (hashing is O(block_size) per full block, once per
// sequence). Nothing here is thread-safe: one engine thread owns the manager.
#pragma once

#include <cstdint>
#include <span>
#include <string>
#include <unordered_map>
#include <vector>

namespace pagoda {

// One request's blocks and its prefix-cache bookkeeping. Owned by the caller (the scheduler),
// changed only through KvBlockManager. Keep it alive while it holds blocks.
struct KvSequence {
  KvSequence() : KvSequence(std::string()) {}
  explicit KvSequence(std::string cache_salt);

  std::vector<int32_t> blocks;  // the block table, in token order
  // Chain hash of each full block of the known tokens computed so far (grows lazily; valid
  // across preemption because a sequence's tokens only ever get appended).
  std::vector<uint64_t> block_hashes;
  // For each leading block already matched in or offered to the prefix cache: the cache entry
  // that holds its contents (its own block, or an equal one cached first by another sequence),
  // or block -1 when there is none (a hash collision on the way).
  struct CacheRef {
    int32_t block = -1;
    uint64_t epoch = 0;
  };
  std::vector<CacheRef> committed;
  std::string salt;
  uint64_t root_hash = 0;  // hash of the salt: the parent of block 0
};

// The result of a prefix-cache lookup: cached blocks to reuse, in order.
struct PrefixMatch {
  std::vector<int32_t> blocks;
  int num_query_tokens = 0;  // how many tokens were looked up (for the hit-rate counters)
};

// 64-bit chain hash of one full block (exposed for tests).
uint64_t hash_kv_block(uint64_t parent_hash, std::span<const int32_t> tokens);
// Hash of a cache salt: the parent hash of a sequence's first block.
uint64_t hash_cache_salt(const std::string& salt);

class KvBlockManager {
 public:
  KvBlockManager(int num_blocks, int block_size, bool enable_prefix_caching);

  int num_blocks() const { return static_cast<int>(ref_.size()); }
  int block_size() const { return block_size_; }
  bool prefix_caching() const { return prefix_caching_; }

  // Blocks nobody references: never-cached free ones plus evictable cached ones.
  int num_free() const { return static_cast<int>(free_.size()) + num_evictable_; }
  int num_evictable() const { return num_evictable_; }
  // Fraction of blocks referenced by some sequence (evictable cached blocks count as free).
  double usage() const;

  // Blocks needed to hold n tokens.
  int blocks_for(int num_tokens) const { return (num_tokens + block_size_ - 1) / block_size_; }

  // The longest chain of cached full blocks at the start of `tokens` (the sequence's known
  // tokens), at most floor((tokens.size() - 1) / block_size) blocks. Extends seq->block_hashes.
  // Takes no references and changes no block. Empty when caching is off or seq has blocks.
  PrefixMatch match_prefix(KvSequence* seq, std::span<const int32_t> tokens);

  // Makes seq hold enough blocks for its first `num_tokens` tokens: when seq has no blocks yet,
  // first takes a reference on each block of `prefix` (from match_prefix just before, nothing
  // changed in between), then appends fresh blocks. All or nothing: returns false and changes
  // nothing when the pool cannot provide them. A prefix counts toward the hit-rate counters
  // when the allocation succeeds.
  bool allocate(KvSequence* seq, int num_tokens, const PrefixMatch& prefix = {});
  // Whether allocate(seq, num_tokens, prefix) would succeed.
  bool can_allocate(const KvSequence& seq, int num_tokens, const PrefixMatch& prefix = {}) const;

  // Offers seq's full blocks among its first num_computed tokens (all computed: their K/V are
  // written) to the prefix cache. A block whose contents are already cached (another sequence
  // computed the same prefix at the same time) stays private, and its chain continues from the
  // cached twin. No-op when caching is off.
  void cache_computed(KvSequence* seq, std::span<const int32_t> tokens, int num_computed);

  // Drops seq's references, last block first; blocks reaching zero become free or evictable.
  // seq keeps its hashes (its tokens have not changed) and may be allocated again.
  void free(KvSequence* seq);

  // Tests only: keep just these bits of every hash, so that collisions are common.
  void set_hash_mask_for_testing(uint64_t mask) { hash_mask_ = mask; }

  int ref_count(int32_t block) const { return ref_[block]; }
  bool is_cached(int32_t block) const { return meta_[block].cached; }

  // Counters. Prefix queries and hits are counted in tokens, as vLLM does.
  int64_t prefix_queries() const { return queries_; }
  int64_t prefix_hits() const { return hits_; }
  double prefix_hit_rate() const { return queries_ ? double(hits_) / double(queries_) : 0.0; }
  int64_t evictions() const { return evictions_; }

  // CHECK-fails (printing the values) unless: every reference count >= 0; free + evictable +
  // referenced == num_blocks; free blocks are unreferenced and uncached, evictable ones are
  // unreferenced and cached, in the LRU list exactly once; the hash map and the cached flags
  // agree both ways.
  void check_invariants() const;

 private:
  struct BlockMeta {
    bool cached = false;
    uint64_t hash = 0;
    uint64_t epoch = 0;         // when it entered the cache (unique per caching)
    int32_t parent_block = -1;  // the parent's cache entry; -1 for a first block
    uint64_t parent_epoch = 0;  // the parent's epoch then
    std::string salt;           // a first block's cache salt
  };

  void ensure_hashes(KvSequence* seq, std::span<const int32_t> tokens, int num_full) const;
  // Whether cache entry `block` holds the given tokens after parent (or, for a first block,
  // with seq's salt).
  bool entry_matches(int32_t block, KvSequence::CacheRef parent, std::span<const int32_t> tokens,
                     const KvSequence& seq, bool first) const;
  int num_evictable_hits(const PrefixMatch& prefix) const;
  int32_t take_block();  // a fresh block (free list first, then LRU eviction); ref 0 -> 1
  void lru_remove(int32_t b);
  void lru_push_back(int32_t b);

  int block_size_;
  bool prefix_caching_;
  std::vector<int32_t> ref_;
  std::vector<BlockMeta> meta_;
  std::vector<int32_t> block_tokens_;  // [num_blocks * block_size]: a cached block's token ids
  std::vector<int32_t> free_;          // stack of unreferenced, uncached blocks
  // Doubly linked LRU list of evictable blocks; index num_blocks is the sentinel.
  std::vector<int32_t> lru_prev_, lru_next_;
  int num_evictable_ = 0;
  std::unordered_map<uint64_t, int32_t> cache_;  // hash -> block
  uint64_t next_epoch_ = 1;
  uint64_t hash_mask_ = ~uint64_t{0};
  int64_t queries_ = 0, hits_ = 0, evictions_ = 0;
};

}  // namespace pagoda
