//! Environment capture: CPU, cores, memory, OS, GPU, version, git commit.
