//! The `http_directory` server: static files over HTTP/1.1 (GET, HEAD),
//! reached by the guest at 10.0.2.2 (QEMU user networking's host address).
use std::path::{Component, Path, PathBuf};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

/// A running server; stops when dropped.
pub struct HttpServer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The file a request path names under `root`, refusing `..` and absolute
/// escapes. `/` and directories serve their `index.html`.
pub fn resolve(root: &Path, raw_path: &str) -> Option<PathBuf> {
    let path = raw_path.split(['?', '#']).next().unwrap_or("");
    let decoded = percent_decode(path)?;
    let mut out = root.to_path_buf();
    for c in Path::new(&decoded).components() {
        match c {
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    if out.is_dir() {
        out.push("index.html");
    }
    Some(out)
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(h, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Serve `root` on `addr:port`.
pub async fn serve(root: PathBuf, listener: TcpListener) -> HttpServer {
    let port = listener.local_addr().map(|a| a.port()).unwrap_or(0);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let root = root.clone();
            tokio::spawn(async move {
                let _ = handle(root, stream).await;
            });
        }
    });
    HttpServer { port, task }
}

async fn handle(root: PathBuf, stream: tokio::net::TcpStream) -> std::io::Result<()> {
    let (r, mut w) = stream.into_split();
    let mut r = BufReader::new(r);
    loop {
        let mut request = String::new();
        if r.read_line(&mut request).await? == 0 {
            return Ok(());
        }
        let mut keep_alive = request.contains("HTTP/1.1");
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).await? == 0 || h.trim().is_empty() {
                break;
            }
            let l = h.to_ascii_lowercase();
            if l.starts_with("connection:") && l.contains("close") {
                keep_alive = false;
            }
        }
        let mut parts = request.split_whitespace();
        let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or("/"));
        let head = method == "HEAD";
        if method != "GET" && !head {
            w.write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await?;
            return Ok(());
        }
        let file = resolve(&root, path);
        let body = match &file {
            Some(f) => tokio::fs::read(f).await.ok(),
            None => None,
        };
        let conn = if keep_alive { "keep-alive" } else { "close" };
        match body {
            Some(b) => {
                w.write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n", b.len()).as_bytes()).await?;
                if !head {
                    w.write_all(&b).await?;
                }
            }
            None => {
                let msg = b"404 page not found\n";
                w.write_all(format!("HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: {conn}\r\n\r\n", msg.len()).as_bytes()).await?;
                if !head {
                    w.write_all(msg).await?;
                }
            }
        }
        w.flush().await?;
        if !keep_alive {
            return Ok(());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    #[test]
    fn paths_stay_inside_the_root() {
        let root = Path::new("/srv/http");
        assert_eq!(
            resolve(root, "/preseed.cfg"),
            Some(PathBuf::from("/srv/http/preseed.cfg"))
        );
        assert_eq!(
            resolve(root, "/a%20b?x=1"),
            Some(PathBuf::from("/srv/http/a b"))
        );
        assert_eq!(resolve(root, "/../etc/passwd"), None);
        assert_eq!(resolve(root, "/a/%2e%2e/%2e%2e/x"), None);
        assert_eq!(resolve(root, "/%zz"), None);
    }

    #[tokio::test]
    async fn serves_files_and_404s() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("user-data"), "#cloud-config\n").unwrap();
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let srv = serve(d.path().to_path_buf(), l).await;
        let get = |path: &'static str| async move {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", srv.port))
                .await
                .unwrap();
            s.write_all(format!("GET {path} HTTP/1.0\r\n\r\n").as_bytes())
                .await
                .unwrap();
            let mut out = String::new();
            s.read_to_string(&mut out).await.unwrap();
            out
        };
        let ok = get("/user-data").await;
        assert!(
            ok.starts_with("HTTP/1.1 200 OK") && ok.ends_with("\r\n\r\n#cloud-config\n"),
            "{ok}"
        );
        assert!(get("/missing").await.starts_with("HTTP/1.1 404"));
        assert!(get("/../../etc/passwd").await.starts_with("HTTP/1.1 404"));
    }
}
