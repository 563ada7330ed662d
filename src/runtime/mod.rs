//! The Kafka runtime both services stand on: clients and topics, owned partitions' keyed state
//! backed by a changelog and a local store, the consumer loop, shutdown.

pub mod blocking;
pub mod changelog;
pub mod concurrent;
pub mod error;
pub mod kafka;
pub mod keyed_state;
pub mod owned;
pub mod service;
pub mod shutdown;
pub mod store;
pub(crate) mod sync;
