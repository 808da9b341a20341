//! The tests' in-memory Azure Files server (`tests/it/files_fake.rs`) as a process, for the
//! benchmark's Files rows (`scripts/bench --servers files`): no Files emulator exists, so the
//! scale scenarios measure the plugin's Files path against the same fake its tests trust.
//!
//! It checks Shared Key signatures with the fake's own account key (printed, so the harness
//! can sign with it), keeps every file in memory and enforces the service's rules (parents
//! exist, ranges ≤ 4 MiB, names case-insensitive). It answers at loopback speed, so the
//! rows measure the client, not a model of Azure Files' latency.
//!
//! Beside the service it serves a plain-text admin listing, so the harness can check what an
//! upload stored without a Files client of its own: `GET /files?share=S&prefix=P` answers one
//! `path<TAB>size` line per stored file whose path starts with `P`.
//!
//! Usage: `cargo run --release --example files_server -- SHARE`; it creates `SHARE` and prints
//! `listening on http://127.0.0.1:PORT/ACCOUNT key KEY admin http://127.0.0.1:PORT2`, then
//! serves until killed.

// The module allows dead_code and clippy::result_large_err itself (inner attributes).
#[path = "../tests/it/files_fake.rs"]
mod files_fake;

use std::io::{BufRead, BufReader, Write};

fn main() {
    let share = std::env::args().nth(1).unwrap_or_else(|| "bench".into());
    let fake = files_fake::FilesFake::start();
    fake.create_share(&share);
    let admin = std::net::TcpListener::bind("127.0.0.1:0").expect("bind the admin listener");
    println!(
        "listening on {} key {} admin http://{}",
        fake.endpoint(),
        files_fake::account_key(),
        admin.local_addr().expect("admin address")
    );
    for stream in admin.incoming().flatten() {
        let mut line = String::new();
        let mut reader = BufReader::new(&stream);
        if reader.read_line(&mut line).is_err() {
            continue;
        }
        // Drain the headers (up to the blank line).
        let mut h = String::new();
        while reader.read_line(&mut h).map(|n| n > 2).unwrap_or(false) {
            h.clear();
        }
        let target = line.split_whitespace().nth(1).unwrap_or("");
        let query = url::Url::parse(&format!("http://admin{target}")).ok();
        let param =
            |k: &str| query.as_ref().and_then(|u| u.query_pairs().find(|(n, _)| n == k).map(|(_, v)| v.into_owned()));
        let (s, prefix) = (param("share").unwrap_or_default(), param("prefix").unwrap_or_default());
        let mut body = String::new();
        for path in fake.files(&s).into_iter().filter(|p| p.starts_with(&prefix)) {
            let size = fake.file(&s, &path).map(|f| f.data.len()).unwrap_or(0);
            body.push_str(&format!("{path}\t{size}\n"));
        }
        let mut w = &stream;
        let _ = write!(w, "HTTP/1.0 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}", body.len());
    }
}
