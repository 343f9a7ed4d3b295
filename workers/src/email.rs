//! Email out: an SMTP client (lettre, pooled connections, rustls with the Mozilla root store so that a minimal
//! image needs no CA bundle) and the classification of its answers into delivered, retry later (4xx replies,
//! refused connections, timeouts, TLS trouble) and permanent (5xx replies, a server that lacks what the
//! configuration demands, a message that cannot be built).
//!
//! Which connection security is used follows one rule, written on [`EmailConfig::url`]: TLS unless the server is
//! on this machine or the URL says `tls=none`, and credentials never cross the network in the clear.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use domain::SendFailure;
use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::transport::smtp::PoolConfig;
use lettre::{Address, AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use reqwest::Url;
use uuid::Uuid;

/// The longest address Herald accepts (RFC 5321's path limit less the angle brackets).
pub const MAX_ADDRESS_LEN: usize = 254;

/// The longest List-Unsubscribe URL Herald puts in a header (a header line may not pass 998 octets).
const MAX_UNSUBSCRIBE_URL_LEN: usize = 900;

/// SMTP connections kept open for reuse.
const POOL_SIZE: u32 = 4;

/// How long an unused pooled connection stays open.
const POOL_IDLE: Duration = Duration::from_secs(60);

const LIST_UNSUBSCRIBE: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe");
const LIST_UNSUBSCRIBE_POST: HeaderName = HeaderName::new_from_ascii_str("List-Unsubscribe-Post");

/// How Herald reaches its SMTP server.
#[derive(Clone)]
pub struct EmailConfig {
    /// Where the SMTP server is, and how to talk to it:
    ///
    /// - `smtps://host[:port]`: implicit TLS from the first byte (port 465 when not given).
    /// - `smtp://host[:port]?tls=starttls`: plain connection upgraded with STARTTLS, which is required: a server
    ///   that does not offer it is refused (port 587 when not given).
    /// - `smtp://host[:port]?tls=none`: no encryption at all (port 25 when not given).
    /// - `smtp://host[:port]` without `tls`: `none` when the host is this machine (`localhost`, `127.0.0.0/8`,
    ///   `::1`), `starttls` for any other host.
    ///
    /// Credentials go in the URL, percent-encoded: `smtps://user:p%40ss@host`. They are refused on an unencrypted
    /// connection to another machine. A path, a fragment or any query parameter other than `tls` is refused.
    pub url: String,
    /// The From mailbox, e.g. `Herald <herald@example.com>`. Its domain is also the right-hand side of the
    /// Message-IDs Herald makes.
    pub from: String,
    /// The limit on each network step: connecting, the TLS handshake, each SMTP command.
    pub timeout: Duration,
}

impl fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailConfig")
            .field("url", &redact_url(&self.url))
            .field("from", &self.from)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// One email to send.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    /// The bare recipient address (see [`Mailer::validate_address`]).
    pub to: String,
    pub subject: String,
    /// The text/plain body, always sent.
    pub text: String,
    /// A text/html alternative: with it the message is multipart/alternative.
    pub html: Option<String>,
    /// An `https` (or, for development, `http`) URL that unsubscribes the recipient with one POST: it becomes the
    /// `List-Unsubscribe` header, with `List-Unsubscribe-Post: List-Unsubscribe=One-Click` (RFC 8058).
    pub list_unsubscribe: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmailError {
    /// The SMTP URL is not usable; `url` has its password replaced.
    #[error("bad SMTP URL {url}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("bad From mailbox {from:?}: {reason}")]
    BadFrom { from: String, reason: String },
    #[error("bad email address: {0}")]
    BadAddress(String),
}

/// How the connection to the server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    None,
    StartTls,
    Implicit,
}

/// An SMTP URL, understood.
#[derive(Clone, PartialEq, Eq)]
struct Endpoint {
    /// A name or an IP address, without brackets.
    host: String,
    port: u16,
    security: Security,
    credentials: Option<(String, String)>,
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Endpoint")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("security", &self.security)
            .field("user", &self.credentials.as_ref().map(|(user, _)| user))
            .finish()
    }
}

impl Endpoint {
    fn parse(raw: &str) -> Result<Self, EmailError> {
        let bad = |reason: &str| EmailError::BadUrl {
            url: redact_url(raw),
            reason: reason.to_owned(),
        };
        let url = Url::parse(raw.trim()).map_err(|e| bad(&e.to_string()))?;
        let implicit = match url.scheme() {
            "smtp" => false,
            "smtps" => true,
            _ => return Err(bad("the scheme must be smtp or smtps")),
        };
        let host = url
            .host_str()
            .filter(|h| !h.is_empty())
            .ok_or_else(|| bad("no host"))?;
        let host = host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        if !matches!(url.path(), "" | "/") {
            return Err(bad("a path is not allowed"));
        }
        if url.fragment().is_some() {
            return Err(bad("a fragment is not allowed"));
        }
        let mut tls = None;
        for (key, value) in url.query_pairs() {
            match (key.as_ref(), tls.is_some()) {
                ("tls", false) => tls = Some(value.into_owned()),
                ("tls", true) => return Err(bad("tls is given twice")),
                _ => {
                    return Err(bad(&format!(
                        "unknown parameter {key:?} (only tls is known)"
                    )))
                }
            }
        }
        let local = is_loopback(&host);
        let security = match (implicit, tls.as_deref()) {
            (true, None) => Security::Implicit,
            (true, Some(_)) => return Err(bad("smtps is always TLS: drop the tls parameter")),
            (false, Some("starttls")) => Security::StartTls,
            (false, Some("none")) => Security::None,
            (false, Some(_)) => return Err(bad("tls must be starttls or none")),
            (false, None) if local => Security::None,
            (false, None) => Security::StartTls,
        };
        let credentials = match (url.username(), url.password()) {
            ("", None) => None,
            ("", Some(_)) => return Err(bad("a password without a user name")),
            (user, password) => {
                let user = percent_decode(user)
                    .ok_or_else(|| bad("the user name is not valid percent-encoded UTF-8"))?;
                let password = percent_decode(password.unwrap_or(""))
                    .ok_or_else(|| bad("the password is not valid percent-encoded UTF-8"))?;
                Some((user, password))
            }
        };
        if credentials.is_some() && security == Security::None && !local {
            return Err(bad(
                "credentials would cross the network unencrypted: use smtps:// or tls=starttls",
            ));
        }
        let port = url.port().unwrap_or(match security {
            Security::None => 25,
            Security::StartTls => 587,
            Security::Implicit => 465,
        });
        Ok(Self {
            host,
            port,
            security,
            credentials,
        })
    }

    fn password(&self) -> Option<&str> {
        self.credentials
            .as_ref()
            .map(|(_, password)| password.as_str())
            .filter(|p| !p.is_empty())
    }
}

fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// `%XX` escapes to bytes, the whole read as UTF-8; `None` for a broken escape or bytes that are not UTF-8.
fn percent_decode(raw: &str) -> Option<String> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = raw.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with the password, if it has one, replaced by `***`. Works on text that is not a valid URL too.
pub fn redact_url(raw: &str) -> String {
    let Some(scheme_end) = raw.find("://") else {
        return raw.to_owned();
    };
    let authority_start = scheme_end + 3;
    let rest = &raw[authority_start..];
    let authority_len = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_len];
    let Some(at) = authority.rfind('@') else {
        return raw.to_owned();
    };
    let Some(colon) = authority[..at].find(':') else {
        return raw.to_owned();
    };
    let password_start = authority_start + colon + 1;
    let password_end = authority_start + at;
    format!("{}***{}", &raw[..password_start], &raw[password_end..])
}

/// Sends Herald's email through one SMTP server, over a small pool of reused connections.
#[derive(Clone)]
pub struct Mailer {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    endpoint: Endpoint,
    from: Mailbox,
    /// The right-hand side of Message-IDs: the From address's domain.
    message_id_domain: String,
}

impl fmt::Debug for Mailer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Mailer")
            .field("endpoint", &self.endpoint)
            .field("from", &self.from.to_string())
            .finish()
    }
}

/// Check a configuration without building a mailer (no runtime needed): the URL and the From mailbox.
pub fn check(config: &EmailConfig) -> Result<(), EmailError> {
    Endpoint::parse(&config.url)?;
    config
        .from
        .trim()
        .parse::<Mailbox>()
        .map_err(|e| EmailError::BadFrom {
            from: config.from.clone(),
            reason: e.to_string(),
        })?;
    Ok(())
}

impl Mailer {
    /// Checks the configuration and sets up the connection pool; connects nothing yet. Call it inside a Tokio
    /// runtime: the pool runs a task that closes idle connections.
    pub fn new(config: EmailConfig) -> Result<Self, EmailError> {
        let endpoint = Endpoint::parse(&config.url)?;
        let from: Mailbox =
            config
                .from
                .trim()
                .parse()
                .map_err(|e: lettre::address::AddressError| EmailError::BadFrom {
                    from: config.from.clone(),
                    reason: e.to_string(),
                })?;
        let message_id_domain = from.email.domain().to_lowercase();

        let tls_parameters = || {
            TlsParameters::new(endpoint.host.clone()).map_err(|e| EmailError::BadUrl {
                url: redact_url(&config.url),
                reason: format!("cannot set up TLS for {}: {e}", endpoint.host),
            })
        };
        let tls = match endpoint.security {
            Security::None => Tls::None,
            Security::StartTls => Tls::Required(tls_parameters()?),
            Security::Implicit => Tls::Wrapper(tls_parameters()?),
        };
        let mut builder =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(endpoint.host.clone())
                .port(endpoint.port)
                .tls(tls)
                .timeout(Some(config.timeout))
                .pool_config(
                    PoolConfig::new()
                        .max_size(POOL_SIZE)
                        .idle_timeout(POOL_IDLE),
                );
        if let Some((user, password)) = &endpoint.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            endpoint,
            from,
            message_id_domain,
        })
    }

    /// A recipient address as Herald stores it: trimmed, the domain lowercased (the local part is left alone: it
    /// may be case-sensitive). Only the bare address: a display name or angle brackets are refused.
    pub fn validate_address(raw: &str) -> Result<String, EmailError> {
        let trimmed = raw.trim();
        if trimmed.is_empty() {
            return Err(EmailError::BadAddress("it is empty".to_owned()));
        }
        if trimmed.len() > MAX_ADDRESS_LEN {
            return Err(EmailError::BadAddress(format!(
                "it is longer than {MAX_ADDRESS_LEN} characters"
            )));
        }
        if trimmed.contains(['<', '>']) {
            return Err(EmailError::BadAddress(
                "give the bare address (name@example.com), without a display name or angle brackets".to_owned(),
            ));
        }
        if trimmed.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(EmailError::BadAddress(
                "it contains spaces or control characters".to_owned(),
            ));
        }
        let address: Address = trimmed
            .parse()
            .map_err(|e: lettre::address::AddressError| EmailError::BadAddress(e.to_string()))?;
        Ok(format!(
            "{}@{}",
            address.user(),
            address.domain().to_lowercase()
        ))
    }

    /// Send; returns the Message-ID Herald put on the message (`<uuid@from-domain>`, with the angle brackets).
    pub async fn send(&self, email: &OutgoingEmail) -> Result<String, SendFailure> {
        self.send_as(email, &Uuid::new_v4().simple().to_string())
            .await
    }

    /// Send with the Message-ID `<{local}@from-domain>`. A notification passes its own id: should an attempt be
    /// repeated after a crash, both copies carry one Message-ID, which mail stores and clients use to show a
    /// message once.
    pub async fn send_as(&self, email: &OutgoingEmail, local: &str) -> Result<String, SendFailure> {
        let message_id = format!("<{local}@{}>", self.message_id_domain);
        let message = self.build(email, &message_id)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(message_id),
            Err(e) => Err(self.classify(&e)),
        }
    }

    fn build(&self, email: &OutgoingEmail, message_id: &str) -> Result<Message, SendFailure> {
        let to = Self::validate_address(&email.to)
            .and_then(|a| {
                a.parse::<Address>()
                    .map_err(|e| EmailError::BadAddress(e.to_string()))
            })
            .map_err(|e| permanent(format!("recipient: {e}")))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .to(Mailbox::new(None, to))
            .subject(email.subject.clone())
            .message_id(Some(message_id.to_owned()));
        if let Some(raw) = &email.list_unsubscribe {
            let url = unsubscribe_url(raw)
                .map_err(|reason| permanent(format!("List-Unsubscribe: {reason}")))?;
            builder = builder
                .raw_header(HeaderValue::new(LIST_UNSUBSCRIBE, format!("<{url}>")))
                .raw_header(HeaderValue::new(
                    LIST_UNSUBSCRIBE_POST,
                    "List-Unsubscribe=One-Click".to_owned(),
                ));
        }
        let built = match &email.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                email.text.clone(),
                html.clone(),
            )),
            None => builder.singlepart(SinglePart::plain(email.text.clone())),
        };
        built.map_err(|e| permanent(format!("cannot build the message: {e}")))
    }

    fn classify(&self, error: &lettre::transport::smtp::Error) -> SendFailure {
        let mut description = error.to_string();
        if let Some(password) = self.endpoint.password() {
            // lettre does not echo credentials, but a server's reply text might.
            description = description.replace(password, "***");
        }
        if let Some(code) = error.status() {
            return SendFailure {
                code: Some(i64::from(u16::from(code))),
                description,
                retryable: error.is_transient(),
                retry_after_secs: None,
            };
        }
        SendFailure {
            code: None,
            description,
            // A client error is a server without what the configuration asks for (STARTTLS, an authentication
            // mechanism, SMTPUTF8): trying again changes nothing. Everything else is the network, a timeout, TLS
            // or a garbled reply, which may pass.
            retryable: !error.is_client(),
            retry_after_secs: None,
        }
    }
}

fn permanent(description: String) -> SendFailure {
    SendFailure {
        code: None,
        description,
        retryable: false,
        retry_after_secs: None,
    }
}

fn unsubscribe_url(raw: &str) -> Result<String, String> {
    let url = Url::parse(raw.trim()).map_err(|e| format!("not a URL: {e}"))?;
    if !matches!(url.scheme(), "https" | "http") {
        return Err("the URL must be https (or http)".to_owned());
    }
    let url = String::from(url);
    if url.len() > MAX_UNSUBSCRIBE_URL_LEN {
        return Err(format!(
            "the URL is longer than {MAX_UNSUBSCRIBE_URL_LEN} characters"
        ));
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(raw: &str) -> Endpoint {
        Endpoint::parse(raw).unwrap_or_else(|e| panic!("{raw}: {e}"))
    }

    fn refused(raw: &str) -> String {
        match Endpoint::parse(raw) {
            Ok(e) => panic!("{raw} was accepted as {e:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn loopback_hosts_default_to_plain_and_port_25() {
        for raw in [
            "smtp://127.0.0.1",
            "smtp://localhost",
            "smtp://LOCALHOST",
            "smtp://[::1]",
            "smtp://127.0.0.2",
        ] {
            let e = endpoint(raw);
            assert_eq!(e.security, Security::None, "{raw}");
            assert_eq!(e.port, 25, "{raw}");
        }
        let e = endpoint("smtp://127.0.0.1:2525");
        assert_eq!((e.host.as_str(), e.port), ("127.0.0.1", 2525));
        assert_eq!(endpoint("smtp://[::1]:2525").host, "::1");
    }

    #[test]
    fn other_hosts_default_to_starttls_on_587() {
        let e = endpoint("smtp://mail.example.com");
        assert_eq!((e.security, e.port), (Security::StartTls, 587));
        let e = endpoint("smtp://mail.example.com:2587");
        assert_eq!((e.security, e.port), (Security::StartTls, 2587));
        let e = endpoint("smtp://127.0.0.1?tls=starttls");
        assert_eq!((e.security, e.port), (Security::StartTls, 587));
    }

    #[test]
    fn tls_none_and_smtps() {
        let e = endpoint("smtp://relay.internal?tls=none");
        assert_eq!((e.security, e.port), (Security::None, 25));
        let e = endpoint("smtps://mail.example.com");
        assert_eq!((e.security, e.port), (Security::Implicit, 465));
        let e = endpoint("smtps://mail.example.com:2465/");
        assert_eq!((e.security, e.port), (Security::Implicit, 2465));
    }

    #[test]
    fn credentials_are_percent_decoded() {
        let e = endpoint("smtps://herald%40example.com:p%40ss%3Aw%2Fo%20rd@mail.example.com");
        assert_eq!(
            e.credentials,
            Some(("herald@example.com".to_owned(), "p@ss:w/o rd".to_owned()))
        );
        assert_eq!(
            endpoint("smtp://user@localhost").credentials,
            Some(("user".to_owned(), String::new()))
        );
        assert_eq!(endpoint("smtp://localhost").credentials, None);
        // Plain text is fine to this machine.
        assert!(endpoint("smtp://user:secret@127.0.0.1:2525")
            .credentials
            .is_some());
        assert!(!format!("{:?}", endpoint("smtp://user:secret@127.0.0.1")).contains("secret"));
    }

    #[test]
    fn bad_urls_are_refused_without_the_password() {
        for (raw, why) in [
            ("http://mail.example.com", "scheme"),
            ("mail.example.com:25", "scheme"),
            ("smtp://", "host"),
            ("smtp://mail.example.com/herald", "path"),
            ("smtp://mail.example.com#x", "fragment"),
            ("smtp://mail.example.com?tls=required", "starttls or none"),
            ("smtp://mail.example.com?tls=none&tls=starttls", "twice"),
            ("smtp://mail.example.com?timeout=5", "unknown parameter"),
            ("smtps://mail.example.com?tls=starttls", "always TLS"),
            (
                "smtp://user:secret@mail.example.com?tls=none",
                "unencrypted",
            ),
            ("smtps://:secret@mail.example.com", "without a user"),
            ("smtps://user:bad%ZZsecret@mail.example.com", "percent"),
            ("smtps://user:%FFsecret@mail.example.com", "percent"),
        ] {
            let message = refused(raw);
            assert!(message.contains(why), "{raw}: {message}");
            assert!(!message.contains("secret"), "{raw}: {message}");
        }
    }

    #[test]
    fn redaction() {
        assert_eq!(
            redact_url("smtps://user:secret@host:465"),
            "smtps://user:***@host:465"
        );
        assert_eq!(
            redact_url("smtp://user:se@cret@host/x?tls=none"),
            "smtp://user:***@host/x?tls=none"
        );
        assert_eq!(redact_url("smtp://user@host"), "smtp://user@host");
        assert_eq!(redact_url("smtp://host:25"), "smtp://host:25");
        assert_eq!(redact_url("smtp://host/a:b@c"), "smtp://host/a:b@c");
        assert_eq!(redact_url("not a url"), "not a url");
        assert_eq!(redact_url("smtp://u:p w@ho st"), "smtp://u:***@ho st");
        let config = EmailConfig {
            url: "smtps://herald:hunter22@mail.example.com".to_owned(),
            from: "Herald <herald@example.com>".to_owned(),
            timeout: Duration::from_secs(10),
        };
        let debug = format!("{config:?}");
        assert!(!debug.contains("hunter22"), "{debug}");
        assert!(
            debug.contains("smtps://herald:***@mail.example.com"),
            "{debug}"
        );
    }

    #[test]
    fn addresses_are_trimmed_and_their_domain_lowercased() {
        assert_eq!(
            Mailer::validate_address("  Ann.Smith@Example.COM \n").unwrap(),
            "Ann.Smith@example.com"
        );
        assert_eq!(
            Mailer::validate_address("a+ci@sub.example.org").unwrap(),
            "a+ci@sub.example.org"
        );
        assert_eq!(
            Mailer::validate_address("jörg@bücher.DE").unwrap(),
            "jörg@bücher.de"
        );
    }

    #[test]
    fn bad_addresses_are_refused() {
        let long = format!("{}@example.com", "a".repeat(MAX_ADDRESS_LEN));
        for raw in [
            "",
            "   ",
            "Ann <ann@example.com>",
            "<ann@example.com>",
            "ann smith@example.com",
            "ann@example.com\r\nBcc: eve@example.com",
            "ann",
            "ann@",
            "@example.com",
            "ann@@example.com",
            "ann@exa mple.com",
            "ann@-example-.com",
            long.as_str(),
        ] {
            assert!(
                Mailer::validate_address(raw).is_err(),
                "{raw:?} was accepted"
            );
        }
        let too_long = Mailer::validate_address(&long).unwrap_err().to_string();
        assert!(too_long.contains("254"), "{too_long}");
        let named = Mailer::validate_address("Ann <ann@example.com>")
            .unwrap_err()
            .to_string();
        assert!(named.contains("display name"), "{named}");
    }

    #[test]
    fn unsubscribe_urls() {
        assert_eq!(
            unsubscribe_url(" https://herald.example.com/u/abc?t=1 ").unwrap(),
            "https://herald.example.com/u/abc?t=1"
        );
        assert!(unsubscribe_url("mailto:unsub@example.com").is_err());
        assert!(unsubscribe_url("nonsense").is_err());
        assert!(unsubscribe_url(&format!("https://example.com/{}", "a".repeat(1000))).is_err());
        // Line breaks cannot smuggle a header in: the URL parser drops them.
        assert_eq!(
            unsubscribe_url("https://example.com/u\r\nBcc: eve@example.com").unwrap(),
            "https://example.com/uBcc:%20eve@example.com"
        );
    }

    #[tokio::test]
    async fn mailer_checks_the_from_mailbox() {
        let config = |from: &str| EmailConfig {
            url: "smtp://127.0.0.1:2525".to_owned(),
            from: from.to_owned(),
            timeout: Duration::from_secs(5),
        };
        let mailer = Mailer::new(config("Herald <herald@Example.com>")).unwrap();
        assert_eq!(mailer.message_id_domain, "example.com");
        assert!(matches!(
            Mailer::new(config("not an address")),
            Err(EmailError::BadFrom { .. })
        ));
        assert!(matches!(
            Mailer::new(EmailConfig {
                url: "smtp://user:secret@mail.example.com?tls=none".to_owned(),
                ..config("herald@example.com")
            }),
            Err(EmailError::BadUrl { .. })
        ));
    }

    #[tokio::test]
    async fn a_message_is_built_with_the_headers_herald_promises() {
        let mailer = Mailer::new(EmailConfig {
            url: "smtp://127.0.0.1:2525".to_owned(),
            from: "Herald <herald@example.com>".to_owned(),
            timeout: Duration::from_secs(5),
        })
        .unwrap();
        let email = OutgoingEmail {
            to: "Ann@Example.com".to_owned(),
            subject: "Build failed".to_owned(),
            text: "main is red".to_owned(),
            html: Some("<p>main is <b>red</b></p>".to_owned()),
            list_unsubscribe: Some("https://herald.example.com/unsubscribe/abc".to_owned()),
        };
        let message = mailer.build(&email, "<id@example.com>").unwrap();
        let raw = String::from_utf8(message.formatted()).unwrap();
        assert!(raw.contains("Message-ID: <id@example.com>\r\n"), "{raw}");
        assert!(raw.contains("To: Ann@example.com\r\n"), "{raw}");
        assert!(
            raw.contains("List-Unsubscribe: <https://herald.example.com/unsubscribe/abc>\r\n"),
            "{raw}"
        );
        assert!(
            raw.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click\r\n"),
            "{raw}"
        );
        assert!(raw.contains("multipart/alternative"), "{raw}");

        let plain = mailer
            .build(
                &OutgoingEmail {
                    html: None,
                    list_unsubscribe: None,
                    ..email.clone()
                },
                "<id@example.com>",
            )
            .unwrap();
        let raw = String::from_utf8(plain.formatted()).unwrap();
        assert!(!raw.contains("multipart"), "{raw}");
        assert!(!raw.contains("List-Unsubscribe"), "{raw}");

        let failure = mailer
            .build(
                &OutgoingEmail {
                    to: "Ann <ann@example.com>".to_owned(),
                    ..email.clone()
                },
                "<id@example.com>",
            )
            .unwrap_err();
        assert!(!failure.retryable);
        let failure = mailer
            .build(
                &OutgoingEmail {
                    list_unsubscribe: Some("ftp://x".to_owned()),
                    ..email
                },
                "<id@example.com>",
            )
            .unwrap_err();
        assert!(!failure.retryable);
    }
}
