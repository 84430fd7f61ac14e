//! The f64 reference: the same model computed without any cache.
