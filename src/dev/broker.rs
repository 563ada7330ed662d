//! `leadscore dev-broker`: librdkafka's built-in mock cluster (a Kafka-protocol broker inside
//! this process) served on a fixed address, with leadscore's topics created.
//!
//! The mock binds an ephemeral port, so a small TCP forwarder listens on the requested address
//! and the broker advertises that address in its metadata
//! (`rd_kafka_mock_broker_set_host_port`). For development and tests only: the mock keeps
//! roughly the last 5 MiB or 100,000 message sets per partition, does not compact, and shows
//! aborted transactional records to `read_committed` consumers (docs/brokers.md).
//!
//! With a certificate and key ([`Tls`]) the forwarder terminates TLS, so clients connect with
//! `security.protocol=ssl` as they would to a TLS-only Kafka: how the tests check that the
//! services really speak TLS.

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;
use rdkafka::producer::Producer;
use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::{self, ServerConfig};
use tokio_rustls::TlsAcceptor;

#[derive(Debug, Error)]
pub enum DevBrokerError {
    #[error("cannot start the mock cluster: {0}")]
    Start(String),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: String,
        source: std::io::Error,
    },
    #[error("cannot create topic {topic:?} on the mock cluster: {code}")]
    Topic { topic: String, code: String },
    #[error("TLS {what} {path}: {detail}")]
    Tls {
        what: &'static str,
        path: PathBuf,
        detail: String,
    },
}

/// The certificate chain and private key (PEM files) the forwarder serves TLS with.
#[derive(Clone, Debug)]
pub struct Tls {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// The largest certificate chain or key file read, in bytes: a chain is a few kilobytes.
const MAX_PEM_FILE_BYTES: u64 = 1024 * 1024;

impl Tls {
    fn acceptor(&self) -> Result<TlsAcceptor, DevBrokerError> {
        let err = |what: &'static str, path: &Path, detail: String| DevBrokerError::Tls {
            what,
            path: path.to_path_buf(),
            detail,
        };
        // Read as every small file an operator names is (`config::read_capped_text`): bounded
        // in size and in time, so `/dev/zero` or a pipe nobody writes to is an error at once.
        let read = |what: &'static str, path: &Path| {
            crate::config::read_capped_text::<PemFileDetail>(path, MAX_PEM_FILE_BYTES)
                .map_err(|PemFileDetail(detail)| err(what, path, detail))
        };
        let cert_pem = read("certificate", &self.cert)?;
        let certs = CertificateDer::pem_slice_iter(cert_pem.as_bytes())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| err("certificate", &self.cert, e.to_string()))?;
        if certs.is_empty() {
            return Err(err(
                "certificate",
                &self.cert,
                "no certificate in it".into(),
            ));
        }
        let key = PrivateKeyDer::from_pem_slice(read("key", &self.key)?.as_bytes())
            .map_err(|e| err("key", &self.key, e.to_string()))?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .and_then(|b| b.with_no_client_auth().with_single_cert(certs, key))
            .map_err(|e| err("certificate and key", &self.cert, e.to_string()))?;
        Ok(TlsAcceptor::from(Arc::new(config)))
    }
}

/// A running mock cluster with one broker. Dropping it stops the broker.
pub struct DevBroker {
    cluster: *mut rd::rd_kafka_mock_cluster_t,
    /// The client handle that owns the mock cluster; it must outlive it.
    _handle: BaseProducer,
    /// Where the mock itself listens (the forwarder's target).
    inner_addr: String,
    /// Where clients connect.
    addr: SocketAddr,
}

// The mock cluster runs on its own librdkafka thread; its API is thread-safe.
unsafe impl Send for DevBroker {}
unsafe impl Sync for DevBroker {}

impl DevBroker {
    /// Starts the mock broker and a forwarder on `listen` (port 0 picks a free port).
    pub async fn start(listen: &str) -> Result<DevBroker, DevBrokerError> {
        DevBroker::start_with(listen, None).await
    }

    /// [`DevBroker::start`], terminating TLS on `listen` when `tls` is given.
    pub async fn start_with(listen: &str, tls: Option<&Tls>) -> Result<DevBroker, DevBrokerError> {
        let acceptor = tls.map(Tls::acceptor).transpose()?;
        // Everything that can fail comes before the cluster exists: an error return after it
        // would drop the client handle with the cluster alive, which librdkafka ends with an
        // assertion (an abort, not an error message).
        let listener =
            TcpListener::bind(listen)
                .await
                .map_err(|source| DevBrokerError::Listen {
                    addr: listen.to_string(),
                    source,
                })?;
        let addr = listener
            .local_addr()
            .map_err(|source| DevBrokerError::Listen {
                addr: listen.to_string(),
                source,
            })?;
        let host = CString::new(addr.ip().to_string())
            .map_err(|e| DevBrokerError::Start(e.to_string()))?;
        let handle: BaseProducer = ClientConfig::new()
            .create()
            .map_err(|e| DevBrokerError::Start(e.to_string()))?;
        // SAFETY: the handle is valid and kept alive in the returned struct, which destroys the
        // cluster before dropping the handle.
        let cluster = unsafe { rd::rd_kafka_mock_cluster_new(handle.client().native_ptr(), 1) };
        if cluster.is_null() {
            return Err(DevBrokerError::Start(
                "rd_kafka_mock_cluster_new failed".into(),
            ));
        }
        // SAFETY: cluster is non-null; the returned string is owned by the cluster.
        let inner_addr = unsafe { CStr::from_ptr(rd::rd_kafka_mock_cluster_bootstraps(cluster)) }
            .to_string_lossy()
            .into_owned();
        // SAFETY: cluster is valid; host is a NUL-terminated string copied by librdkafka.
        unsafe {
            rd::rd_kafka_mock_broker_set_host_port(cluster, 1, host.as_ptr(), addr.port() as i32);
            // Consumers join faster than with Kafka's default 3 s initial rebalance delay.
            rd::rd_kafka_mock_group_initial_rebalance_delay_ms(cluster, 100);
        }
        let target = inner_addr.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut client, _)) = listener.accept().await else {
                    continue;
                };
                let target = target.clone();
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let _ = client.set_nodelay(true);
                    let Ok(mut upstream) = TcpStream::connect(&target).await else {
                        return;
                    };
                    let _ = upstream.set_nodelay(true);
                    match acceptor {
                        None => {
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        }
                        Some(acceptor) => match acceptor.accept(client).await {
                            Ok(mut tls) => {
                                let _ =
                                    tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
                            }
                            Err(e) => tracing::info!(error = %e, "TLS handshake failed"),
                        },
                    }
                });
            }
        });
        Ok(DevBroker {
            cluster,
            _handle: handle,
            inner_addr,
            addr,
        })
    }

    /// The address clients use as `bootstrap.servers`.
    pub fn bootstrap_servers(&self) -> String {
        self.addr.to_string()
    }

    /// The mock's own (ephemeral) address.
    pub fn inner_address(&self) -> &str {
        &self.inner_addr
    }

    /// Delays every answer of the broker by `rtt`, as a distant broker would: a fault to test
    /// against (a restore that takes long enough to be watched, slow group joins).
    pub fn set_round_trip(&self, rtt: std::time::Duration) -> Result<(), DevBrokerError> {
        let ms = i32::try_from(rtt.as_millis())
            .map_err(|_| DevBrokerError::Start(format!("round trip {rtt:?} is too long")))?;
        // SAFETY: cluster is valid; broker 1 is its only broker.
        let err = unsafe { rd::rd_kafka_mock_broker_set_rtt(self.cluster, 1, ms) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            return Err(DevBrokerError::Start(format!(
                "cannot set the round trip: {err:?}"
            )));
        }
        Ok(())
    }

    /// Creates a topic (an existing one is left as it is).
    pub fn create_topic(&self, topic: &str, partitions: i32) -> Result<(), DevBrokerError> {
        check_topic(topic, partitions).map_err(|code| DevBrokerError::Topic {
            topic: topic.to_string(),
            code,
        })?;
        let name = CString::new(topic).map_err(|e| DevBrokerError::Topic {
            topic: topic.to_string(),
            code: e.to_string(),
        })?;
        // SAFETY: cluster is valid; name is NUL-terminated.
        let err =
            unsafe { rd::rd_kafka_mock_topic_create(self.cluster, name.as_ptr(), partitions, 1) };
        if err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR
            && err != rd::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_TOPIC_ALREADY_EXISTS
        {
            return Err(DevBrokerError::Topic {
                topic: topic.to_string(),
                code: format!("{err:?}"),
            });
        }
        Ok(())
    }
}

/// What reading a TLS file found wrong: the detail of [`DevBrokerError::Tls`].
struct PemFileDetail(String);

impl crate::config::CappedFileError for PemFileDetail {
    fn unreadable(_: PathBuf, source: std::io::Error) -> Self {
        PemFileDetail(source.to_string())
    }

    fn too_large(_: PathBuf, max: u64) -> Self {
        PemFileDetail(format!("larger than {max} bytes: is it a PEM file?"))
    }
}

/// The most partitions the dev-broker gives a topic: the mock holds every partition's log in
/// memory (`bench --scale` uses 435 for 5M users); a hundred million took 8 GB in 8 s.
pub const MAX_PARTITIONS: i32 = 10_000;

/// Whether the mock can be asked for `topic` with `partitions`: a name Kafka accepts (1 to
/// 249 of `[a-zA-Z0-9._-]`, not `.` or `..`) and 1 to [`MAX_PARTITIONS`] partitions; what is
/// wrong otherwise.
pub fn check_topic(topic: &str, partitions: i32) -> Result<(), String> {
    if topic.is_empty() || topic.len() > 249 || topic == "." || topic == ".." {
        return Err("a topic name is 1 to 249 characters, not \".\" or \"..\"".into());
    }
    if let Some(c) = topic
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "{c:?} is not allowed in a topic name (letters, digits, '.', '_' and '-')"
        ));
    }
    check_partitions(partitions)
}

/// Whether the mock can give a topic `partitions` partitions (1 to [`MAX_PARTITIONS`]).
pub fn check_partitions(partitions: i32) -> Result<(), String> {
    if !(1..=MAX_PARTITIONS).contains(&partitions) {
        return Err(format!(
            "{partitions} partitions: the dev-broker gives a topic 1 to {MAX_PARTITIONS}"
        ));
    }
    Ok(())
}

impl DevBroker {
    /// Default settings pointed at this broker, with every leadscore topic created with
    /// `partitions` partitions (the mock has no CreateTopics, so the services cannot make them):
    /// what the demo and the benchmarks start from.
    pub fn settings(&self, partitions: i32) -> Result<crate::config::Settings, DevBrokerError> {
        let mut settings = crate::config::Settings::default();
        settings
            .kafka
            .properties
            .insert("bootstrap.servers".into(), self.bootstrap_servers());
        settings.topics.partitions = partitions;
        for (_, name) in settings.topics.names() {
            self.create_topic(name, partitions)?;
        }
        self.create_topic(&settings.instances_topic(), 1)?;
        Ok(settings)
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new and destroyed once, before the handle.
        unsafe { rd::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An address already in use is an error naming it. It once aborted the process: the
    /// error return dropped librdkafka's handle with the mock cluster still alive.
    #[tokio::test]
    async fn an_address_in_use_is_an_error_not_an_abort() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
        let addr = taken.local_addr().expect("its address").to_string();
        match DevBroker::start(&addr).await {
            Err(e) => assert!(e.to_string().contains(&addr), "{e}"),
            Ok(_) => panic!("{addr} is in use, yet the broker started"),
        }
    }

    /// A topic the mock cannot or should not hold is refused before it is asked for: an
    /// empty or invalid name, no partitions, or more than the bound (a hundred million
    /// partitions took 8 GB in 8 s; an empty name and 0 partitions were accepted).
    #[test]
    fn topics_are_checked_before_the_mock_makes_them() {
        assert_eq!(check_topic("lead-events", 3), Ok(()));
        assert_eq!(check_topic("a.b_c-D9", MAX_PARTITIONS), Ok(()));
        for (name, n) in [
            ("", 3),
            (".", 3),
            ("..", 3),
            ("has space", 3),
            ("slash/", 3),
            ("é", 3),
            (&"x".repeat(250), 3),
            ("ok", 0),
            ("ok", -1),
            ("ok", MAX_PARTITIONS + 1),
            ("ok", 100_000_000),
        ] {
            assert!(check_topic(name, n).is_err(), "{name:?} with {n}");
        }
    }

    /// The TLS files are read as every small file an operator names: `/dev/zero` or a file
    /// past the cap is refused at once, naming it (they were read whole: `/dev/zero` took 5 GB
    /// in 8 s), and a pipe nobody writes to is an error, not a wait.
    #[test]
    fn tls_files_are_read_with_a_bound() {
        let dir = crate::dev::scratch::ScratchDir::new("tls").expect("a scratch directory");
        let big = dir.path().join("big.pem");
        let mut pem = b"-----BEGIN CERTIFICATE-----\n".to_vec();
        pem.resize(MAX_PEM_FILE_BYTES as usize + 1, b'A');
        std::fs::write(&big, &pem).expect("written");
        let fifo = dir.path().join("fifo");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo runs");
        assert!(made.success());
        for (cert, key) in [
            (Path::new("/dev/zero"), Path::new("/dev/zero")),
            (big.as_path(), big.as_path()),
            (fifo.as_path(), fifo.as_path()),
        ] {
            let tls = Tls {
                cert: cert.to_path_buf(),
                key: key.to_path_buf(),
            };
            let started = std::time::Instant::now();
            let e = tls.acceptor().err().expect("refused").to_string();
            assert!(e.contains(&cert.display().to_string()), "{e}");
            assert!(
                started.elapsed() < crate::config::small_file::WAIT,
                "{e}: took {:?}",
                started.elapsed()
            );
            if cert != fifo.as_path() {
                assert!(e.contains("larger than 1048576 bytes"), "{e}");
            }
        }
    }
}
