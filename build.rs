//! Generates the prost types of `proto/leadscore/v1/` at build time.
//!
//! The schemas are compiled by `protox`, a protobuf compiler written in Rust, so building the
//! crate needs no system `protoc`. The well-known types (`google.protobuf.Timestamp`) come with
//! protox and map to `prost_types`, as prost-build does by default.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(
        [
            "leadscore/v1/event.proto",
            "leadscore/v1/score_change.proto",
        ],
        ["proto"],
    )?;
    prost_build::Config::new()
        // Maps decode in key order, so a decoded message is the same whatever order the
        // producer wrote its entries in (protobuf leaves map order unspecified).
        .btree_map(["."])
        .compile_fds(fds)?;
    Ok(())
}
