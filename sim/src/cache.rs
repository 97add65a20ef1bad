//! The prefix-cache model: KV blocks of `block_size` tokens identified by chained hashes
//! (a block is reused only if every earlier block matches), a capacity in blocks, and LRU
//! eviction of blocks no running request holds. This follows vLLM's automatic prefix
//! caching: blocks are looked up when a request is admitted, registered once its prefill
//! has computed them, held while it runs, and become evictable (most recently freed last,
//! the tail of a sequence before its head) when it finishes.

use std::collections::{BTreeMap, HashMap};

/// Chained hashes of the full blocks of `tokens`: block `i`'s hash covers blocks `0..=i`.
pub fn block_hashes(tokens: &[u32], block_size: usize) -> Vec<u64> {
    let mut out = Vec::with_capacity(tokens.len() / block_size.max(1));
    let mut parent: u64 = 0xcbf2_9ce4_8422_2325;
    for block in tokens.chunks_exact(block_size.max(1)) {
        let mut h = parent;
        for t in block {
            h ^= u64::from(*t);
            h = h.wrapping_mul(0x0000_0100_0000_01B3);
            h ^= h >> 29;
        }
        parent = h;
        out.push(h);
    }
    out
}

#[derive(Debug)]
struct Block {
    refs: u32,
    /// Position in the free list (only meaningful while `refs == 0`).
    tick: u64,
}

/// The engine's prefix cache.
#[derive(Debug)]
pub struct PrefixCache {
    block_size: usize,
    capacity: usize,
    blocks: HashMap<u64, Block>,
    /// Evicted since the last `take_evicted` (a host tier may keep them).
    evicted: Vec<u64>,
    /// Blocks held by no request, oldest first: the eviction order.
    free: BTreeMap<u64, u64>,
    tick: u64,
    held: usize,
}

impl PrefixCache {
    pub fn new(block_size: usize, capacity: usize) -> Self {
        PrefixCache {
            block_size: block_size.max(1),
            capacity,
            blocks: HashMap::new(),
            evicted: Vec::new(),
            free: BTreeMap::new(),
            tick: 0,
            held: 0,
        }
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Blocks cached (held or evictable).
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// Blocks held by running requests.
    pub fn held(&self) -> usize {
        self.held
    }

    /// Share of the capacity held by running requests (vLLM's `kv_cache_usage_perc`).
    pub fn usage(&self) -> f64 {
        if self.capacity == 0 {
            0.0
        } else {
            self.held as f64 / self.capacity as f64
        }
    }

    fn hold(&mut self, hash: u64) -> bool {
        let Some(b) = self.blocks.get_mut(&hash) else {
            return false;
        };
        if b.refs == 0 {
            self.free.remove(&b.tick);
            self.held += 1;
        }
        b.refs += 1;
        true
    }

    /// Admits a prompt of `prompt_len` tokens with block hashes `hashes`: holds the longest
    /// cached chain of leading blocks and returns how many blocks hit. As in vLLM, at least
    /// the last prompt token is always recomputed, so at most `(prompt_len - 1) / block_size`
    /// blocks can hit.
    pub fn lookup_and_hold(&mut self, hashes: &[u64], prompt_len: usize) -> usize {
        let max = prompt_len.saturating_sub(1) / self.block_size;
        let mut hits = 0;
        for h in hashes.iter().take(max) {
            if !self.hold(*h) {
                break;
            }
            hits += 1;
        }
        hits
    }

    /// Registers the blocks a request's prefill computed (`hashes`, following its hits) and
    /// holds them. Evicts the least recently freed blocks when full; stops when nothing can
    /// be evicted. Returns how many blocks it now holds from `hashes`.
    pub fn insert_and_hold(&mut self, hashes: &[u64]) -> usize {
        let mut n = 0;
        for h in hashes {
            if self.hold(*h) {
                n += 1;
                continue;
            }
            if self.blocks.len() >= self.capacity {
                let Some((_, victim)) = self.free.pop_first() else {
                    break;
                };
                self.blocks.remove(&victim);
                self.evicted.push(victim);
            }
            self.blocks.insert(*h, Block { refs: 1, tick: 0 });
            self.held += 1;
            n += 1;
        }
        n
    }

    /// Releases blocks a finished request held. The chain is freed tail first, so under
    /// pressure a sequence's last blocks are evicted before its shared head.
    pub fn release(&mut self, hashes: &[u64]) {
        for h in hashes.iter().rev() {
            if let Some(b) = self.blocks.get_mut(h) {
                if b.refs == 0 {
                    continue;
                }
                b.refs -= 1;
                if b.refs == 0 {
                    self.tick += 1;
                    b.tick = self.tick;
                    self.free.insert(self.tick, *h);
                    self.held -= 1;
                }
            }
        }
    }

    /// The blocks evicted since the last call, oldest first.
    pub fn take_evicted(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.evicted)
    }

    /// Drops every cached block, as vLLM's `/reset_prefix_cache` does. Refused (returns
    /// false, nothing dropped) while any running request holds blocks.
    pub fn reset(&mut self) -> bool {
        if self.held > 0 {
            return false;
        }
        self.blocks.clear();
        self.free.clear();
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(range: std::ops::Range<u32>) -> Vec<u32> {
        range.collect()
    }

    #[test]
    fn reuse_needs_every_earlier_block_to_match() {
        let a = toks(0..64);
        let mut b = a.clone();
        b[3] = 999; // differs in block 0 only
        let ha = block_hashes(&a, 16);
        let hb = block_hashes(&b, 16);
        assert_eq!(ha.len(), 4);
        // Blocks 1..3 have the same tokens but different parents: no reuse at all.
        assert!(ha.iter().zip(&hb).all(|(x, y)| x != y));
        let mut c = PrefixCache::new(16, 100);
        assert_eq!(c.lookup_and_hold(&ha, a.len()), 0);
        assert_eq!(c.insert_and_hold(&ha), 4);
        c.release(&ha);
        assert_eq!(c.lookup_and_hold(&hb, b.len()), 0);
        // Same first 40 tokens: two full blocks hit.
        let mut d = toks(0..40);
        d.extend(500..540);
        let hd = block_hashes(&d, 16);
        assert_eq!(c.lookup_and_hold(&hd, d.len()), 2);
    }

    #[test]
    fn last_token_is_always_recomputed() {
        let a = toks(0..64);
        let h = block_hashes(&a, 16);
        let mut c = PrefixCache::new(16, 100);
        c.insert_and_hold(&h);
        c.release(&h);
        // 64 tokens, fully cached: only 3 blocks may hit (63 / 16).
        assert_eq!(c.lookup_and_hold(&h, 64), 3);
        assert_eq!(c.lookup_and_hold(&h, 65), 4);
    }

    #[test]
    fn lru_evicts_least_recently_freed_and_never_held_blocks() {
        let mut c = PrefixCache::new(16, 4);
        let a = block_hashes(&toks(0..32), 16);
        let b = block_hashes(&toks(100..132), 16);
        let x = block_hashes(&toks(200..232), 16);
        c.insert_and_hold(&a);
        c.release(&a);
        c.insert_and_hold(&b);
        c.release(&b);
        // Touch a again: b becomes the least recently freed.
        assert_eq!(c.lookup_and_hold(&a, 33), 2);
        c.release(&a);
        assert_eq!(c.insert_and_hold(&x), 2);
        assert_eq!(c.len(), 4);
        c.release(&x);
        assert_eq!(c.lookup_and_hold(&b, 33), 0, "b was evicted");
        assert_eq!(c.lookup_and_hold(&a, 33), 2, "a survived");
        // a is held now; x is free. A new chain may evict x but never a.
        let y = block_hashes(&toks(300..364), 16);
        assert_eq!(
            c.insert_and_hold(&y),
            2,
            "only the two free blocks could be reused"
        );
        assert_eq!(c.held(), 4);
        assert_eq!(c.usage(), 1.0);
    }

    #[test]
    fn reset_is_refused_while_blocks_are_held() {
        let mut c = PrefixCache::new(16, 10);
        let a = block_hashes(&toks(0..48), 16);
        c.insert_and_hold(&a);
        assert!(!c.reset());
        assert_eq!(c.len(), 3, "a refused reset drops nothing");
        c.release(&a);
        assert!(c.reset());
        assert!(c.is_empty());
        assert_eq!(c.lookup_and_hold(&a, 49), 0);
    }

    #[test]
    fn shared_blocks_are_reference_counted() {
        let mut c = PrefixCache::new(16, 10);
        let a = block_hashes(&toks(0..32), 16);
        c.insert_and_hold(&a);
        assert_eq!(c.lookup_and_hold(&a, 33), 2);
        assert_eq!(c.held(), 2);
        c.release(&a);
        assert_eq!(c.held(), 2, "still held by the other request");
        assert!(!c.reset());
        c.release(&a);
        assert_eq!(c.held(), 0);
        assert!(c.reset());
    }
}
