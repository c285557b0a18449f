//! A `replaystore serve` child process and a minimal HTTP/1.1 client, for the server tests.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

/// The project token of the real posthog-js captures.
pub const TOKEN: &str = "phc_realclient_harness_token";

pub struct Server {
    pub child: Child,
    pub addr: String,
    stopped: bool,
}

/// A test that fails before `stop` must not leave its server running.
impl Drop for Server {
    fn drop(&mut self) {
        if !self.stopped {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Marks every file descriptor this process inherited close-on-exec, so that a server child
/// does not hold them: `flock LOCK cargo test` hands its lock to the test, and a server that
/// outlived a killed test would otherwise hold every later build.
pub fn no_inherited_fds() {
    let Ok(fds) = std::fs::read_dir("/proc/self/fd") else {
        return;
    };
    for fd in fds.flatten() {
        if let Some(fd) = fd.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) {
            if fd > 2 {
                unsafe {
                    libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC);
                }
            }
        }
    }
}

impl Server {
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Self::start_with_env(dir, extra, &[])
    }

    pub fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        no_inherited_fds();
        // `MEMTEST_BIN`: another build of the server (tests/server_memory.rs measures one).
        let bin = std::env::var("MEMTEST_BIN").unwrap_or(env!("CARGO_BIN_EXE_replaystore").into());
        let mut child = Command::new(bin)
            .envs(env.iter().copied())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--retention-days",
                "3650",
                "--token",
            ])
            .arg(format!("{TOKEN}=1"))
            .args(extra)
            .arg("--dir")
            .arg(dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on http://")
            .expect("address line")
            .to_string();
        Server {
            child,
            addr,
            stopped: false,
        }
    }

    /// SIGTERM, then wait: a graceful shutdown flushes and closes the store.
    pub fn stop(mut self) -> String {
        self.stopped = true;
        unsafe {
            libc::kill(self.child.id() as i32, libc::SIGTERM);
        }
        let status = self.child.wait().unwrap();
        let mut err = String::new();
        self.child
            .stderr
            .take()
            .unwrap()
            .read_to_string(&mut err)
            .unwrap();
        assert!(status.success(), "server exit: {status:?}: {err}");
        err
    }
}

/// A minimal HTTP/1.1 client: (status, lower-cased headers, body).
pub fn http(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> (u16, String, Vec<u8>) {
    let mut s = TcpStream::connect(addr).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let split = resp
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of headers");
    let head = String::from_utf8_lossy(&resp[..split]).to_lowercase();
    let mut body = resp[split + 4..].to_vec();
    if head.contains("transfer-encoding: chunked") {
        let mut out = Vec::new();
        let mut rest = &body[..];
        loop {
            let eol = rest.windows(2).position(|w| w == b"\r\n").unwrap();
            let n = usize::from_str_radix(std::str::from_utf8(&rest[..eol]).unwrap().trim(), 16)
                .unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&rest[eol + 2..eol + 2 + n]);
            rest = &rest[eol + 2 + n + 2..];
        }
        body = out;
    }
    let status = head[9..12].parse().unwrap();
    (status, head, body)
}
