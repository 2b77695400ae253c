//! A tiny HTTP/1.1 server for download tests: serves one body, honours `Range`, and can cut
//! the connection after N bytes or lie about the content. Test code (built for the tests of
//! crates above through the `test-server` feature): a broken setup panics.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

#[derive(Debug, Clone, Default)]
pub struct Behaviour {
    /// Stop sending after this many body bytes (simulates a dropped connection).
    pub cut_after: Option<usize>,
    /// Ignore Range headers.
    pub no_range: bool,
    /// Send the body in 64 KiB pieces with this pause after each (a slow mirror).
    pub pause: Option<std::time::Duration>,
}

#[derive(Debug)]
pub struct Server {
    pub base: String,
    pub behaviour: Arc<Mutex<Behaviour>>,
    pub ranges: Arc<Mutex<Vec<Option<u64>>>>,
}

/// Serves `files` (path → body) on 127.0.0.1.
pub fn serve(files: Vec<(String, Vec<u8>)>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let behaviour = Arc::new(Mutex::new(Behaviour::default()));
    let ranges = Arc::new(Mutex::new(Vec::new()));
    let (b, r) = (behaviour.clone(), ranges.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut line = String::new();
            if reader.read_line(&mut line).is_err() {
                continue;
            }
            let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
            let mut range = None;
            loop {
                let mut h = String::new();
                if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                    break;
                }
                let lower = h.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("range: bytes=") {
                    range = v.trim().trim_end_matches('-').parse::<u64>().ok();
                }
            }
            let beh = b.lock().unwrap().clone();
            r.lock().unwrap().push(range);
            let Some((_, body)) = files.iter().find(|(p, _)| *p == path) else {
                let _ = stream.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                continue;
            };
            let (status, start) = match range {
                Some(from) if !beh.no_range && (from as usize) < body.len() => {
                    ("206 Partial Content", from as usize)
                }
                Some(_) if !beh.no_range => {
                    let _ = stream.write_all(b"HTTP/1.1 416 Range Not Satisfiable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    continue;
                }
                _ => ("200 OK", 0),
            };
            let part = &body[start..];
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                part.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let send = beh
                .cut_after
                .map(|n| n.min(part.len()))
                .unwrap_or(part.len());
            match beh.pause {
                None => {
                    let _ = stream.write_all(&part[..send]);
                }
                Some(pause) => {
                    for piece in part[..send].chunks(64 << 10) {
                        if stream.write_all(piece).is_err() {
                            break;
                        }
                        std::thread::sleep(pause);
                    }
                }
            }
        }
    });
    Server {
        base,
        behaviour,
        ranges,
    }
}
