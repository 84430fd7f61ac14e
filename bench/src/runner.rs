//! Runs one workload: build, verify, warm up, time, record.
