//! `herald healthcheck`: GET a health URL and exit 0 on 2xx. The container image has no shell and no curl
//! (distroless), so health checks run the binary itself. Plain HTTP only: health endpoints listen inside the
//! container, not behind TLS.

use std::time::Duration;

use anyhow::{bail, Context};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub async fn check(url: &str) -> anyhow::Result<()> {
    let rest = url
        .strip_prefix("http://")
        .with_context(|| format!("{url} is not an http:// URL"))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let exchange = async {
        let mut stream = tokio::net::TcpStream::connect(authority).await?;
        let request =
            format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nConnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await?;
        Ok::<_, std::io::Error>(answer)
    };
    let answer = tokio::time::timeout(Duration::from_secs(5), exchange)
        .await
        .with_context(|| format!("{url} did not answer within 5 s"))?
        .with_context(|| format!("cannot reach {url}"))?;
    let status_line = String::from_utf8_lossy(&answer);
    let status = status_line
        .lines()
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse::<u16>().ok())
        .with_context(|| format!("{url} did not answer HTTP"))?;
    if !(200..300).contains(&status) {
        bail!("{url} answered {status}");
    }
    Ok(())
}
