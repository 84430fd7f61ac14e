//! Finding the CUDA libraries before cudarc touches them (cudarc panics when one is missing).

use crate::WorkloadError;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// Environment variable naming libnvrtc: a directory holding `libnvrtc.so.13` or the file.
pub const NVRTC_ENV: &str = "KVBENCH_NVRTC_LIB";

/// The one line printed when no driver can be loaded.
pub const NO_DRIVER: &str = "no CUDA driver found (libcuda.so not loadable): run on a machine \
with an NVIDIA driver, or use --backend cpu";

/// Error unless libcuda can be loaded.
pub fn ensure_driver() -> Result<(), WorkloadError> {
    // SAFETY: only tries dlopen on cudarc's candidate names; loads nothing else.
    if unsafe { cudarc::driver::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(WorkloadError::Backend(NO_DRIVER.to_string()))
    }
}

/// Error unless libnvrtc can be loaded (after preloading `$KVBENCH_NVRTC_LIB` if set).
pub fn ensure_nvrtc() -> Result<(), WorkloadError> {
    preload_nvrtc_from_env();
    // SAFETY: as above, a dlopen probe of cudarc's candidate names.
    if unsafe { cudarc::nvrtc::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(WorkloadError::Backend(format!(
            "no NVRTC found (libnvrtc.so.13 not loadable): set {NVRTC_ENV} to the directory \
             printed by ci/install-nvrtc.sh, or add the CUDA toolkit's lib64 to LD_LIBRARY_PATH"
        )))
    }
}

/// Error unless libcublas can be loaded.
pub fn ensure_cublas() -> Result<(), WorkloadError> {
    // SAFETY: a dlopen probe of cudarc's candidate names.
    if unsafe { cudarc::cublas::sys::is_culib_present() } {
        Ok(())
    } else {
        Err(WorkloadError::Backend(
            "no cuBLAS found (libcublas.so.13 not loadable): add the CUDA toolkit's lib64 (or \
             Python's nvidia/cu13/lib) to LD_LIBRARY_PATH"
                .to_string(),
        ))
    }
}

/// Files to preload for an `$KVBENCH_NVRTC_LIB` value, builtins first (libnvrtc needs them).
pub fn nvrtc_preload_candidates(value: &str) -> Vec<PathBuf> {
    let path = Path::new(value);
    if path.is_dir() {
        ["libnvrtc-builtins.so.13.0", "libnvrtc.so.13", "libnvrtc.so"]
            .iter()
            .map(|name| path.join(name))
            .filter(|p| p.is_file())
            .collect()
    } else if path.is_file() {
        let mut files: Vec<PathBuf> = path
            .parent()
            .map(|dir| dir.join("libnvrtc-builtins.so.13.0"))
            .filter(|p| p.is_file())
            .into_iter()
            .collect();
        files.push(path.to_path_buf());
        files
    } else {
        Vec::new()
    }
}

/// dlopen the libraries `$KVBENCH_NVRTC_LIB` names with RTLD_GLOBAL, once per process. The
/// loader matches later lookups by soname, so cudarc's `dlopen("libnvrtc.so.13")` then finds
/// this copy without LD_LIBRARY_PATH (which glibc reads only at process start).
fn preload_nvrtc_from_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Ok(value) = std::env::var(NVRTC_ENV) else {
            return;
        };
        for file in nvrtc_preload_candidates(&value) {
            let Ok(c_path) = std::ffi::CString::new(file.as_os_str().as_encoded_bytes()) else {
                continue;
            };
            // SAFETY: dlopen of a shared library by path; the handle is deliberately never
            // closed (it must outlive every cudarc call). Failure returns null, ignored: the
            // presence check that follows reports it.
            unsafe {
                libc::dlopen(c_path.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL);
            }
        }
    });
}

/// Run a closure that calls into cudarc, turning a panic (a symbol the driver lacks, say)
/// into an error instead of aborting the benchmark.
pub fn guarded<T>(
    what: &str,
    f: impl FnOnce() -> Result<T, WorkloadError>,
) -> Result<T, WorkloadError> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(result) => result,
        Err(payload) => {
            let msg = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".to_string());
            Err(WorkloadError::Backend(format!("CUDA {what} failed: {msg}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn candidates_from_a_directory_keep_existing_files_builtins_first() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("libnvrtc.so.13"), b"").unwrap();
        std::fs::write(dir.path().join("libnvrtc-builtins.so.13.0"), b"").unwrap();
        let got = nvrtc_preload_candidates(dir.path().to_str().unwrap());
        assert_eq!(
            got,
            vec![
                dir.path().join("libnvrtc-builtins.so.13.0"),
                dir.path().join("libnvrtc.so.13")
            ]
        );
    }

    #[test]
    fn candidates_from_a_file_add_its_builtins() {
        let dir = tempfile::tempdir().unwrap();
        let lib = dir.path().join("libnvrtc.so.13");
        std::fs::write(&lib, b"").unwrap();
        assert_eq!(
            nvrtc_preload_candidates(lib.to_str().unwrap()),
            vec![lib.clone()]
        );
        std::fs::write(dir.path().join("libnvrtc-builtins.so.13.0"), b"").unwrap();
        assert_eq!(nvrtc_preload_candidates(lib.to_str().unwrap()).len(), 2);
    }

    #[test]
    fn candidates_from_a_missing_path_are_empty() {
        assert!(nvrtc_preload_candidates("/nonexistent/kvbench/nvrtc").is_empty());
    }

    #[test]
    fn a_panic_becomes_an_error() {
        let r: Result<(), _> = guarded("probe", || panic!("Missing symbol cuFoo"));
        let msg = r.unwrap_err().to_string();
        assert!(
            msg.contains("CUDA probe failed") && msg.contains("cuFoo"),
            "{msg}"
        );
    }
}
