//! Development tools that stand in for the outside world: the embedded Kafka broker
//! (`leadscore dev-broker`), the Salesforce stand-in, and `leadscore demo` built from both.

pub mod broker;
pub mod demo;
pub(crate) mod scratch;
pub mod standin;
