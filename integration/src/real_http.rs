//! Real HTTP/1 servers a pod may run, for differential tests: Go's `net/http`,
//! Node's `http`, Python's `http.server`, nginx (Debian's) and hyper, each on
//! loopback with a handler that answers [`HANDLED`]. A server "reads bytes as a
//! request" when its application handler ran for them ([`handled`]): an error page
//! the server writes itself (400, 501) is not a request reaching the application.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;

use crate::error::{HarnessError, Result};

/// What every handler answers; an answer holding it means the handler ran.
pub const HANDLED: &str = "HANDLED-BY-APPLICATION";

const GO_SERVER: &str = r#"package main

import (
	"fmt"
	"net"
	"net/http"
)

func main() {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	fmt.Println(l.Addr().(*net.TCPAddr).Port)
	http.Serve(l, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "HANDLED-BY-APPLICATION %s\n", r.Method)
	}))
}
"#;

const NODE_SERVER: &str = r"
const s = require('http').createServer((req, res) => res.end('HANDLED-BY-APPLICATION ' + req.method + '\n'));
s.listen(0, '127.0.0.1', () => console.log(s.address().port));
";

/// The methods an application usually defines (`http.server` dispatches to
/// `do_<METHOD>` and answers 501 to others).
const PYTHON_SERVER: &str = r"
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    def answer(self):
        body = ('HANDLED-BY-APPLICATION %s\n' % self.command).encode()
        self.send_response(200)
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = answer
    def log_message(self, *args):
        pass
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
print(s.server_port, flush=True)
s.serve_forever()
";

/// One real server.
#[derive(Debug)]
pub struct RealServer {
    pub name: &'static str,
    pub addr: SocketAddr,
    child: Option<Child>,
}

impl Drop for RealServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The five servers, stopped when dropped.
#[derive(Debug)]
pub struct RealHttpServers {
    pub servers: Vec<RealServer>,
    _runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

impl RealHttpServers {
    /// Starts every server; a missing program (go, node, python3, nginx) is an error
    /// naming it.
    pub fn start() -> Result<Self> {
        let dir = tempfile::tempdir().map_err(HarnessError::io("tempdir"))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .map_err(HarnessError::io("tokio runtime"))?;
        let hyper_addr = runtime.block_on(start_hyper())?;
        let go = dir.path().join("server.go");
        std::fs::write(&go, GO_SERVER).map_err(HarnessError::io("write server.go"))?;
        let go_binary = dir.path().join("go-http");
        let built = Command::new(go_program())
            .args(["build", "-o"])
            .arg(&go_binary)
            .arg(&go)
            .env("GOTOOLCHAIN", "local")
            .output()
            .map_err(HarnessError::io("run `go build` (install Go)"))?;
        if !built.status.success() {
            return Err(HarnessError::Invalid(format!(
                "go build: {}",
                String::from_utf8_lossy(&built.stderr)
            )));
        }
        let servers = vec![
            printing_port("go net/http", Command::new(&go_binary))?,
            printing_port("node http", node())?,
            printing_port("python http.server", python())?,
            nginx(dir.path())?,
            RealServer {
                name: "hyper",
                addr: hyper_addr,
                child: None,
            },
        ];
        Ok(Self {
            servers,
            _runtime: runtime,
            _dir: dir,
        })
    }
}

fn go_program() -> PathBuf {
    let installed = Path::new("/usr/local/go/bin/go");
    if installed.exists() {
        installed.to_path_buf()
    } else {
        PathBuf::from("go")
    }
}

fn node() -> Command {
    let mut command = Command::new("node");
    command.args(["-e", NODE_SERVER]);
    command
}

fn python() -> Command {
    let mut command = Command::new("python3");
    command.args(["-c", PYTHON_SERVER]);
    command
}

/// Starts a server that prints its port as its first line.
fn printing_port(name: &'static str, mut command: Command) -> Result<RealServer> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(HarnessError::io(format!("start {name}")))?;
    let mut line = String::new();
    if let Some(out) = child.stdout.take() {
        // bounded: the child is killed below if the line never comes
        let _ = BufReader::new(out).read_line(&mut line);
    }
    let mut server = RealServer {
        name,
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
        child: Some(child),
    };
    // on error, dropping `server` stops the child
    let port: u16 = line
        .trim()
        .parse()
        .map_err(|_| HarnessError::Invalid(format!("{name} printed no port: {line:?}")))?;
    server.addr.set_port(port);
    Ok(server)
}

/// nginx as Debian ships it, in the foreground, with its files in `dir`.
fn nginx(dir: &Path) -> Result<RealServer> {
    let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_err(HarnessError::io("pick a port"))?
        .port();
    let d = dir.display();
    let conf = dir.join("nginx.conf");
    std::fs::write(
        &conf,
        format!(
            "daemon off;\nmaster_process off;\nuser root;\npid {d}/nginx.pid;\nerror_log {d}/nginx.error.log;\n\
             events {{}}\nhttp {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n\
             fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
             server {{\n    listen 127.0.0.1:{port};\n    location / {{ return 200 \"{HANDLED} $request_method\\n\"; }}\n  }}\n}}\n"
        ),
    )
    .map_err(HarnessError::io("write nginx.conf"))?;
    let program = ["/usr/sbin/nginx", "nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .unwrap_or("nginx");
    let child = Command::new(program)
        .arg("-c")
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(HarnessError::io("start nginx (apt-get install nginx)"))?;
    let server = RealServer {
        name: "nginx",
        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, port)),
        child: Some(child),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(server.addr).is_err() {
        if Instant::now() > deadline {
            return Err(HarnessError::Invalid(format!(
                "nginx did not listen on {}",
                server.addr
            )));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(server)
}

/// hyper's HTTP/1 server with its default options, as a Rust pod would run it.
async fn start_hyper() -> Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .await
        .map_err(HarnessError::io("bind hyper"))?;
    let addr = listener
        .local_addr()
        .map_err(HarnessError::io("hyper address"))?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let service =
                    service_fn(|request: http::Request<hyper::body::Incoming>| async move {
                        let body = format!("{HANDLED} {}\n", request.method());
                        Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(
                            Bytes::from(body),
                        )))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Whether the server at `addr` ran its handler for `bytes`: sends them, keeps the
/// connection open, and reads until the server closes or `wait` passes.
pub fn handled(addr: SocketAddr, bytes: &[u8], wait: Duration) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(&addr, wait) else {
        return false;
    };
    if stream.write_all(bytes).is_err() {
        return false;
    }
    let deadline = Instant::now() + wait;
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        if stream
            .set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .is_err()
        {
            break;
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
        if contains(&answer, HANDLED.as_bytes()) {
            return true;
        }
    }
    contains(&answer, HANDLED.as_bytes())
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
