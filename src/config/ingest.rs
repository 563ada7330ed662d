//! `[ingest]`: `leadscore ingest`, the Braze `users/track`-compatible HTTP API, and its API keys
//! (a file, never a setting).

use super::load::Sources;
use super::*;

/// The largest API keys file read: a few keys are a few hundred bytes, and a mistaken path
/// (`/dev/zero`, a log file) must fail with a clear error rather than fill the memory.
pub const MAX_API_KEYS_FILE_BYTES: u64 = 64 * 1024;

/// The shortest API key accepted: a short key can be guessed, whatever the rate limit.
pub const MIN_API_KEY_LEN: usize = 16;
/// How the shipped templates' placeholder keys begin; no key may contain it.
const PLACEHOLDER: &str = "REPLACE_ME";

/// The largest `ingest.max_body_bytes`: the bytes the request bodies in flight may hold between
/// them (`ingest::server::ByteBudget::BODIES`). Without a ceiling, one 3 GB request took 5.2 GB
/// resident (an outside check, 2026-12-07).
pub const MAX_BODY_BYTES: usize = 32 << 20;

/// `leadscore ingest` (docs/ingest.md).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct IngestSettings {
    /// The API's socket address (`POST /users/track`); port 0 picks a free port (tests). The
    /// metrics and health endpoints stay on `admin.listen`, as for the other services.
    pub listen: String,
    /// A file with the accepted API keys, one per line (blank lines and `#` comments ignored).
    /// Several keys let a key be rotated: add the new one, restart, move the callers, remove the
    /// old one, restart. Required: the API never runs open.
    pub api_keys_file: Option<PathBuf>,
    /// The Braze attribute that carries the external lead score: `{"lead_score": 45}` becomes an
    /// `external_score` event setting the score, `{"lead_score": {"inc": 5}}` one adding to it.
    pub score_attribute: String,
    /// Requests with a larger body are answered 413 before any parsing.
    pub max_body_bytes: usize,
    /// Accepted requests per second, across all callers (a token bucket holding one second's
    /// worth); past it the answer is 429 with `Retry-After`.
    pub rate_limit: u32,
    /// How long a request waits for Kafka to acknowledge its events before it is answered 503
    /// (the caller retries; see docs/ingest.md on duplicates).
    #[serde(deserialize_with = "deserialize_duration")]
    pub produce_timeout: Duration,
    /// How long a client has to send a request's headers, counted from the connection's
    /// opening or its previous answer; past it the connection is closed unanswered. Bounds the
    /// connections held by slow or silent clients (slowloris) and idle kept-alive ones.
    #[serde(deserialize_with = "deserialize_duration")]
    pub header_timeout: Duration,
    /// How long a client has to send a request's body once its headers arrived; past it the
    /// answer is 408.
    #[serde(deserialize_with = "deserialize_duration")]
    pub body_timeout: Duration,
}

impl Default for IngestSettings {
    fn default() -> Self {
        IngestSettings {
            listen: "0.0.0.0:9470".to_string(),
            api_keys_file: None,
            score_attribute: "lead_score".to_string(),
            // 225 objects of a few hundred bytes each fit many times over.
            max_body_bytes: 1024 * 1024,
            // Braze's own limit on users/track: 3,000 requests per 3 seconds.
            rate_limit: 1000,
            produce_timeout: Duration::from_secs(30),
            // hyper's own default, which also closes a kept-alive connection idle that long.
            header_timeout: Duration::from_secs(30),
            // A full 1 MiB body at 35 KB/s, slower than any real caller's link.
            body_timeout: Duration::from_secs(30),
        }
    }
}

/// Why the API keys could not be read. Names the file and the setting to fix.
#[derive(Debug, thiserror::Error)]
pub enum ApiKeysError {
    #[error("ingest.api_keys_file is not set: the ingest API needs at least one API key")]
    NotSet,
    #[error("API keys file {} (ingest.api_keys_file): {source}", .path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "API keys file {} (ingest.api_keys_file): larger than {max} bytes, so not a keys file",
        .path.display()
    )]
    TooLarge { path: PathBuf, max: u64 },
    #[error("API keys file {} (ingest.api_keys_file): no key in it (one key per line)", .path.display())]
    Empty { path: PathBuf },
    #[error(
        "API keys file {} (ingest.api_keys_file) line {line}: {message}",
        .path.display()
    )]
    BadKey {
        path: PathBuf,
        line: usize,
        message: String,
    },
}

impl CappedFileError for ApiKeysError {
    fn unreadable(path: PathBuf, source: std::io::Error) -> Self {
        ApiKeysError::Read { path, source }
    }

    fn too_large(path: PathBuf, max: u64) -> Self {
        ApiKeysError::TooLarge { path, max }
    }
}

impl IngestSettings {
    /// The API keys from `api_keys_file`: one per line, trimmed; blank lines and lines starting
    /// with `#` skipped. Each key is at least [`MIN_API_KEY_LEN`] printable ASCII characters.
    pub fn api_keys(&self) -> Result<Vec<Secret>, ApiKeysError> {
        let path = self.api_keys_file.as_ref().ok_or(ApiKeysError::NotSet)?;
        let text = read_capped_text::<ApiKeysError>(path, MAX_API_KEYS_FILE_BYTES)?;
        // A byte order mark (a Windows editor's) is not part of the first key.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let mut keys = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let key = line.trim();
            if key.is_empty() || key.starts_with('#') {
                continue;
            }
            // The message never quotes the key: it is a credential, even a malformed one.
            let bad = |message: String| ApiKeysError::BadKey {
                path: path.clone(),
                line: i + 1,
                message,
            };
            if !key.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad(
                    "a key is printable ASCII without spaces (it travels in an HTTP header)"
                        .to_string(),
                ));
            }
            if key.len() < MIN_API_KEY_LEN {
                return Err(bad(format!(
                    "the key is shorter than {MIN_API_KEY_LEN} characters, too easy to guess"
                )));
            }
            // The templates' placeholders are public: a Secret applied as shipped must not
            // open the API to anyone who read the repository.
            if key.contains(PLACEHOLDER) {
                return Err(bad(format!(
                    "the key is the template's placeholder ({PLACEHOLDER}...): put a long \
                     random key there (deploy/kubernetes/ingest-secret.yaml says how)"
                )));
            }
            keys.push(Secret::new(key));
        }
        if keys.is_empty() {
            return Err(ApiKeysError::Empty { path: path.clone() });
        }
        Ok(keys)
    }

    /// The API's listen address, checked at load so this cannot fail on loaded settings.
    pub fn listen_addr(&self) -> Result<SocketAddr, std::net::AddrParseError> {
        self.listen.parse()
    }
}

impl Settings {
    /// `[ingest]`: an address, a score attribute, positive limits.
    pub(super) fn check_ingest(&self, sources: &Sources<'_>) -> Result<(), ConfigError> {
        let ingest = &self.ingest;
        if let Err(e) = ingest.listen_addr() {
            let listen = &ingest.listen;
            let message = format!("\"{listen}\" is not a socket address like 0.0.0.0:9470: {e}");
            return Err(sources.invalid(&["ingest.listen"], message));
        }
        let checks: [(bool, &str, &str); 7] = [
            (
                !ingest.score_attribute.is_empty(),
                "ingest.score_attribute",
                "must not be empty",
            ),
            (
                ingest.max_body_bytes > 0,
                "ingest.max_body_bytes",
                "must be greater than 0",
            ),
            (
                ingest.max_body_bytes <= MAX_BODY_BYTES,
                "ingest.max_body_bytes",
                "must be at most 33554432 (32 MiB, what the bodies in flight may hold between \
                 them; Braze's own limit is far lower)",
            ),
            (
                ingest.rate_limit > 0,
                "ingest.rate_limit",
                "must be greater than 0 (requests per second)",
            ),
            (
                // It is the producer's `message.timeout.ms`, which librdkafka wants above its
                // batching wait (`linger.ms`, 5 ms here unless set).
                ingest.produce_timeout >= Duration::from_millis(100),
                "ingest.produce_timeout",
                "must be at least 100ms (the producer's delivery timeout: it must leave room for linger.ms)",
            ),
            (
                !ingest.header_timeout.is_zero(),
                "ingest.header_timeout",
                "must be greater than 0s",
            ),
            (
                !ingest.body_timeout.is_zero(),
                "ingest.body_timeout",
                "must be greater than 0s",
            ),
        ];
        for (ok, key, message) in checks {
            if !ok {
                return Err(sources.invalid(&[key], message));
            }
        }
        if matches!(ingest.score_attribute.as_str(), "external_id" | "email") {
            return Err(sources.invalid(
                &["ingest.score_attribute"],
                "must not be external_id or email, which have their own meaning in users/track",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A keys file saved with a byte order mark (found by an outside review: refused as "not
    /// printable ASCII", the mark unnamed) reads as the same file without it.
    #[test]
    fn a_keys_file_with_a_byte_order_mark_reads_as_without_it() {
        let dir = crate::dev::scratch::ScratchDir::new("keys").expect("a scratch directory");
        let path = dir.path().join("keys");
        std::fs::write(&path, "\u{feff}k3y-0123456789abcdef\r\n# a comment\r\n").expect("written");
        let settings = IngestSettings {
            api_keys_file: Some(path),
            ..IngestSettings::default()
        };
        let keys = settings
            .api_keys()
            .map_err(|e| e.to_string())
            .expect("the keys");
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].expose(), "k3y-0123456789abcdef");
    }
}
