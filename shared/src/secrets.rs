//! Handling secrets: comparing them (tokens, device secrets, CSRF tokens) without leaking
//! through timing where they differ, and keeping them out of what is printed or logged.

use subtle::ConstantTimeEq;

/// Whether `a` equals `b`, in time independent of their contents (the length may show).
pub fn constant_time_eq(a: impl AsRef<[u8]>, b: impl AsRef<[u8]>) -> bool {
    a.as_ref().ct_eq(b.as_ref()).into()
}

/// `url` with its password replaced by `***`, for logs and output. A string that is not a URL
/// loses everything between `://` and its last `@`, where a password could be.
pub fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some() {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => match (url.find("://"), url.rfind('@')) {
            (Some(s), Some(at)) if at > s => format!("{}***{}", &url[..s + 3], &url[at..]),
            _ => url.to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_only_when_equal() {
        assert!(constant_time_eq("abc", "abc"));
        assert!(!constant_time_eq("abc", "abd"));
        assert!(!constant_time_eq("abc", "ab"));
        assert!(!constant_time_eq("", "a"));
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://guest:secret@127.0.0.1:5672/%2f"),
            "amqp://guest:***@127.0.0.1:5672/%2f"
        );
        assert_eq!(redact_url("amqp://h:5672/"), "amqp://h:5672/");
        assert_eq!(redact_url("amqp://u@h/"), "amqp://u@h/");
        // An `@` in the password, unescaped.
        assert_eq!(redact_url("amqp://u:p@ss@h/vhost"), "amqp://u:***@h/vhost");
        assert_eq!(redact_url("amqp://u:p w@[bad/"), "amqp://***@[bad/");
    }
}
