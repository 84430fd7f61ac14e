//! Deployment capacity: weights per GPU, KV budget, token and sequence capacity.
