//! `[salesforce]`: the org the handoff updates, and its client secret (never a setting).

use super::*;

/// The largest client secret file read: a secret is a few dozen bytes, and a mistaken path
/// (`/dev/zero`, a log file) must fail with a clear error rather than fill the memory.
pub const MAX_SECRET_FILE_BYTES: u64 = 64 * 1024;

/// The Salesforce org. The client secret is not here: see [`SalesforceSettings::client_secret`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SalesforceSettings {
    /// Base of the API and token URLs. The default is the local stand-in `leadscore demo` runs.
    pub instance_url: String,
    /// The REST API version in request paths, pinned so an org upgrade cannot change answers.
    pub api_version: String,
    /// The connected app's OAuth client id (not a secret).
    pub client_id: String,
    /// The environment variable holding the client secret, named here so deployments can
    /// follow their own secret-injection conventions.
    pub client_secret_env: String,
    /// A file holding the client secret (a mounted secret), read when the variable is unset.
    pub client_secret_file: Option<PathBuf>,
    /// Per HTTP request; a timed-out call is retried like a connection error.
    #[serde(deserialize_with = "deserialize_duration")]
    pub timeout: Duration,
}

impl Default for SalesforceSettings {
    fn default() -> Self {
        SalesforceSettings {
            instance_url: "http://127.0.0.1:8089".to_string(),
            api_version: "v60.0".to_string(),
            client_id: String::new(),
            client_secret_env: "LEADSCORE_SALESFORCE_CLIENT_SECRET".to_string(),
            client_secret_file: None,
            timeout: Duration::from_secs(10),
        }
    }
}

impl SalesforceSettings {
    /// The client secret: from the environment variable named by `client_secret_env` if it is
    /// set and non-empty, else from `client_secret_file` (trimmed, since files usually end with
    /// a newline). Never a setting, so it cannot end up on a command line or in a logged config.
    pub fn client_secret(&self) -> Result<Secret, ConfigError> {
        self.client_secret_with(|name| std::env::var(name).ok())
    }

    /// [`SalesforceSettings::client_secret`] with the environment given as a lookup, so tests
    /// need not mutate the process environment.
    pub fn client_secret_with(
        &self,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Secret, ConfigError> {
        if let Some(value) = env(&self.client_secret_env).filter(|v| !v.is_empty()) {
            return Ok(Secret(value));
        }
        let missing = || ConfigError::MissingSecret {
            env_var: self.client_secret_env.clone(),
            file: self.client_secret_file.clone(),
        };
        let path = self.client_secret_file.as_ref().ok_or_else(missing)?;
        let text = read_capped_text::<ConfigError>(path, MAX_SECRET_FILE_BYTES)?;
        let secret = text.trim();
        if secret.is_empty() {
            return Err(missing());
        }
        Ok(Secret(secret.to_string()))
    }
}

/// A credential. Its `Debug` and `Display` print `***`, so it can sit in structs that get logged;
/// only [`Secret::expose`] gives the value, at the one place that sends it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Secret {
        Secret(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}
