/// mimalloc instead of glibc's malloc: the scorer allocates and frees small blocks for every
/// event (decoded strings, score changes) and holds a few small blocks per user for as long as
/// it runs. Measured in docs/scale.md ("What changed the memory"): faster per event and fewer
/// resident bytes per user. librdkafka, a C library, keeps glibc's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leadscore::cli::run()
}
