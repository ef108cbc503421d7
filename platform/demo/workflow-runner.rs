//! `workflow-runner`: the demo system's worker. It asks `stigmer-server`
//! for tasks over loopback, "runs" them, reports them done, and logs what it
//! does. Flags: `--server HOST:PORT` (default 127.0.0.1:7234), `--queue Q`
//! (default workflows), `--interval MS` (default 1000), `--tasks N` (stop
//! after N tasks; default: run until stopped). std-only.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

fn main() {
    let mut server = "127.0.0.1:7234".to_owned();
    let mut queue = "workflows".to_owned();
    let mut interval = 1000u64;
    let mut tasks = u64::MAX;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_default();
        match arg.as_str() {
            "--server" => server = value(),
            "--queue" => queue = value(),
            "--interval" => interval = value().trim_end_matches("ms").parse().unwrap_or(interval),
            "--tasks" => tasks = value().parse().unwrap_or(tasks),
            "--help" | "-h" => {
                println!("usage: workflow-runner [--server HOST:PORT] [--queue Q] [--interval MS] [--tasks N]");
                return;
            }
            other => eprintln!("workflow-runner: ignoring unknown argument {other:?}"),
        }
    }
    println!("polling {server} for {queue} tasks every {interval}ms");
    let mut done = 0;
    let mut failures = 0;
    while done < tasks {
        match post(&server, &format!("/api/tasks/next?queue={queue}")) {
            Ok(id) => {
                failures = 0;
                println!("running {id}");
                std::thread::sleep(Duration::from_millis(interval / 2));
                match post(&server, &format!("/api/tasks/{id}/done")) {
                    Ok(_) => println!("finished {id}"),
                    Err(e) => eprintln!("cannot report {id} done: {e}"),
                }
                done += 1;
            }
            Err(e) => {
                failures += 1;
                eprintln!("cannot reach {server}: {e}");
                if failures >= 10 {
                    eprintln!("giving up after {failures} failures");
                    std::process::exit(1);
                }
            }
        }
        std::thread::sleep(Duration::from_millis(interval / 2));
    }
    println!("done after {done} tasks");
}

/// A minimal HTTP/1.1 POST with no body; returns the response body of a 200.
fn post(server: &str, path: &str) -> std::io::Result<String> {
    let mut conn = TcpStream::connect(server)?;
    conn.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(conn, "POST {path} HTTP/1.1\r\nHost: {server}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")?;
    let mut response = String::new();
    conn.read_to_string(&mut response)?;
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    if !head.starts_with("HTTP/1.1 200") {
        let status = head.lines().next().unwrap_or("no status line");
        return Err(std::io::Error::other(format!("{path}: {status}")));
    }
    Ok(body.to_owned())
}
