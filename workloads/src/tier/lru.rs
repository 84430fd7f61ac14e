//! Least-recently-used order of resident blocks.

use crate::cache::BlockId;
use std::collections::HashSet;

/// Resident blocks with the time of their last use. Touching is O(1) (a decode step touches
/// every block of a layer); choosing victims sorts the candidates, which happens only when
/// the pool is over its limit.
#[derive(Debug, Default)]
pub struct Lru {
    tick: u64,
    /// Last use of each block by id; 0 = not tracked.
    last_use: Vec<u64>,
}

impl Lru {
    /// Mark `id` as just used.
    pub fn touch(&mut self, id: BlockId) {
        let i = id.0 as usize;
        if i >= self.last_use.len() {
            self.last_use.resize(i + 1, 0);
        }
        self.tick += 1;
        self.last_use[i] = self.tick;
    }

    /// Stop tracking `id` (evicted or freed).
    pub fn forget(&mut self, id: BlockId) {
        if let Some(t) = self.last_use.get_mut(id.0 as usize) {
            *t = 0;
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
        let mut order: Vec<(u64, BlockId)> = self
            .last_use
            .iter()
            .enumerate()
            .filter(|&(_, &t)| t > 0)
            .map(|(i, &t)| (t, BlockId(i as u32)))
            .filter(|&(_, id)| !pinned.contains(&id) && keep(id))
            .collect();
        order.sort_unstable();
        order.into_iter().take(n).map(|(_, id)| id).collect()
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.last_use.clear();
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
