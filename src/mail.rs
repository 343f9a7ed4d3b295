//! The verification email: what the API sends to prove an address belongs to the person who added it.

use api::{BoxFuture, VerificationMailer};
use domain::Language;
use workers::email::{Mailer, OutgoingEmail};

/// Sends verification links through Herald's SMTP mailer.
pub struct VerificationMail(pub Mailer);

impl VerificationMailer for VerificationMail {
    fn send_verification(
        &self,
        to: &str,
        link: &str,
        language: Language,
    ) -> BoxFuture<'_, Result<(), String>> {
        let (subject, text) = verification_text(link, language);
        let email = OutgoingEmail {
            to: to.to_owned(),
            subject,
            text,
            html: None,
            list_unsubscribe: None,
        };
        Box::pin(async move {
            self.0
                .send(&email)
                .await
                .map(|_| ())
                .map_err(|f| f.description)
        })
    }
}

/// Subject and plain-text body, in the subscriber's language.
fn verification_text(link: &str, language: Language) -> (String, String) {
    match language {
        Language::En => (
            "Confirm your address for Herald build notifications".to_owned(),
            format!(
                "Someone (hopefully you) asked Herald to send build notifications to this address.\n\n\
                 Confirm it by opening this link within 24 hours:\n{link}\n\n\
                 If it was not you, ignore this message: nothing will be sent."
            ),
        ),
        Language::De => (
            "Bestätige deine Adresse für Herald-Build-Benachrichtigungen".to_owned(),
            format!(
                "Jemand (hoffentlich du) hat Herald gebeten, Build-Benachrichtigungen an diese Adresse zu senden.\n\n\
                 Bestätige sie, indem du diesen Link innerhalb von 24 Stunden öffnest:\n{link}\n\n\
                 Warst du das nicht, ignoriere diese Nachricht: Es wird nichts gesendet."
            ),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_link_is_in_every_language() {
        for language in Language::ALL {
            let (subject, text) = verification_text("https://h.example/v?token=t", language);
            assert!(!subject.is_empty());
            assert!(text.contains("https://h.example/v?token=t"));
        }
        assert_ne!(
            verification_text("l", Language::En).0,
            verification_text("l", Language::De).0
        );
    }
}
