//! `refpoint serve` on TCP: NBD with TLS required (`--listen`), the
//! management API over HTTPS with a bearer token (`--api-listen`), client
//! certificates (`--tls-client-ca`), and the CLI's refusals. Certificates
//! come from [`testkit::pki`]; the clients are nbdinfo, nbdcopy
//! (libnbd-bin), qemu-io (qemu-utils) and curl.
//!
//! Every test runs its own daemon in its own state directory on ports the
//! kernel picks (`127.0.0.1:0`), read back from the daemon's log; the
//! [`Daemon`] guard kills it if the test ends early.

mod common;

use common::{s, Daemon, Env};
use serde_json::Value;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Output};
use std::time::Duration;
use testkit::pki::Pki;
use testkit::tools;

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 8 * MIB;
/// How long any one client or CLI run may take.
const LIMIT: Duration = Duration::from_secs(60);
const CURL: &str = "/usr/bin/curl";

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

/// Runs a program to completion, killing it after [`LIMIT`].
fn run(mut cmd: Command) -> Output {
    tools::run(&mut cmd, LIMIT)
}

/// Runs a client that must succeed; returns its standard output.
fn ok(prog: &str, args: &[&str]) -> String {
    tools::ok(Command::new(prog).args(args), LIMIT)
}

/// Runs a client that must fail; returns its output and error output.
fn fails(prog: &str, args: &[&str]) -> String {
    tools::fails(Command::new(prog).args(args), LIMIT)
}

/// An HTTPS answer from curl.
struct Http {
    status: u16,
    body: String,
    /// curl's own exit status and error output.
    exit: ExitStatus,
    stderr: String,
}

impl Http {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.body))
    }
}

/// `curl -sS` with `extra` arguments; the status code comes from
/// `--write-out` (0 when there was no HTTP answer).
fn curl(url: &str, extra: &[&str]) -> Http {
    assert!(
        Path::new(CURL).exists(),
        "these tests need curl at {CURL} (Debian/Ubuntu package curl)"
    );
    let mut c = Command::new(CURL);
    c.args(["-sS", "--max-time", "30", "-w", "\n%{http_code}"])
        .args(extra)
        .arg(url);
    let o = run(c);
    let out = String::from_utf8(o.stdout).unwrap();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", out.as_str()));
    Http {
        status: code.trim().parse().unwrap_or(0),
        body: body.to_string(),
        exit: o.status,
        stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
    }
}

// ---------------------------------------------------------------------------
// The daemon (common::Env::serve) on TCP
// ---------------------------------------------------------------------------

/// A state directory and certificates, in temporary directories.
fn setup() -> (Env, Pki) {
    (Env::new(), Pki::new())
}

/// `--tls-cert ... --tls-key ...`.
fn tls_args(pki: &Pki) -> Vec<String> {
    vec![
        "--tls-cert".into(),
        s(&pki.server_cert).into(),
        "--tls-key".into(),
        s(&pki.server_key).into(),
    ]
}

impl Daemon {
    /// The address after `prefix` on a line of its log (`NBD on `,
    /// `API on https://`), which it prints for each TCP listener.
    fn address(&self, prefix: &str) -> Option<String> {
        let log = self.log_text();
        let line = log.lines().find_map(|l| l.strip_prefix(prefix))?;
        Some(line.split(' ').next().unwrap().to_string())
    }

    fn nbd_addr(&self) -> String {
        self.address("NBD on ")
            .unwrap_or_else(|| panic!("no `NBD on` line: {}", self.log_text()))
    }

    fn api_addr(&self) -> String {
        self.address("API on https://")
            .unwrap_or_else(|| panic!("no `API on` line: {}", self.log_text()))
    }

    /// `nbd://ADDR/EXPORT`, no TLS.
    fn nbd_uri(&self, export: &str) -> String {
        format!("nbd://{}/{export}", self.nbd_addr())
    }

    /// `nbds://ADDR/EXPORT?tls-certificates=DIR`.
    fn nbds_uri(&self, export: &str, dir: &Path) -> String {
        format!(
            "nbds://{}/{export}?tls-certificates={}",
            self.nbd_addr(),
            s(dir)
        )
    }

    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.api_addr())
    }
}

/// The `export-size:` nbdinfo prints.
fn export_size(nbdinfo: &str) -> u64 {
    nbdinfo
        .lines()
        .find_map(|l| l.trim().strip_prefix("export-size: "))
        .unwrap_or_else(|| panic!("no export-size in {nbdinfo}"))
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap()
}

// ---------------------------------------------------------------------------
// NBD on TCP
// ---------------------------------------------------------------------------

#[test]
fn nbd_on_tcp_requires_tls_and_the_unix_socket_does_not() {
    let (env, pki) = setup();
    env.machine(DISK_SIZE, "1M", None);
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    args.extend(["--api-listen".to_string(), "127.0.0.1:0".into()]);
    args.extend(tls_args(&pki));
    let d = env.serve(&args);
    assert!(d.nbd_addr().starts_with("127.0.0.1:"), "{}", d.nbd_addr());
    assert_ne!(d.nbd_addr(), "127.0.0.1:0");
    assert_ne!(d.api_addr(), d.nbd_addr());

    // libnbd over TLS, trusting the CA only.
    let tls = d.nbds_uri("vm1/disk0", &pki.ca_only);
    let out = ok("nbdinfo", &[&tls]);
    assert!(out.contains("with TLS"), "{out}");
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");

    // qemu-io over TLS writes two patterns and reads them back.
    let addr = d.nbd_addr();
    let port = addr.rsplit_once(':').unwrap().1;
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        s(&pki.ca_only)
    );
    let opts = format!(
        "driver=nbd,server.type=inet,server.host=127.0.0.1,server.port={port},\
         export=vm1/disk0,tls-creds=tls0"
    );
    let out = ok(
        "qemu-io",
        &[
            "--object",
            &object,
            "--image-opts",
            &opts,
            "-c",
            "write -P 0x6b 1M 64k",
            "-c",
            "write -P 0xc3 5M 4k",
            "-c",
            "read -P 0x6b 1M 64k",
        ],
    );
    assert!(!out.contains("verification failed"), "{out}");
    assert!(out.contains("wrote 65536/65536 bytes"), "{out}");

    // Over the unix socket, without TLS, the disk holds exactly that.
    let out = ok("nbdinfo", &[&env.uri("vm1/disk0")]);
    assert!(!out.contains("with TLS"), "{out}");
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");
    let copy = env.dir.join("copy.raw");
    ok("nbdcopy", &[&env.uri("vm1/disk0"), s(&copy)]);
    let mut want = vec![0u8; DISK_SIZE as usize];
    want[MIB as usize..(MIB + 64 * KIB) as usize].fill(0x6b);
    want[(5 * MIB) as usize..(5 * MIB + 4 * KIB) as usize].fill(0xc3);
    let got = std::fs::read(&copy).unwrap();
    assert!(
        got == want,
        "the disk read over the unix socket differs from what qemu-io wrote over TLS"
    );

    // Plain NBD on the TLS listener is refused, by libnbd and by qemu.
    let out = fails("nbdinfo", &[&d.nbd_uri("vm1/disk0")]);
    assert!(out.contains("TLS"), "{out}");
    let out = fails(
        "qemu-io",
        &[
            "-f",
            "raw",
            "-r",
            "-c",
            "read 0 4k",
            &d.nbd_uri("vm1/disk0"),
        ],
    );
    assert!(out.contains("TLS"), "{out}");
    // An unknown export over TLS is refused too.
    fails("nbdinfo", &[&d.nbds_uri("vm9/disk0", &pki.ca_only)]);

    // The daemon stops cleanly with its TCP listeners open.
    env.stop(d, LIMIT);
}

#[test]
fn client_certificates_with_tls_client_ca() {
    let (env, pki) = setup();
    env.machine(DISK_SIZE, "1M", None);
    let token = "0123456789abcdef-client-ca";
    let token_file = env.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    args.extend(["--api-listen".to_string(), "127.0.0.1:0".into()]);
    args.extend(tls_args(&pki));
    args.extend(["--tls-client-ca".to_string(), s(&pki.ca).into()]);
    args.extend(["--token-file".to_string(), s(&token_file).into()]);
    let d = env.serve(&args);

    // NBD: without a client certificate refused, with one served.
    fails("nbdinfo", &[&d.nbds_uri("vm1/disk0", &pki.ca_only)]);
    let out = ok("nbdinfo", &[&d.nbds_uri("vm1/disk0", &pki.with_client)]);
    assert!(out.contains("with TLS"), "{out}");
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");
    // The unix socket needs neither.
    let out = ok("nbdinfo", &[&env.uri("vm1/disk0")]);
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");

    // The API asks for a client certificate too, then for the token
    // (from --token-file).
    let cacert = s(&pki.ca);
    let bearer = format!("Authorization: Bearer {token}");
    let r = curl(&d.url("/v1/status"), &["--cacert", cacert, "-H", &bearer]);
    assert!(
        !r.exit.success() && r.status == 0,
        "no client certificate: {} {} {}",
        r.status,
        r.body,
        r.stderr
    );
    let (cert, key) = (s(&pki.client_cert), s(&pki.client_key));
    let with_cert = ["--cacert", cacert, "--cert", cert, "--key", key];
    let mut a = with_cert.to_vec();
    a.extend(["-H", &bearer]);
    let r = curl(&d.url("/v1/status"), &a);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);
    assert_eq!(r.json()["pid"], d.pid());
    let r = curl(&d.url("/v1/status"), &with_cert);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");

    env.stop(d, LIMIT);
}

// ---------------------------------------------------------------------------
// The API over HTTPS
// ---------------------------------------------------------------------------

#[test]
fn api_over_https_requires_the_token() {
    let (env, pki) = setup();
    let token_path = env.home.join("api.token");
    let mut args = vec!["--api-listen".to_string(), "127.0.0.1:0".into()];
    args.extend(tls_args(&pki));
    let d = env.serve(&args);
    assert!(d.address("NBD on ").is_none(), "no --listen, no NBD on TCP");

    // The token file was created, private to the owner.
    let meta =
        std::fs::metadata(&token_path).unwrap_or_else(|e| panic!("{}: {e}", token_path.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();
    let token = token.trim();
    assert!(token.len() >= 16, "{token:?}");
    assert!(d.log_text().contains(s(&token_path)), "{}", d.log_text());

    let cacert = s(&pki.ca);
    let url = d.url("/v1/status");
    let bearer = format!("Authorization: Bearer {token}");
    let r = curl(&url, &["--cacert", cacert, "-H", &bearer]);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);
    let v = r.json();
    assert_eq!(v["pid"], d.pid(), "{v}");
    assert_eq!(v["jobs_running"], 0, "{v}");
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"), "{v}");
    // Another route, through the same token check.
    let r = curl(&d.url("/v1/exports"), &["--cacert", cacert, "-H", &bearer]);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);

    // No token, a wrong one, the right one without `Bearer`.
    for h in [
        None,
        Some(format!("Authorization: Bearer {token}x")),
        Some("Authorization: Bearer 0123456789abcdef0123".to_string()),
        Some(format!("Authorization: {token}")),
    ] {
        let mut a = vec!["--cacert", cacert];
        if let Some(h) = &h {
            a.extend(["-H", h.as_str()]);
        }
        let r = curl(&url, &a);
        assert_eq!(r.status, 401, "{h:?}: {} {}", r.body, r.stderr);
        let v = r.json();
        assert_eq!(v["error"], "unauthorized", "{h:?}: {v}");
        assert!(v["message"].as_str().unwrap().contains("Bearer"), "{v}");
    }
    // Nothing but the token stops a request: shutdown is refused too.
    let r = curl(&d.url("/v1/shutdown"), &["--cacert", cacert, "-X", "POST"]);
    assert_eq!(r.status, 401, "{}", r.body);

    // TLS: an untrusted server certificate, and plain HTTP, get no answer.
    let r = curl(&url, &["-H", &bearer]);
    assert!(!r.exit.success() && r.status == 0, "{}", r.stderr);
    let r = curl(
        &format!("http://{}/v1/status", d.api_addr()),
        &["-H", &bearer],
    );
    assert!(
        !r.exit.success() && r.status == 0,
        "{} {}",
        r.body,
        r.stderr
    );

    // `serve --stop` talks to the unix socket, which needs no token.
    env.stop(d, LIMIT);
    // A second start keeps the token.
    let d = env.serve(&args);
    assert_eq!(std::fs::read_to_string(&token_path).unwrap().trim(), token);
    let r = curl(&d.url("/v1/status"), &["--cacert", cacert, "-H", &bearer]);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);
    env.stop(d, LIMIT);
}

#[test]
fn a_short_token_file_stops_the_daemon_from_starting() {
    let (env, pki) = setup();
    env.machine(DISK_SIZE, "1M", None);
    let token_file = env.dir.join("short.token");
    std::fs::write(&token_file, "tooshort\n").unwrap();
    let mut c = env.cmd(&["serve", "--api-listen", "127.0.0.1:0", "--token-file"]);
    c.arg(&token_file).args(tls_args(&pki));
    let o = run(c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", tools::describe("serve", &o));
    assert!(
        err.contains("shorter than 16 characters") && err.contains(s(&token_file)),
        "{err}"
    );
    assert!(!err.contains("API on"), "{err}");
    // Refused before binding its sockets or opening the disks.
    assert!(!err.contains("machine disks open"), "{err}");
    assert!(!env.nbd_socket().exists(), "{err}");
    assert!(!env.api_socket().exists(), "{err}");
    // The file is left as it was.
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), "tooshort\n");
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

#[test]
fn tcp_listeners_without_tls_are_refused() {
    let (env, pki) = setup();
    for args in [
        vec!["--listen", "127.0.0.1:0"],
        vec!["--api-listen", "127.0.0.1:0"],
        vec!["--listen", "127.0.0.1:0", "--tls-cert", s(&pki.server_cert)],
    ] {
        let mut c = env.cmd(&["serve"]);
        c.args(&args);
        let o = run(c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{}",
            tools::describe(&format!("{args:?}"), &o)
        );
        assert!(err.to_lowercase().contains("tls"), "{args:?}: {err}");
        assert!(!err.contains("NBD on"), "{args:?}: {err}");
    }
    // Nothing was started.
    assert!(!env.nbd_socket().exists());
    assert!(!env.api_socket().exists());
}
