//! Forward-auth fixtures: claimgate in `mode: forward_auth` ([`setup`]), and real front proxies
//! (nginx, Caddy) in front of it, each run as a child process from a temp dir with the
//! configuration the README shows. `CLAIMGATE` and `UPSTREAM` in the snippets stand for
//! `host:port`.

use super::raw::RawResponse;
use super::{jwks, Claims, Echo, EchoUpstream, JwksServer, Proxy, SigningKey, TestConfig};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Env {
    pub key: SigningKey,
    pub upstream: EchoUpstream,
    _jwks: JwksServer,
    pub claimgate: Proxy,
}

/// claimgate in forward-auth mode: `/admin` needs `role: admin`, `/public` nothing, `/opt` an
/// optional token; identity headers `X-User-Id` and `X-Claimgate-User`.
pub async fn setup(original_request: &str, edit: impl FnOnce(TestConfig) -> TestConfig) -> Env {
    let key = SigningKey::es256("ec");
    let upstream = EchoUpstream::start().await;
    let jwks_server = JwksServer::start(jwks(&[&key])).await;
    let mut config = TestConfig::jwks(&upstream.url(), &jwks_server.uri())
        .set("/mode", "forward_auth")
        .set("/forward_auth/original_request", original_request)
        .set("/forward/headers", json!({"X-User-Id": "%%user.id"}))
        .set("/userinfo/path", "/.claimgate/userinfo")
        .set(
            "/rules",
            json!([
                {"name": "admins", "match": {"path_prefix": "/admin"},
                 "allow_when": {"%%token.role": "admin"}},
                {"match": {"path_prefix": "/public"}, "auth": "none"},
                {"match": {"path_prefix": "/opt"}, "auth": "optional"},
            ]),
        );
    // Nothing is forwarded in this mode, so the upstream is the front proxy's business.
    config.0.as_object_mut().unwrap().remove("upstream");
    let claimgate = Proxy::start(&edit(config)).await;
    Env {
        key,
        upstream,
        _jwks: jwks_server,
        claimgate,
    }
}

impl Env {
    pub fn bearer(&self, role: &str) -> String {
        let token = self.key.sign(&Claims::new().set("role", role));
        format!("Authorization: Bearer {token}")
    }

    pub fn claimgate_addr(&self) -> &str {
        self.claimgate.url.trim_start_matches("http://")
    }

    pub fn upstream_addr(&self) -> String {
        self.upstream.url().trim_start_matches("http://").to_owned()
    }
}

/// The README's nginx `location` blocks (section "Deploy" → nginx).
pub const NGINX_LOCATIONS: &str = r#"
    location / {
        auth_request /_claimgate;
        # Copy claimgate's identity headers; proxy_set_header replaces any copy the client sent,
        # and an empty value (anonymous route) sends no header at all.
        auth_request_set $claimgate_user_id $upstream_http_x_user_id;
        auth_request_set $claimgate_user $upstream_http_x_claimgate_user;
        proxy_set_header X-User-Id $claimgate_user_id;
        proxy_set_header X-Claimgate-User $claimgate_user;
        # auth_request keeps only the status of a 401/403: ask claimgate again for its answer.
        error_page 401 403 = @claimgate_denied;
        proxy_pass http://UPSTREAM;
    }

    location = /_claimgate {
        internal;
        proxy_pass http://CLAIMGATE;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
    }

    location @claimgate_denied {
        proxy_pass http://CLAIMGATE;
        proxy_pass_request_body off;
        proxy_set_header Content-Length "";
        proxy_set_header X-Original-URI $request_uri;
        proxy_set_header X-Original-Method $request_method;
    }
"#;

/// The README's Caddyfile site block (section "Deploy" → Caddy), for Caddy 2.6.
pub const CADDY_SITE: &str = r#"
    route {
        # Whatever the answer, the client's own copies never reach the upstream, nor the `_`
        # spellings that CGI, WSGI, PHP and Rack read as the same header.
        request_header -X-User-Id
        request_header -X_User_Id
        request_header -X-User_Id
        request_header -X_User-Id
        request_header -X-Claimgate-User
        request_header -X_Claimgate_User
        request_header -X-Claimgate_User
        request_header -X_Claimgate-User
        forward_auth CLAIMGATE {
            uri /_claimgate
            copy_headers X-User-Id X-Claimgate-User
        }
        # Caddy 2.6 sets a copied header that the answer lacks (an anonymous route) to the
        # placeholder's own text; such a header is removed again.
        @no_user_id header_regexp X-User-Id ^\{http\.reverse_proxy\.header\.
        request_header @no_user_id -X-User-Id
        @no_user header_regexp X-Claimgate-User ^\{http\.reverse_proxy\.header\.
        request_header @no_user -X-Claimgate-User
        reverse_proxy UPSTREAM
    }
"#;

/// A front proxy child process on a free 127.0.0.1 port; stopped on drop, workers and all.
pub struct FrontProxy {
    child: Child,
    dir: tempfile::TempDir,
    log: PathBuf,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
}

impl FrontProxy {
    /// nginx in front of `claimgate` and `upstream` (both `host:port`), or `None` when no nginx
    /// binary is installed.
    pub async fn nginx(claimgate: &str, upstream: &str) -> Option<Self> {
        let binary = find(&["/usr/sbin/nginx", "/usr/bin/nginx"])?;
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        let port = super::free_port();
        // As root, nginx would switch its workers to `nobody`, who cannot enter the temp dir.
        let user = if is_root() { "user root;" } else { "" };
        let locations = NGINX_LOCATIONS
            .replace("CLAIMGATE", claimgate)
            .replace("UPSTREAM", upstream);
        let conf = format!(
            "{user}\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log info;\n\
             events {{ worker_connections 64; }}\n\
             http {{\n  access_log {d}/access.log;\n  client_body_temp_path {d}/body;\n  \
             proxy_temp_path {d}/proxy;\n  fastcgi_temp_path {d}/fastcgi;\n  \
             uwsgi_temp_path {d}/uwsgi;\n  scgi_temp_path {d}/scgi;\n  \
             server {{\n    listen 127.0.0.1:{port};\n{locations}\n  }}\n}}\n"
        );
        std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
        let log = dir.path().join("error.log");
        let child = Command::new(binary)
            .arg("-p")
            .arg(dir.path())
            .args(["-c", "nginx.conf", "-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("stderr.log")).unwrap())
            .spawn()
            .expect("spawn nginx");
        Some(Self::wait(child, dir, log, port).await)
    }

    /// Caddy in front of `claimgate` and `upstream`, or `None` when no caddy binary is installed.
    pub async fn caddy(claimgate: &str, upstream: &str) -> Option<Self> {
        let binary = find(&["/usr/bin/caddy", "/usr/local/bin/caddy"])?;
        let dir = tempfile::tempdir().unwrap();
        let port = super::free_port();
        let site = CADDY_SITE
            .replace("CLAIMGATE", claimgate)
            .replace("UPSTREAM", upstream);
        let caddyfile = format!(
            "{{\n  admin off\n  auto_https off\n}}\n\nhttp://127.0.0.1:{port} {{\n{site}\n}}\n"
        );
        std::fs::write(dir.path().join("Caddyfile"), caddyfile).unwrap();
        let log = dir.path().join("stderr.log");
        let child = Command::new(binary)
            .args(["run", "--config", "Caddyfile", "--adapter", "caddyfile"])
            .current_dir(dir.path())
            .env("HOME", dir.path())
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn caddy");
        Some(Self::wait(child, dir, log, port).await)
    }

    async fn wait(mut child: Child, dir: tempfile::TempDir, log: PathBuf, port: u16) -> Self {
        let deadline = Instant::now() + Duration::from_secs(15);
        let addr = format!("127.0.0.1:{port}");
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                panic!("front proxy exited ({status}):\n{}", read(&dir, &log));
            }
            if tokio::net::TcpStream::connect(&addr).await.is_ok() {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "front proxy did not listen on {addr}:\n{}",
                read(&dir, &log)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self {
            child,
            dir,
            log,
            url: format!("http://{addr}"),
        }
    }

    /// The front proxy's error log (nginx) or stderr (Caddy), for failure messages.
    pub fn log(&self) -> String {
        read(&self.dir, &self.log)
    }
}

impl Drop for FrontProxy {
    fn drop(&mut self) {
        super::stop_gracefully(&mut self.child, Duration::from_secs(5));
    }
}

fn read(dir: &tempfile::TempDir, log: &Path) -> String {
    let stderr = std::fs::read_to_string(dir.path().join("stderr.log")).unwrap_or_default();
    let log = std::fs::read_to_string(log).unwrap_or_default();
    format!("{stderr}\n{log}")
}

fn find(candidates: &[&'static str]) -> Option<&'static str> {
    candidates.iter().copied().find(|p| Path::new(p).exists())
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(2) == Some("0"))
        })
        .unwrap_or(false)
}

/// Neither claimgate's identity headers nor any client-sent spelling of them reached the upstream.
pub fn assert_no_identity(echo: &Echo) {
    for name in ["x-user-id", "x-claimgate-user", "x_user_id", "x-user_id"] {
        assert!(!echo.has_header(name), "{name}: {echo:?}");
    }
}

/// What the upstream saw, from the echo in the body of a 200 that went through a front proxy.
pub fn echoed(resp: &RawResponse, what: &str) -> Echo {
    assert_eq!(resp.status, 200, "{what}: {resp:?}");
    Echo::from_json(&serde_json::from_str(&resp.body).unwrap())
}

/// The headers Traefik v3's `forwardAuth` sets (v2 sends the same five) for `method uri`.
pub fn traefik(method: &str, uri: &str) -> Vec<String> {
    vec![
        format!("X-Forwarded-Method: {method}"),
        "X-Forwarded-Proto: https".into(),
        "X-Forwarded-Host: app.example.com".into(),
        format!("X-Forwarded-Uri: {uri}"),
        "X-Forwarded-For: 203.0.113.7".into(),
    ]
}
