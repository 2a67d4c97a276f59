//! The SMTP settings: `notify.email.smtp_url` parsed into an [`SmtpUrl`]
//! (host, port and how the connection is protected), and the login
//! ([`SmtpCredentials`]). Parsing refuses anything it does not understand,
//! with the reason, so a typo never silently means clear text; no error
//! shows a password. Connecting is `notify::smtp`'s business.

use super::secret::Secret;

/// Why an `smtp_url` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SmtpUrlError {
    #[error("unsupported mail url scheme {scheme:?} in {url}: expected smtp:// or smtps://")]
    UnsupportedScheme { url: String, scheme: String },
    #[error("bad mail url {url}: {reason}")]
    BadUrl { url: String, reason: String },
}

/// Who we are to an SMTP server that wants a login (AUTH PLAIN or LOGIN).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpCredentials {
    pub username: String,
    pub password: Secret,
}

/// How the connection to the SMTP server is protected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SmtpSecurity {
    /// `smtp://host`: clear text, for a relay next to the master.
    None,
    /// `smtp://host?tls=starttls`: STARTTLS, required. A server that does not
    /// offer it gets nothing, not even the login.
    StartTls,
    /// `smtp://host?tls=opportunistic`: STARTTLS when the server offers it,
    /// else clear text (an active attacker can force the latter).
    Opportunistic,
    /// `smtps://host`: TLS from the first byte (port 465 by default).
    Implicit,
}

/// A parsed `smtp_url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpUrl {
    /// A name or an IP address (IPv6 without brackets).
    pub host: String,
    pub port: u16,
    pub security: SmtpSecurity,
}

impl SmtpUrl {
    /// Parses `smtp://host[:port][/][?tls=starttls|opportunistic]` or
    /// `smtps://host[:port][/]`. Anything else (other schemes, paths, other
    /// parameters, `user@`) is refused with the reason, so a typo never
    /// silently means clear text.
    pub fn parse(url: &str) -> Result<SmtpUrl, SmtpUrlError> {
        let shown = redact(url);
        let bad = |reason: String| SmtpUrlError::BadUrl {
            url: shown.clone(),
            reason,
        };
        let (scheme, rest) = url
            .trim()
            .split_once("://")
            .ok_or_else(|| bad("expected smtp://host[:port] or smtps://host[:port]".to_owned()))?;
        let (default_port, mut security) = if scheme.eq_ignore_ascii_case("smtp") {
            (25, SmtpSecurity::None)
        } else if scheme.eq_ignore_ascii_case("smtps") {
            (465, SmtpSecurity::Implicit)
        } else {
            return Err(SmtpUrlError::UnsupportedScheme {
                url: shown.clone(),
                scheme: scheme.to_owned(),
            });
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        if authority.contains('@') {
            return Err(bad(
                "credentials do not belong in the url: set notify.email.username and \
                 notify.email.password or notify.email.password_file (or AMON__NOTIFY__EMAIL__PASSWORD)"
                    .to_owned(),
            ));
        }
        if tail.contains('#') {
            return Err(bad("a #fragment is not supported".to_owned()));
        }
        let (path, query) = match tail.split_once('?') {
            Some((path, query)) => (path, Some(query)),
            None => (tail, None),
        };
        if !path.is_empty() && path != "/" {
            return Err(bad("a path is not supported: expected smtp://host[:port]".to_owned()));
        }
        let mut tls_seen = false;
        for param in query.into_iter().flat_map(|q| q.split('&')) {
            let (key, value) = param.split_once('=').unwrap_or((param, ""));
            if !key.eq_ignore_ascii_case("tls") {
                return Err(bad(format!("unknown parameter {key:?}: only tls= is supported")));
            }
            if tls_seen {
                return Err(bad("tls= given twice".to_owned()));
            }
            tls_seen = true;
            if security == SmtpSecurity::Implicit {
                return Err(bad(
                    "tls= applies to smtp:// only: smtps:// is TLS from the start".to_owned()
                ));
            }
            security = if value.eq_ignore_ascii_case("starttls") {
                SmtpSecurity::StartTls
            } else if value.eq_ignore_ascii_case("opportunistic") {
                SmtpSecurity::Opportunistic
            } else {
                return Err(bad(format!(
                    "unknown tls mode {value:?}: expected tls=starttls (required) or tls=opportunistic \
                     (if offered), or smtps:// for TLS from the start"
                )));
            };
        }
        let (host, port) = if let Some(bracketed) = authority.strip_prefix('[') {
            // An IPv6 literal: `[::1]:25`.
            let (host, after) = bracketed
                .split_once(']')
                .ok_or_else(|| bad("unclosed [ in the host".to_owned()))?;
            match after {
                "" => (host, None),
                _ => match after.strip_prefix(':') {
                    Some(port) => (host, Some(port)),
                    None => return Err(bad("expected :port after the ]".to_owned())),
                },
            }
        } else {
            match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(bad("missing host".to_owned()));
        }
        if host.contains(char::is_whitespace) {
            return Err(bad("the host contains a space".to_owned()));
        }
        let port = match port {
            None => default_port,
            Some(port) => match port.parse::<u16>() {
                Ok(port) if port != 0 => port,
                _ => return Err(bad("port must be a number from 1 to 65535".to_owned())),
            },
        };
        Ok(SmtpUrl {
            host: host.to_owned(),
            port,
            security,
        })
    }

    /// `host:port` (`[v6]:port`), as errors name the server.
    pub fn server(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }
}

/// The URL with any `user:password@` and every parameter value but `tls=`'s
/// masked, so config errors can be logged without leaking a password.
fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let authority = match authority.rfind('@') {
        Some(at) => format!("***@{}", &authority[at + 1..]),
        None => authority.to_owned(),
    };
    let tail = match tail.split_once('?') {
        None => tail.to_owned(),
        Some((path, query)) => {
            let params: Vec<String> = query
                .split('&')
                .map(|param| match param.split_once('=') {
                    Some((key, value)) if key.eq_ignore_ascii_case("tls") => format!("{key}={value}"),
                    Some((key, _)) => format!("{key}=***"),
                    None => param.to_owned(),
                })
                .collect();
            format!("{path}?{}", params.join("&"))
        }
    };
    format!("{scheme}://{authority}{tail}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smtp_url_forms() {
        let url = |host: &str, port, security| SmtpUrl {
            host: host.to_owned(),
            port,
            security,
        };
        let parse = |text: &str| SmtpUrl::parse(text).unwrap();
        assert_eq!(
            parse("smtp://mail.example.com"),
            url("mail.example.com", 25, SmtpSecurity::None)
        );
        assert_eq!(
            parse("smtp://127.0.0.1:2525/"),
            url("127.0.0.1", 2525, SmtpSecurity::None)
        );
        assert_eq!(parse("SMTP://[::1]:587"), url("::1", 587, SmtpSecurity::None));
        assert_eq!(
            parse("smtp://mail.example.com:587?tls=starttls"),
            url("mail.example.com", 587, SmtpSecurity::StartTls)
        );
        assert_eq!(
            parse("smtp://mail.example.com/?TLS=StartTLS"),
            url("mail.example.com", 25, SmtpSecurity::StartTls)
        );
        assert_eq!(
            parse("smtp://[::1]?tls=opportunistic"),
            url("::1", 25, SmtpSecurity::Opportunistic)
        );
        assert_eq!(
            parse("smtps://mail.example.com"),
            url("mail.example.com", 465, SmtpSecurity::Implicit)
        );
        assert_eq!(
            parse("smtps://mail.example.com:2465/"),
            url("mail.example.com", 2465, SmtpSecurity::Implicit)
        );
        assert_eq!(parse("smtps://[::1]:465").server(), "[::1]:465");
    }

    #[test]
    fn unsupported_smtp_urls_are_refused_clearly() {
        let refused = |url: &str| SmtpUrl::parse(url).unwrap_err().to_string();

        let err = SmtpUrl::parse("submission://mail.example.com:587").unwrap_err();
        assert!(matches!(err, SmtpUrlError::UnsupportedScheme { ref scheme, .. } if scheme == "submission"));
        assert!(err.to_string().contains("smtp:// or smtps://"), "{err}");

        let text = refused("smtp://mail.example.com:587?tls=required");
        assert!(text.contains("unknown tls mode \"required\""), "{text}");
        let text = refused("smtp://mail.example.com?tls=");
        assert!(text.contains("unknown tls mode"), "{text}");
        let text = refused("smtps://mail.example.com?tls=starttls");
        assert!(text.contains("smtps:// is TLS from the start"), "{text}");
        let text = refused("smtp://mail.example.com?tls=starttls&tls=starttls");
        assert!(text.contains("twice"), "{text}");
        let text = refused("smtp://mail.example.com?timeout=5");
        assert!(text.contains("unknown parameter \"timeout\""), "{text}");
        let text = refused("smtp://mail.example.com/relay");
        assert!(text.contains("path"), "{text}");
        let text = refused("smtp://mail.example.com#x");
        assert!(text.contains("fragment"), "{text}");
        assert!(SmtpUrl::parse("mail.example.com:25").is_err());
        assert!(SmtpUrl::parse("smtp://mail.example.com:0").is_err());
        assert!(SmtpUrl::parse("smtp://:25").is_err());
        assert!(SmtpUrl::parse("smtp://[::1:25").is_err());
    }

    #[test]
    fn url_errors_never_show_a_password() {
        let err = SmtpUrl::parse("smtp://jill:s3cret@mail.example.com:25").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("smtp://***@mail.example.com:25"), "{text}");
        assert!(text.contains("notify.email.username"), "{text}");

        let err = SmtpUrl::parse("smtp://mail.example.com?tls=starttls&password=s3cret").unwrap_err();
        let text = err.to_string();
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("?tls=starttls&password=***"), "{text}");
    }
}
