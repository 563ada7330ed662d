//! `leadscore dev-broker`: librdkafka's built-in mock cluster (a Kafka-protocol broker inside
//! this process) served on a fixed address, with leadscore's topics created.
//!
//! The mock binds an ephemeral port, so a small TCP forwarder listens on the requested address
//! and the broker advertises that address in its metadata
//! (`rd_kafka_mock_broker_set_host_port`). For development and tests only: the mock keeps
//! roughly the last 5 MiB or 100,000 message sets per partition, does not compact, and shows
//! aborted transactional records to `read_committed` consumers (docs/brokers.md).

use rdkafka::bindings as rd;
use rdkafka::config::ClientConfig;
use rdkafka::producer::BaseProducer;
use rdkafka::producer::Producer;
use std::ffi::{CStr, CString};
use std::net::SocketAddr;
use thiserror::Error;
use tokio::net::{TcpListener, TcpStream};

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
                tokio::spawn(async move {
                    if let Ok(mut upstream) = TcpStream::connect(&target).await {
                        let _ = client.set_nodelay(true);
                        let _ = upstream.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
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
        Ok(settings)
    }
}

impl Drop for DevBroker {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_mock_cluster_new and destroyed once, before the handle.
        unsafe { rd::rd_kafka_mock_cluster_destroy(self.cluster) };
    }
}
