//! Building a workload from its spec, for the backend it names.

use crate::{Workload, WorkloadError, WorkloadSpec};

/// Build a ready-to-run workload (inputs, weights, empty cache) for `spec`.
pub fn build(spec: &WorkloadSpec) -> Result<Box<dyn Workload>, WorkloadError> {
    Err(WorkloadError::Invalid(format!(
        "{:?} workloads are not implemented yet",
        spec.backend
    )))
}
