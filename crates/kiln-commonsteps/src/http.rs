//! `http_directory`: the build's HTTP server, from which an installer
//! fetches its preseed or kickstart file (Packer's `StepHTTPServer`).
//!
//! Files are served by tower-http's `ServeDir` over hyper: streamed from
//! disk (never read whole), with `Range` requests (`206 Partial Content`,
//! `416` past the end), `HEAD`, `Last-Modified`/`If-Modified-Since`, a
//! directory's `index.html`, and nothing outside the directory (`..` is
//! refused). Like Go's file server behind Packer's, it serves GET and HEAD
//! only; unlike it, a directory without `index.html` is a 404, not a
//! listing.
use crate::media::HasMedia;
use crate::ports;
use kiln_core::{async_trait, BuildCtx, BuildError, Outcome, Step};
use kiln_template::Decoder;
use std::path::PathBuf;
use tokio::net::TcpListener;

/// Packer's `HTTPConfig`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpConfig {
    /// `http_directory`: no server without it.
    pub directory: Option<PathBuf>,
    pub port_min: u16,
    pub port_max: u16,
    /// `http_bind_address`: kiln's default is 127.0.0.1 (Packer's is
    /// 0.0.0.0): a guest under QEMU's user networking reaches the host's
    /// loopback as 10.0.2.2, and nothing else needs to.
    pub bind_address: String,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            directory: None,
            port_min: 8000,
            port_max: 9000,
            bind_address: "127.0.0.1".into(),
        }
    }
}

/// A port key: unset or 0 is `default`.
pub fn decode_port(d: &mut Decoder<'_>, key: &str, default: u16) -> u16 {
    match d.int(key) {
        None | Some(0) => default,
        Some(p) if (1..=65535).contains(&p) => p as u16,
        Some(p) => {
            d.error(key, format!("{key} {p} is not a TCP port"));
            default
        }
    }
}

impl HttpConfig {
    /// Decode `http_directory`, `http_port_min`/`max`, `http_bind_address`
    /// (and refuse `http_interface`). `None` when a problem was recorded.
    pub fn decode(d: &mut Decoder<'_>) -> Option<HttpConfig> {
        let mut ok = true;
        let mut c = HttpConfig {
            directory: d
                .string("http_directory")
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            port_min: decode_port(d, "http_port_min", 8000),
            port_max: decode_port(d, "http_port_max", 9000),
            ..HttpConfig::default()
        };
        if c.port_min > c.port_max {
            d.error(
                "http_port_min",
                "http_port_min must be less than http_port_max",
            );
            ok = false;
        }
        if let Some(a) = d.string("http_bind_address").filter(|s| !s.is_empty()) {
            c.bind_address = a;
        }
        if d.string("http_interface").is_some_and(|s| !s.is_empty()) {
            d.error(
                "http_interface",
                "http_interface is not supported by kiln yet (use http_bind_address)",
            );
            ok = false;
        }
        if let Some(dir) = &c.directory {
            if !dir.is_dir() {
                d.error(
                    "http_directory",
                    format!("http_directory {} is not a directory", dir.display()),
                );
                ok = false;
            }
        }
        ok.then_some(c)
    }
}

/// A running server; it stops (with its open connections) when dropped.
pub struct HttpServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serve the files under `root` on `listener` (HTTP/1.1, GET and HEAD).
pub fn serve(root: PathBuf, listener: TcpListener) -> HttpServer {
    use hyper_util::rt::TokioIo;
    use hyper_util::service::TowerToHyperService;
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let files = tower_http::services::ServeDir::new(root);
    let task = tokio::spawn(async move {
        // Owned here: aborting the server drops the connections too.
        let mut conns = tokio::task::JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, _)) = accepted else { continue };
                    let svc = TowerToHyperService::new(files.clone());
                    conns.spawn(async move {
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    });
    HttpServer { port, task }
}

/// No free port in the configured range.
#[derive(Debug, thiserror::Error)]
#[error("no free port for the HTTP server between {min} and {max}")]
pub struct NoFreePort {
    pub min: u16,
    pub max: u16,
}

/// Packer's `StepHTTPServer`: serves `http_directory` on a free port of
/// `http_port_min`..`http_port_max` (chosen at random, as Packer does) and
/// sets `{{ .HTTPIP }}` and `{{ .HTTPPort }}` for the rest of the build.
pub struct StepHttpServer<'a> {
    pub config: &'a HttpConfig,
    /// The host's address as the machine sees it (`{{ .HTTPIP }}`):
    /// 10.0.2.2 under QEMU's user networking.
    pub http_ip: &'a str,
}

#[async_trait]
impl<S: HasMedia> Step<S> for StepHttpServer<'_> {
    fn name(&self) -> &'static str {
        "http server"
    }
    async fn run(&mut self, state: &mut S, ctx: &BuildCtx) -> Result<(), BuildError> {
        let c = self.config;
        ctx.set_generated("HTTPIP", self.http_ip);
        let Some(dir) = &c.directory else {
            return Ok(());
        };
        let mut tried = vec![];
        let addr = c.bind_address.clone();
        loop {
            let p = ports::pick(c.port_min, c.port_max, ports::seed(), &tried, |p| {
                ports::tcp_free(&addr, p)
            })
            .ok_or_else(|| {
                BuildError::new(NoFreePort {
                    min: c.port_min,
                    max: c.port_max,
                })
            })?;
            match TcpListener::bind((addr.as_str(), p)).await {
                Ok(l) => {
                    let srv = serve(dir.clone(), l);
                    ctx.ui.say(&format!("Starting HTTP server on port {p}"));
                    ctx.set_generated("HTTPPort", p.to_string());
                    // What provisioners see as `{{build `PackerHTTPAddr`}}`
                    // and `PACKER_HTTP_ADDR` (Packer's placeholders until
                    // a server runs).
                    ctx.set_generated("PackerHTTPIP", self.http_ip);
                    ctx.set_generated("PackerHTTPPort", p.to_string());
                    ctx.set_generated("PackerHTTPAddr", format!("{}:{p}", self.http_ip));
                    let m = state.media();
                    m.http_port = p;
                    m.http = Some(srv);
                    return Ok(());
                }
                Err(_) => tried.push(p),
            }
        }
    }
    async fn cleanup(&mut self, state: &mut S, _: &BuildCtx, _: Outcome) -> Result<(), BuildError> {
        state.media().http = None;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// One raw HTTP/1.1 exchange (the server closes after it).
    async fn raw(port: u16, request: &str) -> Vec<u8> {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.unwrap();
        out
    }

    fn split(resp: &[u8]) -> (String, Vec<u8>) {
        let at = resp
            .windows(4)
            .position(|w| w == b"\r\n\r\n")
            .expect("a header");
        (
            String::from_utf8_lossy(&resp[..at]).to_ascii_lowercase(),
            resp[at + 4..].to_vec(),
        )
    }

    async fn get(port: u16, path: &str, extra: &str) -> (String, Vec<u8>) {
        split(
            &raw(
                port,
                &format!("GET {path} HTTP/1.1\r\nHost: x\r\n{extra}Connection: close\r\n\r\n"),
            )
            .await,
        )
    }

    #[tokio::test]
    async fn serves_files_ranges_and_404s() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("user-data"), "#cloud-config\n").unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(d.path().join("sub/index.html"), "hi").unwrap();
        std::fs::write(d.path().join("a b.cfg"), "spaced").unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let srv = serve(d.path().to_path_buf(), l);
        let port = srv.port;

        let (h, body) = get(port, "/user-data", "").await;
        assert!(h.starts_with("http/1.1 200"), "{h}");
        assert!(h.contains("content-length: 14"), "{h}");
        assert_eq!(body, b"#cloud-config\n");
        let (h, body) = get(port, "/a%20b.cfg", "").await;
        assert!(h.starts_with("http/1.1 200"), "{h}");
        assert_eq!(body, b"spaced");
        let (h, body) = get(port, "/sub/", "").await;
        assert!(h.starts_with("http/1.1 200"), "{h}");
        assert_eq!(body, b"hi");

        // Ranges: a slice, an open end, a suffix, and past the end.
        let (h, body) = get(port, "/user-data", "Range: bytes=1-5\r\n").await;
        assert!(h.starts_with("http/1.1 206"), "{h}");
        assert!(h.contains("content-range: bytes 1-5/14"), "{h}");
        assert_eq!(body, b"cloud");
        let (h, body) = get(port, "/user-data", "Range: bytes=7-\r\n").await;
        assert!(h.starts_with("http/1.1 206"), "{h}");
        assert_eq!(body, b"config\n");
        let (h, body) = get(port, "/user-data", "Range: bytes=-7\r\n").await;
        assert!(h.starts_with("http/1.1 206"), "{h}");
        assert_eq!(body, b"config\n");
        let (h, _) = get(port, "/user-data", "Range: bytes=100-200\r\n").await;
        assert!(h.starts_with("http/1.1 416"), "{h}");

        // HEAD: the length, no body.
        let (h, body) = split(
            &raw(
                port,
                "HEAD /user-data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            )
            .await,
        );
        assert!(
            h.starts_with("http/1.1 200") && h.contains("content-length: 14"),
            "{h}"
        );
        assert!(body.is_empty());

        assert!(get(port, "/missing", "")
            .await
            .0
            .starts_with("http/1.1 404"));
        for escape in ["/../../etc/passwd", "/sub/%2e%2e/%2e%2e/etc/passwd"] {
            let (h, _) = get(port, escape, "").await;
            assert!(!h.starts_with("http/1.1 200"), "{escape}: {h}");
        }
        drop(srv);
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_err());
    }

    /// A file far larger than the server's read buffer (64 KiB) comes out
    /// whole, and a range deep inside it exactly.
    #[tokio::test]
    async fn large_files_and_deep_ranges() {
        let d = tempfile::tempdir().unwrap();
        let big: Vec<u8> = (0..(3u32 << 20)).map(|i| (i % 251) as u8).collect();
        std::fs::write(d.path().join("big.iso"), &big).unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let srv = serve(d.path().to_path_buf(), l);
        let (h, body) = get(srv.port, "/big.iso", "").await;
        assert!(h.contains(&format!("content-length: {}", big.len())), "{h}");
        assert!(body == big, "the body differs from the file");
        let (h, body) = get(srv.port, "/big.iso", "Range: bytes=3000000-3000009\r\n").await;
        assert!(h.starts_with("http/1.1 206"), "{h}");
        assert_eq!(body, &big[3_000_000..3_000_010]);
    }
}
