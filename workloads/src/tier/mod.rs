//! Offload tiers for paged KV blocks: host memory, local disk, Redis.
