//! Slowloris clients: connections that trickle or stall their headers or
//! body, and what each saw before the server cut it off.

use crate::load::WRITE_KEY;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What a slow client saw: an answer's first line (if any), whether the
/// server closed the connection, and when.
#[derive(Debug)]
pub struct SlowOutcome {
    pub name: &'static str,
    pub answer: String,
    pub closed: bool,
    pub after: Duration,
    pub served_meanwhile: usize,
}

/// Opens a connection, writes `head`, then `trickle` one byte at a time
/// every `every`, until the server answers or closes (or 20 s pass).
fn slow_client(
    name: &'static str,
    port: u16,
    head: Vec<u8>,
    trickle: Vec<u8>,
    every: Duration,
    served: Arc<AtomicUsize>,
) -> SlowOutcome {
    let started = Instant::now();
    let before = served.load(Ordering::Relaxed);
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(every)).unwrap();
    let mut answer = Vec::new();
    let mut closed = false;
    let _ = s.write_all(&head);
    let mut next = trickle.iter().cycle();
    while started.elapsed() < Duration::from_secs(20) {
        let mut buf = [0u8; 4096];
        match s.read(&mut buf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(n) => answer.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => {
                closed = true;
                break;
            }
        }
        if let (Some(b), true) = (next.next(), answer.is_empty()) {
            if s.write_all(&[*b]).is_err() {
                closed = true;
                break;
            }
        }
    }
    SlowOutcome {
        name,
        answer: String::from_utf8_lossy(&answer).into_owned(),
        closed,
        after: started.elapsed(),
        served_meanwhile: served.load(Ordering::Relaxed) - before,
    }
}

/// Starts the slow clients against `port` (header trickle and stall, a
/// silent connection, body trickle and stall), each counting the requests
/// `served` to others meanwhile.
pub fn slow_clients(
    port: u16,
    served: Arc<AtomicUsize>,
) -> Vec<tokio::task::JoinHandle<SlowOutcome>> {
    let start = format!(
        "POST /v1/events HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {WRITE_KEY}\r\ncontent-type: application/json\r\n"
    );
    let ms = Duration::from_millis;
    let clients: Vec<(&'static str, Vec<u8>, Vec<u8>, Duration)> = vec![
        // Headers, a byte at a time, never finished.
        (
            "header_trickle",
            start.clone().into_bytes(),
            b"x-slow: aaaaaaaa".to_vec(),
            ms(150),
        ),
        (
            "header_trickle",
            b"POST /v1/ev".to_vec(),
            b"ents".to_vec(),
            ms(400),
        ),
        // Half the headers, then silence; and a connection that says nothing.
        ("header_stall", start.clone().into_bytes(), vec![], ms(100)),
        ("silent", vec![], vec![], ms(100)),
        // Complete headers, then the body a byte at a time or not at all.
        (
            "body_trickle",
            format!("{start}content-length: 400\r\n\r\n").into_bytes(),
            br#"{"name":"shop.view","properties":{"x":1}}"#.to_vec(),
            ms(100),
        ),
        (
            "body_trickle",
            format!("{start}transfer-encoding: chunked\r\n\r\n").into_bytes(),
            b"1\r\n \r\n".to_vec(),
            ms(50),
        ),
        (
            "body_stall",
            format!("{start}content-length: 100\r\n\r\n{{\"name\":").into_bytes(),
            vec![],
            ms(100),
        ),
    ];
    clients
        .into_iter()
        .map(|(name, head, trickle, every)| {
            let served = served.clone();
            tokio::task::spawn_blocking(move || {
                slow_client(name, port, head, trickle, every, served)
            })
        })
        .collect()
}
