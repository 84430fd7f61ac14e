//! A throwaway `redis-server` on a loopback port chosen at run time, for tests and demos:
//! no persistence, stopped when dropped.

use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A redis-server this process started.
pub struct LocalRedis {
    child: Child,
    port: u16,
}

/// Where the `redis-server` binary is, if on PATH (or named by `KVBENCH_REDIS_SERVER`).
pub fn redis_server_binary() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("KVBENCH_REDIS_SERVER") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("redis-server"))
        .find(|p| p.is_file())
}

impl LocalRedis {
    /// Start a server; `Ok(None)` when no `redis-server` binary is installed.
    pub fn start() -> Result<Option<LocalRedis>, String> {
        let Some(binary) = redis_server_binary() else {
            return Ok(None);
        };
        // Ask the kernel for a free port, then hand it to the server. Another process could
        // take it in between; the readiness check below would then fail loudly.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let child = Command::new(&binary)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut server = LocalRedis { child, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("redis-server on port {port} exited: {status}"));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "redis-server on port {port} did not listen within 10 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(server))
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    /// Stop the server now (as a crash would: no shutdown handshake).
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        self.stop();
    }
}
