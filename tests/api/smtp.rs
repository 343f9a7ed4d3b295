//! A real SMTP server for the email tests: aiosmtpd (Python), one process per test on a free port, storing what
//! it accepts in a maildir of its own that the tests read back with `mailparse`.
//!
//! The handler is aiosmtpd's `Mailbox` with two recipients it turns away, so that tests see real SMTP refusals:
//! `refused@…` gets `550 5.1.1` (permanent) and `greylisted@…` gets `451 4.7.1` (try again later).
//!
//! The Python comes from `HERALD_TEST_PYTHON`, else from `.herald/venv` (both set up by `scripts/test.sh`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use uuid::Uuid;

/// How long a server gets to listen, and a message to arrive.
const PATIENCE: Duration = Duration::from_secs(10);

/// The handler the server runs: aiosmtpd's Mailbox, less two recipients.
const HANDLER: &str = r#"from aiosmtpd.handlers import Mailbox


class Handler(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0].lower()
        if local == "refused":
            return "550 5.1.1 No such mailbox here"
        if local == "greylisted":
            return "451 4.7.1 Greylisted, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"
"#;

/// A running aiosmtpd; stopped, and its maildir removed, when dropped.
pub struct SmtpServer {
    pub port: u16,
    child: Child,
    /// Holds the handler module, the server's log and the maildir.
    dir: PathBuf,
}

/// One message as the server stored it.
#[derive(Debug, Clone)]
pub struct ReceivedEmail {
    /// The To header, decoded.
    pub to: String,
    /// The From header, decoded.
    pub from: String,
    /// The Subject header, decoded (RFC 2047).
    pub subject: String,
    /// Every header in order, values decoded.
    pub headers: Vec<(String, String)>,
    /// The text/plain part, transfer encoding and charset undone.
    pub text: String,
    /// The text/html part, if there is one.
    pub html: Option<String>,
}

impl ReceivedEmail {
    /// The first header of that name (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
    }
}

fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("HERALD_TEST_PYTHON").filter(|p| !p.is_empty()) {
        return python.into();
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".herald/venv/bin/python");
    if venv.exists() {
        return venv;
    }
    panic!(
        "no Python with aiosmtpd for the email tests: run scripts/test.sh once (it creates .herald/venv with \
         aiosmtpd), or set HERALD_TEST_PYTHON to a Python that has aiosmtpd installed"
    );
}

/// A port nothing listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("cannot bind a local port")
        .port()
}

impl SmtpServer {
    pub async fn start() -> SmtpServer {
        let dir = std::env::temp_dir().join(format!("herald-smtp-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).expect("cannot create the SMTP server's directory");
        std::fs::write(dir.join("herald_smtp_handler.py"), HANDLER)
            .expect("cannot write the SMTP handler");
        let python = python();
        // A free port may be taken between looking and listening: a few tries.
        for _ in 0..3 {
            let port = free_port();
            let mut child = spawn(&python, &dir, port);
            if listening(&mut child, port).await {
                return SmtpServer { port, child, dir };
            }
        }
        let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
        let _ = std::fs::remove_dir_all(&dir);
        panic!(
            "aiosmtpd did not start with {} (scripts/test.sh sets up a Python with aiosmtpd in .herald/venv); \
             its output:\n{log}",
            python.display()
        );
    }

    /// `smtp://127.0.0.1:port`: plain text, which Herald's rule allows for this machine.
    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    fn maildir(&self) -> PathBuf {
        self.dir.join("maildir")
    }

    /// Every message stored so far, once there are at least `n`, oldest first; panics after 10 s with fewer.
    pub async fn wait_for(&self, n: usize) -> Vec<ReceivedEmail> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let files = self.stored();
            if files.len() >= n {
                return files.iter().map(|path| parse(path)).collect();
            }
            if Instant::now() >= deadline {
                let log = std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default();
                panic!(
                    "expected {n} email(s) on the SMTP server within {} s, it has {}; its log:\n{log}",
                    PATIENCE.as_secs(),
                    files.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The maildir's messages (`new/` and `cur/`), oldest first.
    fn stored(&self) -> Vec<PathBuf> {
        let mut files: Vec<(SystemTime, PathBuf)> = ["new", "cur"]
            .iter()
            .filter_map(|sub| std::fs::read_dir(self.maildir().join(sub)).ok())
            .flatten()
            .filter_map(|entry| entry.ok())
            .filter_map(|entry| {
                let modified = entry.metadata().ok()?.modified().ok()?;
                Some((modified, entry.path()))
            })
            .collect();
        files.sort();
        files.into_iter().map(|(_, path)| path).collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Whether the server came up; `false` (with the process reaped) if it died or never listened.
async fn listening(child: &mut Child, port: u16) -> bool {
    let deadline = Instant::now() + PATIENCE;
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
    false
}

fn spawn(python: &Path, dir: &Path, port: u16) -> Child {
    let log =
        std::fs::File::create(dir.join("server.log")).expect("cannot create the SMTP server's log");
    let err = log.try_clone().expect("cannot share the SMTP server's log");
    Command::new(python)
        .args(["-m", "aiosmtpd", "-n", "-l"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-c", "herald_smtp_handler.Handler"])
        .arg(dir.join("maildir"))
        .env("PYTHONPATH", dir)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start {} -m aiosmtpd: {e}", python.display()))
}

fn parse(path: &Path) -> ReceivedEmail {
    let raw = std::fs::read(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let mail = mailparse::parse_mail(&raw)
        .unwrap_or_else(|e| panic!("{} is not a message: {e}", path.display()));
    let headers: Vec<(String, String)> = mail
        .headers
        .iter()
        .map(|h| (h.get_key(), h.get_value()))
        .collect();
    let header = |name: &str| {
        headers
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.clone())
            .unwrap_or_default()
    };
    let text = part(&mail, "text/plain")
        .unwrap_or_else(|| panic!("{} has no text/plain part", path.display()));
    ReceivedEmail {
        to: header("To"),
        from: header("From"),
        subject: header("Subject"),
        text,
        html: part(&mail, "text/html"),
        headers,
    }
}

/// The first part of that type, depth first, decoded.
fn part(mail: &mailparse::ParsedMail<'_>, mimetype: &str) -> Option<String> {
    if mail.subparts.is_empty() {
        return (mail.ctype.mimetype == mimetype)
            .then(|| mail.get_body().expect("a decodable body"));
    }
    mail.subparts.iter().find_map(|sub| part(sub, mimetype))
}
