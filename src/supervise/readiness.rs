//! Readiness checks: an HTTP GET answered 2xx, or a TCP connection
//! accepted, polled until the service's timeout. (`log` checks are made on
//! the output as it is read; see `logs::pump`.)

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio::time::{Instant, sleep, timeout};

use crate::manifest::Check;

const POLL: Duration = Duration::from_millis(50);
const ATTEMPT: Duration = Duration::from_secs(2);

/// Polls `check` until it passes (`Ok`) or `within` runs out (`Err` with
/// the last failure).
pub(crate) async fn wait(check: &Check, within: Duration) -> Result<(), String> {
    let deadline = Instant::now() + within;
    loop {
        let attempt = match check {
            Check::Http { addr, host, path, .. } => http(*addr, host, path).await,
            Check::Tcp(addr) => TcpStream::connect(addr).await.map(drop).map_err(|e| e.to_string()),
            Check::Log(_) => return std::future::pending().await,
        };
        let failure = match attempt {
            Ok(()) => return Ok(()),
            Err(e) => e,
        };
        if Instant::now() + POLL >= deadline {
            return Err(failure);
        }
        sleep(POLL).await;
    }
}

/// One `GET`: `Ok` for a 2xx status.
async fn http(addr: SocketAddr, host: &str, path: &str) -> Result<(), String> {
    let attempt = async {
        let mut conn = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: stigmer\r\nConnection: close\r\n\r\n"
        );
        conn.write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
        let mut head = Vec::new();
        let mut buf = [0; 512];
        while !head.contains(&b'\n') && head.len() < 4096 {
            let n = conn.read(&mut buf).await.map_err(|e| e.to_string())?;
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let status_line = String::from_utf8_lossy(&head);
        let status_line = status_line.lines().next().unwrap_or("");
        match status_line.split_whitespace().nth(1) {
            Some(code) if code.starts_with('2') && code.len() == 3 => Ok(()),
            Some(_) => Err(format!("answered {status_line:?}")),
            None => Err("no HTTP status line in the answer".to_owned()),
        }
    };
    timeout(ATTEMPT, attempt).await.unwrap_or_else(|_| Err("no answer within 2s".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn serve_once(response: &'static str) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let mut buf = [0; 1024];
                let _ = conn.read(&mut buf).await;
                let _ = conn.write_all(response.as_bytes()).await;
            }
        });
        addr
    }

    fn http_check(addr: SocketAddr) -> Check {
        Check::Http { url: String::new(), addr, host: addr.to_string(), path: "/healthz".into() }
    }

    #[tokio::test]
    async fn http_2xx_is_ready_and_others_are_not() {
        let ok = serve_once("HTTP/1.1 204 No Content\r\n\r\n").await;
        wait(&http_check(ok), Duration::from_secs(2)).await.unwrap();
        let bad = serve_once("HTTP/1.1 503 Service Unavailable\r\n\r\n").await;
        let err = wait(&http_check(bad), Duration::from_millis(300)).await.unwrap_err();
        assert!(err.contains("503"), "{err}");
    }

    #[tokio::test]
    async fn tcp_refused_until_timeout() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = wait(&Check::Tcp(addr), Duration::from_millis(200)).await.unwrap_err();
        assert!(err.to_lowercase().contains("refused"), "{err}");
    }
}
