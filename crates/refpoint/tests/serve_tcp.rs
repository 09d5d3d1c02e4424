//! `refpoint serve` on TCP: NBD with TLS required (`--listen`), the
//! management API over HTTPS with a bearer token (`--api-listen`), client
//! certificates (`--tls-client-ca`), and the CLI's refusals. Certificates
//! come from rcgen; the clients are nbdinfo, nbdcopy (libnbd-bin), qemu-io
//! (qemu-utils) and curl.
//!
//! Every test runs its own daemon in its own state directory on ports the
//! kernel picks (`127.0.0.1:0`), read back from the daemon's log; the
//! [`Daemon`] guard kills it if the test ends early.

mod common;

use common::s;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use serde_json::Value;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;
const DISK_SIZE: u64 = 8 * MIB;
/// How long any one client or CLI run may take.
const LIMIT: Duration = Duration::from_secs(60);
const CURL: &str = "/usr/bin/curl";

// ---------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------

/// A CA, a server certificate for localhost/127.0.0.1 and a client
/// certificate, as PEM files in the layouts the clients expect:
/// `ca-cert.pem`, and `client-cert.pem` + `client-key.pem` next to it
/// (libnbd's `tls-certificates=DIR`, qemu's `tls-creds-x509,dir=DIR`).
struct Pki {
    server_cert: PathBuf,
    server_key: PathBuf,
    /// The CA certificate (also `ca-cert.pem` in both directories).
    ca: PathBuf,
    /// ca-cert.pem only.
    ca_only: PathBuf,
    /// ca-cert.pem, client-cert.pem, client-key.pem.
    with_client: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    CertifiedIssuer::self_signed(p, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    ca: &CertifiedIssuer<'static, KeyPair>,
    cn: &str,
    names: &[&str],
    usage: ExtendedKeyUsagePurpose,
) -> (String, String) {
    let mut p =
        CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
    p.distinguished_name.push(DnType::CommonName, cn);
    p.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    p.extended_key_usages = vec![usage];
    p.use_authority_key_identifier_extension = true;
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, ca).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl Pki {
    fn new(root: &Path) -> Pki {
        let ca = ca("refpoint test CA");
        let (server_cert, server_key) = leaf(
            &ca,
            "localhost",
            &["localhost", "127.0.0.1"],
            ExtendedKeyUsagePurpose::ServerAuth,
        );
        let (client_cert, client_key) = leaf(
            &ca,
            "refpoint test client",
            &[],
            ExtendedKeyUsagePurpose::ClientAuth,
        );
        let dir = |n: &str| {
            let d = root.join(n);
            std::fs::create_dir_all(&d).unwrap();
            d
        };
        let server = dir("server");
        let ca_only = dir("ca-only");
        let with_client = dir("with-client");
        let put = |d: &Path, n: &str, text: &str| std::fs::write(d.join(n), text).unwrap();
        put(&server, "server-cert.pem", &server_cert);
        put(&server, "server-key.pem", &server_key);
        put(&server, "ca-cert.pem", &ca.pem());
        put(&ca_only, "ca-cert.pem", &ca.pem());
        put(&with_client, "ca-cert.pem", &ca.pem());
        put(&with_client, "client-cert.pem", &client_cert);
        put(&with_client, "client-key.pem", &client_key);
        Pki {
            server_cert: server.join("server-cert.pem"),
            server_key: server.join("server-key.pem"),
            ca: server.join("ca-cert.pem"),
            ca_only,
            with_client,
        }
    }
}

// ---------------------------------------------------------------------------
// Running programs
// ---------------------------------------------------------------------------

/// Runs a program to completion, killing it after [`LIMIT`].
fn run(mut cmd: Command) -> Output {
    let what = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {what}: {e}; these tests need nbdinfo, nbdcopy (package libnbd-bin), \
                 qemu-io (package qemu-utils) and curl"
            )
        });
    let drain = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut v = Vec::new();
            let _ = r.read_to_end(&mut v);
            v
        })
    };
    let out = drain(Box::new(child.stdout.take().unwrap()));
    let err = drain(Box::new(child.stderr.take().unwrap()));
    let t = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if t.elapsed() > LIMIT {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn describe(what: &str, o: &Output) -> String {
    format!(
        "{what}: {}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn tool(prog: &str, args: &[&str]) -> Output {
    let mut c = Command::new(prog);
    c.args(args);
    run(c)
}

/// Runs a client that must succeed; returns its standard output.
fn ok(prog: &str, args: &[&str]) -> String {
    let o = tool(prog, args);
    assert!(
        o.status.success(),
        "{}",
        describe(&format!("{prog} {args:?}"), &o)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs a client that must fail; returns its output and error output.
fn fails(prog: &str, args: &[&str]) -> String {
    let o = tool(prog, args);
    assert!(
        !o.status.success(),
        "{}",
        describe(&format!("{prog} {args:?} (should have failed)"), &o)
    );
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
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
// The CLI and the daemon
// ---------------------------------------------------------------------------

/// A state directory (`REFPOINT_HOME`) and certificates, inside a
/// temporary directory.
struct Env {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    home: PathBuf,
    pki: Pki,
}

impl Env {
    fn new() -> Env {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().to_path_buf();
        Env {
            home: dir.join("home"),
            pki: Pki::new(&dir.join("pki")),
            dir,
            _tmp: tmp,
        }
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_refpoint"));
        c.args(args).env("REFPOINT_HOME", &self.home);
        c
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = run(self.cmd(args));
        assert!(
            o.status.success(),
            "{}",
            describe(&format!("refpoint {args:?}"), &o)
        );
        String::from_utf8(o.stdout).unwrap()
    }

    /// A dynamic disk of [`DISK_SIZE`] bytes as machine `vm1` (`vm1/disk0`).
    fn machine(&self) {
        let disk = self.dir.join("d0.vhdx");
        self.ok(&[
            "vhd",
            "create",
            s(&disk),
            "--size",
            &DISK_SIZE.to_string(),
            "--block-size",
            "1M",
        ]);
        self.ok(&["machine", "create", "vm1", "--disk", s(&disk)]);
    }

    /// `--tls-cert ... --tls-key ...`.
    fn tls_args(&self) -> Vec<String> {
        vec![
            "--tls-cert".into(),
            s(&self.pki.server_cert).into(),
            "--tls-key".into(),
            s(&self.pki.server_key).into(),
        ]
    }

    fn unix_uri(&self, export: &str) -> String {
        format!(
            "nbd+unix:///{export}?socket={}",
            s(&self.home.join("nbd.sock"))
        )
    }

    /// Starts `refpoint serve` with `args`, waiting until it reports its
    /// listeners.
    fn serve(&self, args: &[String]) -> Daemon {
        std::fs::create_dir_all(&self.home).unwrap();
        let n = std::fs::read_dir(&self.dir).unwrap().count();
        let log = self.dir.join(format!("serve-{n}.log"));
        let child = self
            .cmd(&["serve"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("start refpoint serve");
        let mut d = Daemon {
            child,
            log,
            done: false,
            nbd: None,
            api: None,
        };
        let t = Instant::now();
        loop {
            if let Some(st) = d.child.try_wait().unwrap() {
                d.done = true;
                panic!("refpoint serve exited with {st}: {}", d.log_text());
            }
            // Printed once every listener is bound.
            let text = d.log_text();
            if text.contains("refpoint daemon: NBD on") {
                for line in text.lines() {
                    if let Some(rest) = line.strip_prefix("NBD on ") {
                        d.nbd = Some(rest.split(' ').next().unwrap().to_string());
                    }
                    if let Some(rest) = line.strip_prefix("API on https://") {
                        d.api = Some(rest.split(' ').next().unwrap().to_string());
                    }
                }
                return d;
            }
            assert!(
                t.elapsed() < Duration::from_secs(30),
                "refpoint serve did not start: {text}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `refpoint serve --stop`; the daemon must exit cleanly.
    fn stop(&self, mut d: Daemon) {
        let o = run(self.cmd(&["serve", "--stop"]));
        assert!(o.status.success(), "{}", describe("serve --stop", &o));
        let st = d.wait();
        assert!(
            st.success(),
            "the daemon exited with {st}: {}",
            d.log_text()
        );
        let log = d.log_text();
        assert!(log.contains("every disk flushed and closed"), "{log}");
    }
}

/// A running `refpoint serve`; killed (SIGKILL) when dropped unless it
/// already ended.
struct Daemon {
    child: Child,
    log: PathBuf,
    done: bool,
    /// The bound addresses it printed.
    nbd: Option<String>,
    api: Option<String>,
}

impl Daemon {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn nbd_addr(&self) -> &str {
        self.nbd
            .as_deref()
            .unwrap_or_else(|| panic!("no `NBD on` line: {}", self.log_text()))
    }

    fn api_addr(&self) -> &str {
        self.api
            .as_deref()
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

    fn wait(&mut self) -> ExitStatus {
        let t = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                self.done = true;
                return st;
            }
            assert!(
                t.elapsed() < LIMIT,
                "the daemon did not exit within {LIMIT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- daemon log ---\n{}", self.log_text());
        }
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
    let env = Env::new();
    env.machine();
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    args.extend(["--api-listen".to_string(), "127.0.0.1:0".into()]);
    args.extend(env.tls_args());
    let d = env.serve(&args);
    assert!(d.nbd_addr().starts_with("127.0.0.1:"), "{}", d.nbd_addr());
    assert_ne!(d.nbd_addr(), "127.0.0.1:0");
    assert_ne!(d.api_addr(), d.nbd_addr());

    // libnbd over TLS, trusting the CA only.
    let tls = d.nbds_uri("vm1/disk0", &env.pki.ca_only);
    let out = ok("nbdinfo", &[&tls]);
    assert!(out.contains("with TLS"), "{out}");
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");

    // qemu-io over TLS writes two patterns and reads them back.
    let port = d.nbd_addr().rsplit_once(':').unwrap().1;
    let object = format!(
        "tls-creds-x509,id=tls0,dir={},endpoint=client",
        s(&env.pki.ca_only)
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
    let out = ok("nbdinfo", &[&env.unix_uri("vm1/disk0")]);
    assert!(!out.contains("with TLS"), "{out}");
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");
    let copy = env.dir.join("copy.raw");
    ok("nbdcopy", &[&env.unix_uri("vm1/disk0"), s(&copy)]);
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
    fails("nbdinfo", &[&d.nbds_uri("vm9/disk0", &env.pki.ca_only)]);

    // The daemon stops cleanly with its TCP listeners open.
    env.stop(d);
}

#[test]
fn client_certificates_with_tls_client_ca() {
    let env = Env::new();
    env.machine();
    let token = "0123456789abcdef-client-ca";
    let token_file = env.dir.join("token");
    std::fs::write(&token_file, format!("{token}\n")).unwrap();
    let mut args = vec!["--listen".to_string(), "127.0.0.1:0".into()];
    args.extend(["--api-listen".to_string(), "127.0.0.1:0".into()]);
    args.extend(env.tls_args());
    args.extend(["--tls-client-ca".to_string(), s(&env.pki.ca).into()]);
    args.extend(["--token-file".to_string(), s(&token_file).into()]);
    let d = env.serve(&args);

    // NBD: without a client certificate refused, with one served.
    fails("nbdinfo", &[&d.nbds_uri("vm1/disk0", &env.pki.ca_only)]);
    let out = ok("nbdinfo", &[&d.nbds_uri("vm1/disk0", &env.pki.with_client)]);
    assert!(out.contains("with TLS"), "{out}");
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");
    // The unix socket needs neither.
    let out = ok("nbdinfo", &[&env.unix_uri("vm1/disk0")]);
    assert_eq!(export_size(&out), DISK_SIZE, "{out}");

    // The API asks for a client certificate too, then for the token
    // (from --token-file).
    let cacert = s(&env.pki.ca);
    let bearer = format!("Authorization: Bearer {token}");
    let r = curl(&d.url("/v1/status"), &["--cacert", cacert, "-H", &bearer]);
    assert!(
        !r.exit.success() && r.status == 0,
        "no client certificate: {} {} {}",
        r.status,
        r.body,
        r.stderr
    );
    let cert = s(&env.pki.with_client.join("client-cert.pem")).to_string();
    let key = s(&env.pki.with_client.join("client-key.pem")).to_string();
    let with_cert = ["--cacert", cacert, "--cert", &cert, "--key", &key];
    let mut a = with_cert.to_vec();
    a.extend(["-H", &bearer]);
    let r = curl(&d.url("/v1/status"), &a);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);
    assert_eq!(r.json()["pid"], d.child.id());
    let r = curl(&d.url("/v1/status"), &with_cert);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.json()["error"], "unauthorized");

    env.stop(d);
}

// ---------------------------------------------------------------------------
// The API over HTTPS
// ---------------------------------------------------------------------------

#[test]
fn api_over_https_requires_the_token() {
    let env = Env::new();
    let token_path = env.home.join("api.token");
    let mut args = vec!["--api-listen".to_string(), "127.0.0.1:0".into()];
    args.extend(env.tls_args());
    let d = env.serve(&args);
    assert!(d.nbd.is_none(), "no --listen, no NBD on TCP");

    // The token file was created, private to the owner.
    let meta =
        std::fs::metadata(&token_path).unwrap_or_else(|e| panic!("{}: {e}", token_path.display()));
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    let token = std::fs::read_to_string(&token_path).unwrap();
    let token = token.trim();
    assert!(token.len() >= 16, "{token:?}");
    assert!(d.log_text().contains(s(&token_path)), "{}", d.log_text());

    let cacert = s(&env.pki.ca);
    let url = d.url("/v1/status");
    let bearer = format!("Authorization: Bearer {token}");
    let r = curl(&url, &["--cacert", cacert, "-H", &bearer]);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);
    let v = r.json();
    assert_eq!(v["pid"], d.child.id(), "{v}");
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
    env.stop(d);
    // A second start keeps the token.
    let d = env.serve(&args);
    assert_eq!(std::fs::read_to_string(&token_path).unwrap().trim(), token);
    let r = curl(&d.url("/v1/status"), &["--cacert", cacert, "-H", &bearer]);
    assert_eq!(r.status, 200, "{} {}", r.body, r.stderr);
    env.stop(d);
}

#[test]
fn a_short_token_file_stops_the_daemon_from_starting() {
    let env = Env::new();
    env.machine();
    let token_file = env.dir.join("short.token");
    std::fs::write(&token_file, "tooshort\n").unwrap();
    let mut c = env.cmd(&["serve", "--api-listen", "127.0.0.1:0", "--token-file"]);
    c.arg(&token_file).args(env.tls_args());
    let o = run(c);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "{}", describe("serve", &o));
    assert!(
        err.contains("shorter than 16 characters") && err.contains(s(&token_file)),
        "{err}"
    );
    assert!(!err.contains("API on"), "{err}");
    // Refused before binding its sockets or opening the disks.
    assert!(!err.contains("machine disks open"), "{err}");
    assert!(!env.home.join("nbd.sock").exists(), "{err}");
    assert!(!env.home.join("api.sock").exists(), "{err}");
    // The file is left as it was.
    assert_eq!(std::fs::read_to_string(&token_file).unwrap(), "tooshort\n");
}

// ---------------------------------------------------------------------------
// The CLI
// ---------------------------------------------------------------------------

#[test]
fn tcp_listeners_without_tls_are_refused() {
    let env = Env::new();
    for args in [
        vec!["--listen", "127.0.0.1:0"],
        vec!["--api-listen", "127.0.0.1:0"],
        vec![
            "--listen",
            "127.0.0.1:0",
            "--tls-cert",
            s(&env.pki.server_cert),
        ],
    ] {
        let mut c = env.cmd(&["serve"]);
        c.args(&args);
        let o = run(c);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{}",
            describe(&format!("{args:?}"), &o)
        );
        assert!(err.to_lowercase().contains("tls"), "{args:?}: {err}");
        assert!(!err.contains("NBD on"), "{args:?}: {err}");
    }
    // Nothing was started.
    assert!(!env.home.join("nbd.sock").exists());
    assert!(!env.home.join("api.sock").exists());
}
