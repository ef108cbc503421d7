//! `stigmer-server`: the demo system's server, a stand-in for a real
//! service. It hands out tasks to runners over a tiny HTTP API on loopback.
//!
//! `GET /healthz` answers `ok`; `POST /api/tasks/next?queue=Q` hands out the
//! next task of queue Q; `POST /api/tasks/ID/done` records it done;
//! `GET /api/stats` gives the counts as JSON. Flags: `--port N` (default
//! 7234), `--host ADDR` (default 127.0.0.1). std-only.

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

#[derive(Default)]
struct Stats {
    issued: AtomicU64,
    done: AtomicU64,
}

fn main() {
    let mut port = 7234u16;
    let mut host = "127.0.0.1".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--port" => port = args.next().and_then(|p| p.parse().ok()).unwrap_or(port),
            "--host" => host = args.next().unwrap_or(host),
            "--help" | "-h" => {
                println!("usage: stigmer-server [--host ADDR] [--port N]");
                return;
            }
            other => eprintln!("stigmer-server: ignoring unknown argument {other:?}"),
        }
    }
    let listener = match TcpListener::bind((host.as_str(), port)) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("stigmer-server: cannot listen on {host}:{port}: {e}");
            std::process::exit(1);
        }
    };
    println!("listening on http://{}", listener.local_addr().unwrap());
    let stats = Arc::new(Stats::default());
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let stats = Arc::clone(&stats);
        std::thread::spawn(move || {
            match serve(conn, &stats) {
                // A client that hangs up once it has the status line (a
                // health check) is not an error.
                Err(e) if matches!(
                    e.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                ) => {}
                Err(e) => eprintln!("connection error: {e}"),
                Ok(_) => {}
            }
        });
    }
}

fn serve(mut conn: TcpStream, stats: &Stats) -> std::io::Result<()> {
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    // Skip the headers: the API takes no body.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let (status, body) = match (method, path) {
        ("GET", "/healthz") => (200, "ok".to_owned()),
        ("GET", "/api/stats") => (
            200,
            format!(
                "{{\"issued\":{},\"done\":{}}}",
                stats.issued.load(Ordering::Relaxed),
                stats.done.load(Ordering::Relaxed)
            ),
        ),
        ("POST", "/api/tasks/next") => {
            let queue = query.strip_prefix("queue=").unwrap_or("default");
            let n = stats.issued.fetch_add(1, Ordering::Relaxed) + 1;
            let id = format!("{queue}-{n}");
            println!("handed out {id}");
            (200, id)
        }
        ("POST", p) if p.starts_with("/api/tasks/") && p.ends_with("/done") => {
            let id = &p["/api/tasks/".len()..p.len() - "/done".len()];
            stats.done.fetch_add(1, Ordering::Relaxed);
            println!("{id} done");
            (200, "ok".to_owned())
        }
        _ => (404, "not found".to_owned()),
    };
    let reason = if status == 200 { "OK" } else { "Not Found" };
    write!(
        conn,
        "HTTP/1.1 {status} {reason}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}
