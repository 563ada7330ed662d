//! Generates the prost types of `proto/leadscore/v1/` (at the repository's top) at build time.
//!
//! The schemas are compiled by `protox`, a protobuf compiler written in Rust, so building the
//! crate needs no system `protoc`. The one well-known type used, `google.protobuf.Timestamp`, is
//! generated here too (`compile_well_known_types`), so the engine depends on `prost` alone.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=../../proto");
    let fds = protox::compile(
        [
            "leadscore/v1/event.proto",
            "leadscore/v1/score_change.proto",
        ],
        ["../../proto"],
    )?;
    prost_build::Config::new()
        // Maps decode in key order, so a decoded message is the same whatever order the
        // producer wrote its entries in (protobuf leaves map order unspecified).
        .btree_map(["."])
        .compile_well_known_types()
        .compile_fds(fds)?;
    Ok(())
}
