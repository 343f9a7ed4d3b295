//! What mail systems say about addresses Herald wrote to: SendGrid's Event Webhook, RFC 3464 delivery status
//! notifications (bounces, as Postfix, Exim and most MTAs send them) and RFC 5965 abuse reports (ARF complaints,
//! as mailbox providers' feedback loops send them), read into one verdict per address: a hard bounce, a
//! complaint, or nothing to act on.
//!
//! Pure functions over bytes: this module decides, it never looks up or disables a contact. It errs on the side
//! of ignoring: a temporary failure, a delay or a report it does not understand must never turn off someone's
//! notifications, so only a permanent (5.x.x) failure or an explicit complaint is acted on.

use mailparse::{MailHeaderMap, ParsedMail};
use serde::Deserialize;
use serde_json::Value;

/// Longest detail kept in a disable reason: enough for a status and the remote server's words, short enough to
/// read in a list (the API bounds operators' reasons to 200 characters; this stays well inside that).
const MAX_DETAIL_CHARS: usize = 160;

/// What one event, or one recipient of a report, says about an address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Feedback {
    /// The address does not exist or refuses mail for good: writing to it again only hurts Herald's reputation.
    HardBounce { address: String, detail: String },
    /// The address's owner reported a message as spam: they do not want it, whatever their subscriptions say.
    Complaint { address: String, detail: String },
    /// Nothing to act on: delivered, deferred, opened, a temporary refusal, an unsubscribe (handled elsewhere).
    Ignore,
}

impl Feedback {
    /// The address to stop writing to, if any.
    pub fn address(&self) -> Option<&str> {
        match self {
            Self::HardBounce { address, .. } | Self::Complaint { address, .. } => Some(address),
            Self::Ignore => None,
        }
    }

    /// The reason a contact is disabled with (`email_bounced: 5.1.1 user unknown`), if any: the prefix is
    /// stable for programs, the rest is for the person who wonders why their address was turned off.
    pub fn reason(&self) -> Option<String> {
        match self {
            Self::HardBounce { detail, .. } => Some(format!("email_bounced: {detail}")),
            Self::Complaint { detail, .. } => Some(format!("email_complaint: {detail}")),
            Self::Ignore => None,
        }
    }
}

/// Why a body could not be read as feedback at all. Nothing in it is acted on.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BounceError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    Malformed(String),
    /// JSON, but not SendGrid's shape: an array of events, each with `email` and `event`.
    #[error("not a SendGrid event batch: {0}")]
    Invalid(String),
    /// A message that is not a delivery status or feedback report.
    #[error("{0}")]
    NotAReport(String),
}

// ---------------------------------------------------------------------------------------------------------------
// SendGrid

/// One event of a SendGrid Event Webhook batch: only the fields a verdict needs; the rest (timestamps, ids,
/// custom arguments) is ignored. Optional fields are read leniently, since SendGrid adds and retypes fields.
#[derive(Debug, Deserialize)]
struct SendGridEvent {
    email: String,
    event: String,
    #[serde(default, rename = "type")]
    kind: Option<Value>,
    #[serde(default)]
    reason: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
}

fn text(value: &Option<Value>) -> String {
    match value {
        Some(Value::String(s)) => s.trim().to_owned(),
        Some(Value::Null) | None => String::new(),
        Some(other) => other.to_string(),
    }
}

/// Read a SendGrid Event Webhook POST (a JSON array of events) into one verdict per event, in order.
///
/// `bounce` of type `bounce` is a hard bounce and of type `blocked` a temporary refusal (ignored); `dropped`
/// counts when SendGrid dropped the message because the address bounced before, is invalid or reported spam;
/// `spamreport` is a complaint. Every other event is ignored. One malformed event refuses the whole batch, so
/// a batch is acted on entirely or not at all.
pub fn sendgrid_events(body: &[u8]) -> Result<Vec<Feedback>, BounceError> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| BounceError::Malformed(e.to_string()))?;
    if !value.is_array() {
        return Err(BounceError::Invalid(
            "expected a JSON array of events".into(),
        ));
    }
    let events: Vec<SendGridEvent> =
        serde_json::from_value(value).map_err(|e| BounceError::Invalid(e.to_string()))?;
    Ok(events.iter().map(sendgrid_event).collect())
}

fn sendgrid_event(event: &SendGridEvent) -> Feedback {
    let address = event.email.trim().to_owned();
    if address.is_empty() {
        return Feedback::Ignore;
    }
    let reason = text(&event.reason);
    let status = text(&event.status);
    match event.event.trim().to_ascii_lowercase().as_str() {
        "bounce" => {
            let kind = text(&event.kind).to_ascii_lowercase();
            // Older payloads have no `type`; then the status decides, and only a permanent one counts.
            let hard = match kind.as_str() {
                "bounce" => true,
                "" => !status.starts_with('4'),
                _ => false,
            };
            if !hard {
                return Feedback::Ignore;
            }
            Feedback::HardBounce {
                address,
                detail: detail(&status, &reason, "bounced"),
            }
        }
        "dropped" => {
            let lower = reason.to_ascii_lowercase();
            if lower.contains("spam reporting address") {
                Feedback::Complaint {
                    address,
                    detail: detail("", &format!("dropped: {reason}"), "dropped"),
                }
            } else if lower.contains("bounced address")
                || lower == "invalid"
                || lower.starts_with("invalid address")
                || lower.starts_with("invalid email")
            {
                Feedback::HardBounce {
                    address,
                    detail: detail("", &format!("dropped: {reason}"), "dropped"),
                }
            } else {
                // Unsubscribed addresses, spam content, invalid headers: nothing wrong with the address.
                Feedback::Ignore
            }
        }
        "spamreport" => Feedback::Complaint {
            address,
            detail: "spam report".into(),
        },
        _ => Feedback::Ignore,
    }
}

/// `status text`, without control characters, bounded; `fallback` when both are empty.
fn detail(status: &str, text: &str, fallback: &str) -> String {
    let joined = format!("{status} {text}");
    let cleaned: String = joined
        .split(|c: char| c.is_control() || c.is_whitespace())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if cleaned.is_empty() {
        return fallback.to_owned();
    }
    if cleaned.chars().count() <= MAX_DETAIL_CHARS {
        return cleaned;
    }
    let cut: String = cleaned.chars().take(MAX_DETAIL_CHARS - 1).collect();
    format!("{}…", cut.trim_end())
}

// ---------------------------------------------------------------------------------------------------------------
// RFC 3464 and RFC 5965 reports

/// Read a raw bounce or complaint message (as an MTA pipes it) into one verdict per recipient it reports on.
///
/// A `multipart/report; report-type=delivery-status` (RFC 3464) gives one verdict per recipient block: `Action:
/// failed` with a `5.x.x` status is a hard bounce, anything else (`delayed`, `delivered`, `relayed`, a 4.x.x
/// status) is ignored. A `multipart/report; report-type=feedback-report` (RFC 5965) with `Feedback-Type: abuse`
/// is a complaint about its `Original-Rcpt-To` addresses, or else about the `To` of the included message. A
/// message that is neither is refused: guessing at free-text bounces is how the wrong address gets disabled.
pub fn mail_report(raw: &[u8]) -> Result<Vec<Feedback>, BounceError> {
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Err(BounceError::NotAReport("the body is empty".into()));
    }
    let mail = mailparse::parse_mail(raw)
        .map_err(|e| BounceError::NotAReport(format!("not a mail message: {e}")))?;
    let report = find_report(&mail).ok_or_else(|| {
        BounceError::NotAReport(format!(
            "expected a multipart/report (an RFC 3464 delivery status notification or an RFC 5965 abuse \
             report), got {}",
            mail.ctype.mimetype
        ))
    })?;
    let report_type = report
        .ctype
        .params
        .get("report-type")
        .map(|t| t.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match report_type.as_str() {
        "delivery-status" | "global-delivery-status" => delivery_status(report),
        "feedback-report" => feedback_report(report),
        other => Err(BounceError::NotAReport(format!(
            "a multipart/report of type {other:?}: expected delivery-status or feedback-report"
        ))),
    }
}

/// The report itself, or one nested in the message (some MTAs forward bounces wrapped in another message).
fn find_report<'a>(mail: &'a ParsedMail<'a>) -> Option<&'a ParsedMail<'a>> {
    if mail.ctype.mimetype == "multipart/report" {
        return Some(mail);
    }
    mail.subparts.iter().find_map(find_report)
}

fn part<'a>(report: &'a ParsedMail<'a>, mimetypes: &[&str]) -> Option<&'a ParsedMail<'a>> {
    report
        .subparts
        .iter()
        .find(|p| mimetypes.contains(&p.ctype.mimetype.as_str()))
}

/// The header blocks of a `message/delivery-status` body: per-message fields first, then one block per
/// recipient, separated by blank lines.
fn header_blocks(body: &[u8]) -> Result<Vec<Vec<(String, String)>>, BounceError> {
    let mut blocks = Vec::new();
    let mut rest = body;
    loop {
        let skip = rest
            .iter()
            .position(|b| !b.is_ascii_whitespace())
            .unwrap_or(rest.len());
        rest = &rest[skip..];
        if rest.is_empty() {
            return Ok(blocks);
        }
        let (headers, consumed) = mailparse::parse_headers(rest)
            .map_err(|e| BounceError::NotAReport(format!("unreadable delivery status: {e}")))?;
        if consumed == 0 {
            return Ok(blocks);
        }
        blocks.push(
            headers
                .iter()
                .map(|h| (h.get_key().to_ascii_lowercase(), h.get_value()))
                .collect(),
        );
        rest = &rest[consumed.min(rest.len())..];
    }
}

fn field<'a>(block: &'a [(String, String)], name: &str) -> Option<&'a str> {
    block
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.trim())
        .filter(|v| !v.is_empty())
}

/// `rfc822; ann@example.com` → `ann@example.com` (a bare address is taken as it is).
fn recipient(value: &str) -> Option<String> {
    let address = value
        .split_once(';')
        .map_or(value, |(_, a)| a)
        .trim()
        .trim_start_matches('<')
        .trim_end_matches('>')
        .trim();
    address.contains('@').then(|| address.to_owned())
}

fn delivery_status(report: &ParsedMail<'_>) -> Result<Vec<Feedback>, BounceError> {
    let status = part(
        report,
        &["message/delivery-status", "message/global-delivery-status"],
    )
    .ok_or_else(|| {
        BounceError::NotAReport(
            "a delivery status report without a message/delivery-status part".into(),
        )
    })?;
    let body = status
        .get_body_raw()
        .map_err(|e| BounceError::NotAReport(format!("unreadable delivery status: {e}")))?;
    let recipients: Vec<Feedback> = header_blocks(&body)?
        .iter()
        .filter(|block| {
            field(block, "final-recipient").is_some()
                || field(block, "original-recipient").is_some()
        })
        .map(|block| recipient_verdict(block))
        .collect();
    if recipients.is_empty() {
        return Err(BounceError::NotAReport(
            "a delivery status report that names no recipient".into(),
        ));
    }
    Ok(recipients)
}

fn recipient_verdict(block: &[(String, String)]) -> Feedback {
    let address = field(block, "final-recipient")
        .and_then(recipient)
        .or_else(|| field(block, "original-recipient").and_then(recipient));
    let Some(address) = address else {
        return Feedback::Ignore;
    };
    let action = field(block, "action")
        .unwrap_or_default()
        .to_ascii_lowercase();
    // `5.1.1 (bad destination mailbox address)`: the code is the first word.
    let status = field(block, "status")
        .and_then(|s| s.split_whitespace().next())
        .unwrap_or_default();
    if action != "failed" || !is_permanent(status) {
        return Feedback::Ignore;
    }
    let diagnostic = field(block, "diagnostic-code")
        .map(|d| diagnostic_text(d, status))
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| describe(status).to_owned());
    Feedback::HardBounce {
        address,
        detail: detail(status, &diagnostic, "permanent failure"),
    }
}

/// What a permanent status means (RFC 3463), for reports that give no diagnostic of their own.
fn describe(status: &str) -> &'static str {
    match status.split_once('.').map_or("", |(_, rest)| rest) {
        "1.1" => "user unknown",
        "1.2" => "bad destination system address",
        "1.3" => "bad destination mailbox address syntax",
        "1.6" => "destination mailbox has moved",
        "1.10" => "the domain accepts no mail (null MX)",
        "2.1" => "mailbox disabled",
        "2.2" => "mailbox full",
        "4.4" => "unable to route",
        "7.1" => "delivery not authorized",
        _ => "permanent failure",
    }
}

/// `5.x.y` with numeric parts: a permanent failure (RFC 3463).
fn is_permanent(status: &str) -> bool {
    let mut parts = status.split('.');
    parts.next() == Some("5")
        && parts.clone().count() == 2
        && parts.all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

/// `smtp; 550 5.1.1 <bob@example.org>: Recipient address rejected` → `<bob@example.org>: Recipient address
/// rejected`: the remote server's words, without the type, the reply code and the status already shown.
fn diagnostic_text(diagnostic: &str, status: &str) -> String {
    let text = diagnostic
        .split_once(';')
        .map_or(diagnostic, |(_, t)| t)
        .trim();
    // `550 ` or `550-` (a multi-line reply): the first four bytes are ASCII, so slicing after them is safe.
    let bytes = text.as_bytes();
    let text = if bytes.len() > 4
        && bytes[..3].iter().all(u8::is_ascii_digit)
        && matches!(bytes[3], b' ' | b'-')
    {
        text[4..].trim_start()
    } else {
        text
    };
    text.strip_prefix(status).unwrap_or(text).trim().to_owned()
}

fn feedback_report(report: &ParsedMail<'_>) -> Result<Vec<Feedback>, BounceError> {
    let feedback = part(report, &["message/feedback-report"]).ok_or_else(|| {
        BounceError::NotAReport("a feedback report without a message/feedback-report part".into())
    })?;
    let body = feedback
        .get_body_raw()
        .map_err(|e| BounceError::NotAReport(format!("unreadable feedback report: {e}")))?;
    let fields: Vec<(String, String)> = header_blocks(&body)?.into_iter().flatten().collect();
    let feedback_type = field(&fields, "feedback-type")
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            BounceError::NotAReport("a feedback report without a Feedback-Type".into())
        })?;
    // `fraud`, `virus` and `other` are about the message, not a recipient who asked not to get it;
    // `not-spam` says the opposite.
    if feedback_type != "abuse" {
        return Ok(vec![Feedback::Ignore]);
    }
    let mut addresses: Vec<String> = fields
        .iter()
        .filter(|(k, _)| k == "original-rcpt-to")
        .filter_map(|(_, v)| recipient(v))
        .collect();
    if addresses.is_empty() {
        addresses = original_recipients(report);
    }
    if addresses.is_empty() {
        // A complaint about nobody Herald can name: nothing to disable.
        return Ok(vec![Feedback::Ignore]);
    }
    Ok(addresses
        .into_iter()
        .map(|address| Feedback::Complaint {
            address,
            detail: feedback_type.clone(),
        })
        .collect())
}

/// The `To` addresses of the message a complaint includes (whole, or its headers only).
fn original_recipients(report: &ParsedMail<'_>) -> Vec<String> {
    let Some(original) = part(report, &["message/rfc822", "text/rfc822-headers"]) else {
        return Vec::new();
    };
    let Ok(body) = original.get_body_raw() else {
        return Vec::new();
    };
    let Ok((headers, _)) = mailparse::parse_headers(&body) else {
        return Vec::new();
    };
    let Some(to) = headers.get_first_header("To") else {
        return Vec::new();
    };
    let Ok(list) = mailparse::addrparse_header(to) else {
        return Vec::new();
    };
    list.iter()
        .flat_map(|a| match a {
            mailparse::MailAddr::Single(s) => vec![s.addr.clone()],
            mailparse::MailAddr::Group(g) => g.addrs.iter().map(|s| s.addr.clone()).collect(),
        })
        .filter(|a| a.contains('@'))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hard(address: &str, detail: &str) -> Feedback {
        Feedback::HardBounce {
            address: address.into(),
            detail: detail.into(),
        }
    }

    fn complaint(address: &str, detail: &str) -> Feedback {
        Feedback::Complaint {
            address: address.into(),
            detail: detail.into(),
        }
    }

    #[test]
    fn sendgrid_hard_bounces_drops_and_spam_reports_count_and_nothing_else() {
        let body = serde_json::json!([
            {"email": "gone@example.com", "event": "bounce", "type": "bounce", "status": "5.1.1",
             "reason": "550 5.1.1 The email account that you tried to reach does not exist", "sg_event_id": "a",
             "timestamp": 1_700_000_000},
            {"email": "busy@example.com", "event": "bounce", "type": "blocked", "status": "4.7.1",
             "reason": "try again later", "sg_event_id": "b", "timestamp": 1_700_000_000},
            {"email": "angry@example.com", "event": "spamreport", "sg_event_id": "c", "timestamp": 1},
            {"email": "fine@example.com", "event": "delivered", "response": "250 OK", "sg_event_id": "d"},
            {"email": "old@example.com", "event": "dropped", "reason": "Bounced Address", "status": "5.0.0"},
            {"email": "spam@example.com", "event": "dropped", "reason": "Spam Reporting Address"},
            {"email": "bad@example.com", "event": "dropped", "reason": "Invalid"},
            {"email": "hdr@example.com", "event": "dropped", "reason": "Invalid SMTPAPI header"},
            {"email": "unsub@example.com", "event": "dropped", "reason": "Unsubscribed Address"},
            {"email": "x@example.com", "event": "deferred", "response": "400 try again", "attempt": "1"},
            {"email": "x@example.com", "event": "open"},
            {"email": "x@example.com", "event": "click", "url": "https://example.com"},
            {"email": "x@example.com", "event": "unsubscribe"},
            {"email": "x@example.com", "event": "processed"},
        ]);
        let verdicts = sendgrid_events(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            verdicts,
            vec![
                hard(
                    "gone@example.com",
                    "5.1.1 550 5.1.1 The email account that you tried to reach does not exist"
                ),
                Feedback::Ignore,
                complaint("angry@example.com", "spam report"),
                Feedback::Ignore,
                hard("old@example.com", "dropped: Bounced Address"),
                complaint("spam@example.com", "dropped: Spam Reporting Address"),
                hard("bad@example.com", "dropped: Invalid"),
                Feedback::Ignore,
                Feedback::Ignore,
                Feedback::Ignore,
                Feedback::Ignore,
                Feedback::Ignore,
                Feedback::Ignore,
                Feedback::Ignore,
            ]
        );
        assert_eq!(
            verdicts[2].reason().as_deref(),
            Some("email_complaint: spam report")
        );
        assert_eq!(verdicts[0].address(), Some("gone@example.com"));
        assert_eq!(verdicts[1].reason(), None);
    }

    #[test]
    fn a_sendgrid_bounce_without_a_type_counts_only_when_permanent() {
        let body = br#"[{"email":"a@example.com","event":"bounce","status":"4.2.2"},
                        {"email":"b@example.com","event":"bounce","status":"5.2.1","reason":"disabled"}]"#;
        assert_eq!(
            sendgrid_events(body).unwrap(),
            vec![Feedback::Ignore, hard("b@example.com", "5.2.1 disabled")]
        );
    }

    #[test]
    fn a_malformed_sendgrid_batch_is_refused_whole() {
        // (body, refused as bad syntax rather than a wrong shape)
        let cases: [(&[u8], bool); 6] = [
            (b"not json", true),
            (b"", true),
            (br#"{"email":"a@example.com","event":"bounce"}"#, false),
            (
                br#"[{"email":"a@example.com","event":"bounce"}, 42]"#,
                false,
            ),
            (br#"[{"event":"bounce"}]"#, false),
            (br#"[{"email":"a@example.com"}]"#, false),
        ];
        for (body, syntax) in cases {
            let error = sendgrid_events(body).unwrap_err();
            assert_eq!(
                matches!(error, BounceError::Malformed(_)),
                syntax,
                "{:?}: {error:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_eq!(sendgrid_events(b"[]").unwrap(), vec![]);
    }

    #[test]
    fn details_are_one_bounded_line() {
        assert_eq!(
            detail("5.1.1", "user\r\n unknown\t", "x"),
            "5.1.1 user unknown"
        );
        assert_eq!(detail("", "  ", "bounced"), "bounced");
        let long = detail("5.0.0", &"word ".repeat(100), "x");
        assert_eq!(long.chars().count(), MAX_DETAIL_CHARS);
        assert!(long.ends_with('…'));
    }

    /// A bounce as Postfix writes it: a human-readable part, the delivery status, the original headers.
    pub(crate) const POSTFIX_DSN: &str = "Return-Path: <>\r
Received: by mx.herald.example (Postfix)\r
\tid 4F1C2A0B3D; Tue,  2 Jan 2024 10:15:01 +0000 (UTC)\r
Date: Tue,  2 Jan 2024 10:15:01 +0000 (UTC)\r
From: MAILER-DAEMON@mx.herald.example (Mail Delivery System)\r
Subject: Undelivered Mail Returned to Sender\r
To: herald@herald.example\r
Auto-Submitted: auto-replied\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=delivery-status;\r
\tboundary=\"4F1C2A0B3D.1704190501/mx.herald.example\"\r
Content-Transfer-Encoding: 7bit\r
Message-Id: <20240102101501.5E6F7A0B3E@mx.herald.example>\r
\r
This is a MIME-encapsulated message.\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example\r
Content-Description: Notification\r
Content-Type: text/plain; charset=us-ascii\r
\r
This is the mail system at host mx.herald.example.\r
\r
I'm sorry to have to inform you that your message could not\r
be delivered to one or more recipients.\r
\r
<nobody@Example.org>: host mail.example.org[203.0.113.7] said: 550 5.1.1\r
    <nobody@example.org>: Recipient address rejected: User unknown in virtual\r
    mailbox table (in reply to RCPT TO command)\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example\r
Content-Description: Delivery report\r
Content-Type: message/delivery-status\r
\r
Reporting-MTA: dns; mx.herald.example\r
X-Postfix-Queue-ID: 4F1C2A0B3D\r
X-Postfix-Sender: rfc822; herald@herald.example\r
Arrival-Date: Tue,  2 Jan 2024 10:15:00 +0000 (UTC)\r
\r
Final-Recipient: rfc822; nobody@Example.org\r
Original-Recipient: rfc822;nobody@Example.org\r
Action: failed\r
Status: 5.1.1\r
Remote-MTA: dns; mail.example.org\r
Diagnostic-Code: smtp; 550 5.1.1 <nobody@example.org>: Recipient address\r
    rejected: User unknown in virtual mailbox table\r
\r
Final-Recipient: rfc822; later@example.net\r
Action: delayed\r
Status: 4.4.1\r
Diagnostic-Code: X-Postfix; connect to mx.example.net[198.51.100.1]:25: Connection refused\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example\r
Content-Description: Undelivered Message Headers\r
Content-Type: text/rfc822-headers\r
\r
From: Herald <herald@herald.example>\r
To: nobody@Example.org\r
Subject: [acme/api] Build #42 failed on main\r
\r
--4F1C2A0B3D.1704190501/mx.herald.example--\r
";

    #[test]
    fn a_postfix_bounce_fails_one_recipient_and_delays_another() {
        assert_eq!(
            mail_report(POSTFIX_DSN.as_bytes()).unwrap(),
            vec![
                hard(
                    "nobody@Example.org",
                    "5.1.1 <nobody@example.org>: Recipient address rejected: User unknown in virtual \
                     mailbox table"
                ),
                Feedback::Ignore,
            ]
        );
    }

    #[test]
    fn only_a_failed_action_with_a_permanent_status_bounces() {
        let dsn = |recipient_block: &str| {
            format!(
                "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n\
                 Content-Type: message/delivery-status\n\nReporting-MTA: dns; mx\n\n{recipient_block}\n--b--\n"
            )
        };
        let verdict = |block: &str| mail_report(dsn(block).as_bytes()).unwrap();
        assert_eq!(
            verdict("Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 5.2.1 (mailbox disabled)\n"),
            vec![hard("a@example.com", "5.2.1 mailbox disabled")]
        );
        assert_eq!(
            verdict("Final-Recipient: rfc822; a@example.com\nAction: failed\nStatus: 4.2.2\n"),
            vec![Feedback::Ignore]
        );
        assert_eq!(
            verdict("Final-Recipient: rfc822; a@example.com\nAction: delivered\nStatus: 2.0.0\n"),
            vec![Feedback::Ignore]
        );
        assert_eq!(
            verdict("Final-Recipient: rfc822; a@example.com\nAction: delayed\nStatus: 4.4.7\n"),
            vec![Feedback::Ignore]
        );
        assert_eq!(
            verdict("Final-Recipient: rfc822; a@example.com\nAction: failed\n"),
            vec![Feedback::Ignore]
        );
        // Without a Final-Recipient, the Original-Recipient names the address.
        assert_eq!(
            verdict("Original-Recipient: rfc822;<b@example.com>\nAction: FAILED\nStatus: 5.1.1\n"),
            vec![hard("b@example.com", "5.1.1 user unknown")]
        );
        assert!(matches!(
            mail_report(dsn("").as_bytes()),
            Err(BounceError::NotAReport(_))
        ));
    }

    /// An abuse report as a mailbox provider's feedback loop sends it (RFC 5965's example, adapted).
    pub(crate) const ARF_COMPLAINT: &str = "From: <abusedesk@example.com>\r
Date: Thu, 8 Mar 2024 14:00:00 EDT\r
Subject: FW: Build failed\r
To: <abuse@herald.example>\r
MIME-Version: 1.0\r
Content-Type: multipart/report; report-type=feedback-report;\r
     boundary=\"part1_13d.2e68ed54_boundary\"\r
\r
--part1_13d.2e68ed54_boundary\r
Content-Type: text/plain; charset=\"US-ASCII\"\r
Content-Transfer-Encoding: 7bit\r
\r
This is an email abuse report for an email message received from IP\r
192.0.2.1 on Thu, 8 Mar 2024 14:00:00 EDT.\r
\r
--part1_13d.2e68ed54_boundary\r
Content-Type: message/feedback-report\r
\r
Feedback-Type: abuse\r
User-Agent: SomeGenerator/1.0\r
Version: 1\r
Original-Mail-From: <herald@herald.example>\r
Original-Rcpt-To: <Complainer@example.net>\r
Arrival-Date: Thu, 8 Mar 2024 14:00:00 EDT\r
Source-IP: 192.0.2.1\r
\r
--part1_13d.2e68ed54_boundary\r
Content-Type: message/rfc822\r
Content-Disposition: inline\r
\r
From: <herald@herald.example>\r
To: Someone Else <someone@example.net>\r
Subject: [acme/api] Build #42 failed on main\r
Date: Thu, 8 Mar 2024 13:59:00 EDT\r
\r
main is red.\r
\r
--part1_13d.2e68ed54_boundary--\r
";

    #[test]
    fn an_abuse_report_is_a_complaint_about_its_original_recipient() {
        assert_eq!(
            mail_report(ARF_COMPLAINT.as_bytes()).unwrap(),
            vec![complaint("Complainer@example.net", "abuse")]
        );
        // Without Original-Rcpt-To, the included message's To names the address.
        let without = ARF_COMPLAINT.replace("Original-Rcpt-To: <Complainer@example.net>\r\n", "");
        assert_eq!(
            mail_report(without.as_bytes()).unwrap(),
            vec![complaint("someone@example.net", "abuse")]
        );
        let not_spam = ARF_COMPLAINT.replace("Feedback-Type: abuse", "Feedback-Type: not-spam");
        assert_eq!(
            mail_report(not_spam.as_bytes()).unwrap(),
            vec![Feedback::Ignore]
        );
        assert_eq!(
            mail_report(ARF_COMPLAINT.as_bytes()).unwrap()[0]
                .reason()
                .as_deref(),
            Some("email_complaint: abuse")
        );
    }

    #[test]
    fn anything_but_a_report_is_refused() {
        for raw in [
            "".to_owned(),
            "   \r\n".to_owned(),
            "Subject: hello\r\n\r\nI could not deliver your mail, sorry.\r\n".to_owned(),
            "Content-Type: multipart/report; report-type=disposition-notification; boundary=b\n\n--b\n\
             Content-Type: message/disposition-notification\n\nDisposition: manual-action/MDN-sent-manually; displayed\n--b--\n"
                .to_owned(),
            "Content-Type: multipart/report; report-type=delivery-status; boundary=b\n\n--b\n\
             Content-Type: text/plain\n\nno status part\n--b--\n"
                .to_owned(),
            "\u{0}\u{1}garbage without headers".to_owned(),
        ] {
            assert!(
                matches!(mail_report(raw.as_bytes()), Err(BounceError::NotAReport(_))),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn a_report_forwarded_inside_another_message_is_found() {
        let wrapped = format!(
            "Content-Type: multipart/mixed; boundary=outer\r\n\r\n--outer\r\nContent-Type: text/plain\r\n\r\n\
             fyi\r\n--outer\r\n{}\r\n--outer--\r\n",
            POSTFIX_DSN
                .split_once("MIME-Version: 1.0\r\n")
                .map(|(_, rest)| rest)
                .unwrap()
        );
        assert_eq!(mail_report(wrapped.as_bytes()).unwrap().len(), 2);
    }

    #[test]
    fn diagnostic_codes_lose_their_type_reply_code_and_repeated_status() {
        assert_eq!(
            diagnostic_text("smtp; 550 5.1.1 <a@b.c>: User unknown", "5.1.1"),
            "<a@b.c>: User unknown"
        );
        assert_eq!(
            diagnostic_text("smtp; 550-5.1.1 The account does not exist", "5.1.1"),
            "The account does not exist"
        );
        assert_eq!(
            diagnostic_text("X-Postfix; host not found", "5.4.4"),
            "host not found"
        );
        assert!(is_permanent("5.1.1") && is_permanent("5.7.26"));
        assert!(!is_permanent("4.1.1") && !is_permanent("5.1") && !is_permanent("5.x.1"));
    }
}
