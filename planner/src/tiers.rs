//! Capacity and reload-versus-recompute break-even across memory tiers.
