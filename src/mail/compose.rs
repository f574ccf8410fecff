//! The bytes of one message: headers, then the text and HTML alternatives. lettre's
//! `Message` builder re-parsed the From header and the addresses of every message and
//! formatted each part through its generic builders, a fifth of the email path's CPU; here
//! the From header is encoded once, and each message writes its parts straight into one
//! buffer. Header values still go through lettre's encoder (RFC 2047 words, folding) and
//! bodies through its body encoder (7bit, quoted-printable or base64, CRLF line ends).

use lettre::Address;
use lettre::message::header::{self, ContentTransferEncoding, Header, HeaderValue, Headers};
use lettre::message::{Body, Mailbox, Mailboxes};
use std::io::Write;
use std::time::SystemTime;

/// What one message says.
pub struct Parts<'a> {
    /// Recipient.
    pub to: &'a Address,
    /// Subject line.
    pub subject: &'a str,
    /// Plain-text alternative.
    pub text: &'a str,
    /// HTML alternative.
    pub html: &'a str,
    /// The Message-ID header, with its angle brackets.
    pub message_id: &'a str,
    /// Separates the parts; must not occur in them (random, 32 hex digits).
    pub boundary: &'a str,
    /// The Date header.
    pub date: SystemTime,
}

/// Writes messages from one sender.
pub struct Composer {
    from: HeaderValue,
}

impl Composer {
    /// Encodes the From header once.
    pub fn new(from: &Mailbox) -> Self {
        Self {
            from: header::From::from(Mailboxes::from(from.clone())).display(),
        }
    }

    /// The message as sent after DATA (lettre escapes leading dots on the wire).
    pub fn compose(&self, parts: &Parts<'_>) -> Vec<u8> {
        let text = Body::new(parts.text.to_string());
        let html = Body::new(parts.html.to_string());
        let mut headers = Headers::with_capacity(7);
        headers.insert_raw(self.from.clone());
        headers.set(header::To::from(Mailboxes::from(Mailbox::new(
            None,
            parts.to.clone(),
        ))));
        headers.set(header::Subject::from(parts.subject.to_string()));
        headers.set(header::MessageId::from(parts.message_id.to_string()));
        headers.set(header::Date::new(parts.date));
        headers.set(header::MIME_VERSION_1_0);
        let mut out = Vec::with_capacity(text.len() + html.len() + 1024);
        // Writing into a Vec cannot fail.
        let _ = write!(
            out,
            "{headers}Content-Type: multipart/alternative;\r\n boundary=\"{}\"\r\n\r\n",
            parts.boundary
        );
        for (mime, body) in [("text/plain", &text), ("text/html", &html)] {
            let _ = write!(
                out,
                "--{}\r\nContent-Type: {mime}; charset=utf-8\r\nContent-Transfer-Encoding: {}\r\n\r\n",
                parts.boundary,
                encoding_name(body.encoding())
            );
            out.extend_from_slice(body.as_ref());
            out.extend_from_slice(b"\r\n");
        }
        let _ = write!(out, "--{}--\r\n", parts.boundary);
        out
    }
}

fn encoding_name(encoding: ContentTransferEncoding) -> &'static str {
    match encoding {
        ContentTransferEncoding::SevenBit => "7bit",
        ContentTransferEncoding::QuotedPrintable => "quoted-printable",
        ContentTransferEncoding::Base64 => "base64",
        ContentTransferEncoding::EightBit => "8bit",
        ContentTransferEncoding::Binary => "binary",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn composed(subject: &str, text: &str) -> String {
        let from: Mailbox = "École d'été <noreply@example.org>".parse().unwrap();
        let to: Address = "ann@example.org".parse().unwrap();
        let bytes = Composer::new(&from).compose(&Parts {
            to: &to,
            subject,
            text,
            html: "<p>Bonjour</p>",
            message_id: "<lethe.1.1.00@example.org>",
            boundary: "0123456789abcdef0123456789abcdef",
            date: SystemTime::UNIX_EPOCH,
        });
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn headers_are_encoded_and_lines_end_in_crlf() {
        let message = composed(
            "Votre compte sera supprimé dans trente jours si vous ne vous reconnectez pas d'ici là",
            "Bonjour,\nvotre compte sera supprimé.\n",
        );
        for line in message.split("\r\n") {
            assert!(!line.contains('\n'), "bare LF in {line:?}");
            assert!(line.len() <= 78, "long line {line:?}");
            assert!(line.is_ascii(), "8-bit line {line:?}");
        }
        assert!(message.starts_with("From: =?utf-8?"), "{message}");
        assert!(message.contains("\r\nTo: ann@example.org\r\n"), "{message}");
        // Only the word that needs it is encoded ("supprimé"), and the long line is folded.
        assert!(
            message.contains("\r\nSubject: Votre compte sera =?utf-8?b?c3VwcHJpbcOp?= dans"),
            "{message}"
        );
        assert!(message.contains("\r\nMessage-ID: <lethe.1.1.00@example.org>\r\n"));
        assert!(message.contains("\r\nDate: Thu, 01 Jan 1970 00:00:00 +0000\r\n"));
        assert!(message.contains("\r\nMIME-Version: 1.0\r\n"));
        assert!(message.contains(
            "Content-Type: multipart/alternative;\r\n boundary=\"0123456789abcdef0123456789abcdef\"\r\n\r\n--0123"
        ));
        assert!(message.contains("Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\nBonjour,\r\nvotre compte sera supprim=C3=A9."));
        assert!(message.ends_with("\r\n--0123456789abcdef0123456789abcdef--\r\n"));
    }

    #[test]
    fn plain_ascii_bodies_stay_readable() {
        let message = composed("Hello", "Hello,\nyour account goes in 30 days.\n");
        assert!(message.contains("\r\nSubject: Hello\r\n"), "{message}");
        assert!(message.contains(
            "Content-Transfer-Encoding: 7bit\r\n\r\nHello,\r\nyour account goes in 30 days.\r\n"
        ));
    }
}
