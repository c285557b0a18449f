//! An S3 API server on loopback (moto), started by `.ci/run`, which exports its address as
//! `REPLAYSTORE_S3_ENDPOINT`: the test bucket, fresh prefixes, and configs that reach it.

use std::io::{Read, Write};
use std::process::Command;

use replaystore::RemoteConfig;

pub const BUCKET: &str = "replaystore-test";

/// The endpoint, with the test bucket created; `None` (after saying so) when there is none.
pub fn endpoint(test: &str) -> Option<String> {
    let Ok(ep) = std::env::var("REPLAYSTORE_S3_ENDPOINT") else {
        if std::env::var_os("CI").is_some() {
            panic!("CI is set but REPLAYSTORE_S3_ENDPOINT is not: .ci/run must start moto");
        }
        eprintln!(
            "SKIPPED {test}: no S3 API server (set REPLAYSTORE_S3_ENDPOINT, see the top of \
             tests/remote_s3.rs)"
        );
        return None;
    };
    create_bucket(&ep);
    Some(ep)
}

/// `PUT /<bucket>` over plain HTTP (moto does not check signatures; an existing bucket is
/// fine). object_store cannot create buckets.
pub fn create_bucket(ep: &str) {
    let host = ep.trim_start_matches("http://").trim_end_matches('/');
    let mut s = std::net::TcpStream::connect(host).expect("connect to the S3 API server");
    write!(
        s,
        "PUT /{BUCKET} HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut reply = String::new();
    s.read_to_string(&mut reply).unwrap();
    assert!(
        reply.starts_with("HTTP/1.1 200") || reply.contains("BucketAlreadyOwnedByYou"),
        "create bucket: {reply}"
    );
}

/// A fresh prefix of the test bucket, so tests (and runs) never see each other's objects.
pub fn prefix(test: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{test}-{}-{nanos}", std::process::id())
}

pub const OPTIONS: [(&str, &str); 4] = [
    ("allow_http", "true"),
    ("region", "us-east-1"),
    ("access_key_id", "testing"),
    ("secret_access_key", "testing"),
];

pub fn bucket(ep: &str, prefix: &str) -> RemoteConfig {
    let mut c = RemoteConfig::new(format!("s3://{BUCKET}/{prefix}")).with_option("endpoint", ep);
    for (k, v) in OPTIONS {
        c = c.with_option(k, v);
    }
    c
}

/// The `replaystore` binary with `args` and the options that reach the server at `ep`.
pub fn replaystore_cli(ep: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_replaystore"));
    cmd.args(args);
    cmd.args(["--remote-option", &format!("endpoint={ep}")]);
    for (k, v) in OPTIONS {
        cmd.args(["--remote-option", &format!("{k}={v}")]);
    }
    cmd
}
