//! Built-in model registry (each entry cites its source).
