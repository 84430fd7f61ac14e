//! A disk that fills up mid-run: the write fails with a clear error naming the file, and the
//! blocks that were stored before still load bit-exact.
//!
//! The full disk is real to the process: RLIMIT_FSIZE caps the size of any file it writes
//! (with SIGXFSZ ignored the write returns EFBIG, as a full disk returns ENOSPC). The limit is
//! process-wide (it would also stop the harness writing to a redirected stdout), so the test
//! re-runs itself in a child process whose output goes to pipes, and this file holds exactly
//! one test.

use kvbench_workloads::tier::{BlockKey, DiskIo, DiskStore, TierError, VerifiedTier};

const CHILD: &str = "KVBENCH_DISK_FULL_CHILD";

#[test]
fn write_failure_mid_run_is_an_error_and_earlier_blocks_survive() {
    if std::env::var_os(CHILD).is_none() {
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "write_failure_mid_run_is_an_error_and_earlier_blocks_survive",
            ])
            .args(["--test-threads", "1", "--nocapture"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string()
            + &String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{text}");
        assert!(text.contains("1 passed"), "{text}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let store = DiskStore::create(dir.path(), 4000, DiskIo::Direct).unwrap();
    let path = store.path().to_path_buf();
    let mut tier = VerifiedTier::new(Box::new(store));
    // Room for 3 slots of 4 KiB.
    // SAFETY: plain libc calls with valid arguments; ignoring SIGXFSZ and lowering our own
    // file-size limit affect only this test process.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let limit = libc::rlimit {
            rlim_cur: 3 * 4096,
            rlim_max: libc::RLIM_INFINITY,
        };
        assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
    }
    let block = |i: u8| vec![i; 4000];
    let (b0, b1, b2, b3) = (block(0), block(1), block(2), block(3));
    tier.store(&[(BlockKey([0, 0]), &b0[..]), (BlockKey([0, 1]), &b1[..])])
        .unwrap();
    tier.store(&[(BlockKey([0, 2]), &b2[..])]).unwrap();
    let err = tier.store(&[(BlockKey([0, 3]), &b3[..])]).unwrap_err();
    assert!(matches!(err, TierError::Write { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()) && msg.contains("free disk space"),
        "{msg}"
    );
    assert!(err.is_recoverable());
    assert_eq!(tier.stats().faults, 1);
    assert_eq!(tier.stats().blocks_written, 3);
    assert!(!tier.holds(&BlockKey([0, 3])));
    let mut out = vec![Vec::new(); 4];
    let keys = [0, 1, 2, 3].map(|i| BlockKey([0, i]));
    assert_eq!(
        tier.load(&keys, &mut out).unwrap(),
        vec![true, true, true, false]
    );
    assert_eq!(out[2], b2);
}
