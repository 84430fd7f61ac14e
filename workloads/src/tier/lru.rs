//! Least-recently-used order of resident blocks.

use crate::cache::BlockId;
use std::collections::{BTreeSet, HashMap, HashSet};

/// Resident blocks ordered by last use.
#[derive(Debug, Default)]
pub struct Lru {
    tick: u64,
    last_use: HashMap<BlockId, u64>,
    order: BTreeSet<(u64, BlockId)>,
}

impl Lru {
    /// Mark `id` as just used.
    pub fn touch(&mut self, id: BlockId) {
        self.tick += 1;
        if let Some(old) = self.last_use.insert(id, self.tick) {
            self.order.remove(&(old, id));
        }
        self.order.insert((self.tick, id));
    }

    /// Stop tracking `id` (evicted or freed).
    pub fn forget(&mut self, id: BlockId) {
        if let Some(old) = self.last_use.remove(&id) {
            self.order.remove(&(old, id));
        }
    }

    /// Up to `n` least recently used blocks, oldest first, skipping `pinned` and those
    /// `keep` rejects (no longer resident).
    pub fn victims(
        &self,
        n: usize,
        pinned: &HashSet<BlockId>,
        keep: impl Fn(BlockId) -> bool,
    ) -> Vec<BlockId> {
        self.order
            .iter()
            .map(|&(_, id)| id)
            .filter(|id| !pinned.contains(id) && keep(*id))
            .take(n)
            .collect()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.last_use.clear();
        self.order.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oldest_unpinned_first() {
        let mut lru = Lru::default();
        for i in 0..5 {
            lru.touch(BlockId(i));
        }
        lru.touch(BlockId(0)); // now the newest
        let pinned: HashSet<_> = [BlockId(2)].into();
        assert_eq!(
            lru.victims(3, &pinned, |_| true),
            vec![BlockId(1), BlockId(3), BlockId(4)]
        );
        lru.forget(BlockId(1));
        assert_eq!(
            lru.victims(2, &HashSet::new(), |id| id != BlockId(3)),
            vec![BlockId(2), BlockId(4)]
        );
    }
}
