//! The prost types generated from `proto/leadscore/v1/` by `build.rs`.
//!
//! These are wire types only: [`crate::codec`] converts them to and from the validated model
//! ([`crate::event::Event`], [`crate::change::ScoreChange`]), so nothing else depends on them.

/// Package `leadscore.v1`: the input event and the score change.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod v1 {
    include!(concat!(env!("OUT_DIR"), "/leadscore.v1.rs"));
}

/// The well-known types the schemas use (`google.protobuf.Timestamp`), generated beside them.
#[allow(clippy::all, clippy::pedantic, missing_docs, rustdoc::all)]
pub mod google {
    pub mod protobuf {
        include!(concat!(env!("OUT_DIR"), "/google.protobuf.rs"));
    }
}
