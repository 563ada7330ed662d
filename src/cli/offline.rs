//! The offline commands: `leadscore simulate` and `leadscore rules check`.

use crate::engine::Engine;
use crate::{codec, rules, simulate, timestamp};
use anyhow::{Context, Result};
use std::io::{self, BufReader, Write};
use std::path::PathBuf;
use std::process::ExitCode;

fn load_rules(path: &std::path::Path) -> Result<rules::Rules> {
    crate::config::rules_file::load(path).map_err(|e| anyhow::anyhow!("invalid rules:\n{e}"))
}

/// `leadscore simulate`.
#[derive(clap::Args, Debug)]
pub(super) struct SimulateArgs {
    /// The rules file (TOML).
    #[arg(long)]
    rules: PathBuf,
    /// Input events, one JSON object per line.
    #[arg(long)]
    events: PathBuf,
    /// Move the clock on to this RFC 3339 time at the end, firing due inactivity timers.
    #[arg(long)]
    now: Option<String>,
    /// Print the score changes instead of the users' final state.
    #[arg(long, conflicts_with = "explain")]
    changes: bool,
    /// Split the events into this many partitions by user id (Kafka's default
    /// partitioner), each with its own clock, as the scorer would see them. At most 10,000
    /// (the dev-broker's limit too).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(i32).range(1..=i64::from(crate::dev::broker::MAX_PARTITIONS)))]
    partitions: i32,
    /// A line whose `time` is further than this ahead of the wall clock (or of --now, when
    /// that is later: the simulation's present) is a bad line and moves no clock, as the scorer
    /// dead-letters it (scorer.max_future_skew).
    #[arg(long, default_value = "1h")]
    max_future_skew: String,
    /// Print this user as `leadscore lookup` shows a lead: score, status and the recent
    /// changes with their reasons.
    #[arg(long, value_name = "USER_ID")]
    explain: Option<String>,
    /// With --explain: the JSON view (as GET /v1/leads/{user_id} answers) instead of text.
    #[arg(long, requires = "explain")]
    json: bool,
    /// With --explain: how many recent changes each user keeps (scorer.explain_depth, at most
    /// 1000).
    #[arg(
        long,
        default_value_t = crate::history::DEFAULT_DEPTH,
        value_parser = clap::builder::RangedU64ValueParser::<usize>::new()
            .range(0..=crate::config::MAX_EXPLAIN_DEPTH as u64)
    )]
    explain_depth: usize,
}

pub(super) fn run_simulate(args: SimulateArgs) -> Result<ExitCode> {
    let SimulateArgs {
        rules: rules_path,
        events,
        now,
        changes,
        partitions,
        max_future_skew,
        explain,
        json,
        explain_depth,
    } = args;
    let engine = Engine::new(load_rules(&rules_path)?).with_explain_depth(explain_depth);
    let max_future_skew = crate::duration::parse(&max_future_skew)
        .with_context(|| format!("--max-future-skew {max_future_skew:?}"))?;
    let now = now
        .map(|s| timestamp::parse_rfc3339(&s).with_context(|| format!("--now {s:?}")))
        .transpose()?;
    let file = std::fs::File::open(&events)
        .with_context(|| format!("cannot open events file {}", events.display()))?;
    let sim = simulate::run_guarded(
        &engine,
        BufReader::new(file),
        now,
        partitions,
        timestamp::wall_clock_millis(),
        max_future_skew,
    )
    .with_context(|| format!("reading {}", events.display()))?;
    // The output, then the bad lines on stderr and the exit status: a reader that left early
    // (`leadscore simulate | head`) ends the output, not the report (1 when lines were bad).
    let written = (|| -> anyhow::Result<()> {
        let stdout = io::stdout();
        let mut out = io::BufWriter::new(stdout.lock());
        if let Some(user) = &explain {
            let Some(st) = sim.users.get(user) else {
                anyhow::bail!("user {user:?} has no state after {}", events.display());
            };
            let view = crate::explain::lead_view(&engine, user, st);
            if json {
                writeln!(out, "{view}")?;
            } else {
                write!(out, "{}", crate::explain::render_text(&view))?;
            }
        } else if changes {
            for c in &sim.changes {
                writeln!(out, "{}", codec::change_to_json(c))?;
            }
        } else {
            for (user, st) in &sim.users {
                writeln!(out, "{}", simulate::user_json(user, st))?;
            }
        }
        out.flush()?;
        Ok(())
    })();
    if let Err(e) = written {
        if !super::reader_left(&e) {
            return Err(e);
        }
    }
    for bad in &sim.bad_lines {
        eprintln!("{}:{}: {}", events.display(), bad.line, bad.reason);
    }
    Ok(if sim.bad_line_count == 0 {
        ExitCode::SUCCESS
    } else {
        let listed = if sim.bad_line_count > sim.bad_lines.len() {
            format!(" (the first {} listed above)", sim.bad_lines.len())
        } else {
            String::new()
        };
        eprintln!(
            "{} of the input lines were bad and skipped{listed}",
            sim.bad_line_count
        );
        ExitCode::from(1)
    })
}

/// Exit status 1 when a file has errors, or (with `strict`) warnings; 0 otherwise.
pub(super) fn rules_check(files: &[PathBuf], strict: bool) -> ExitCode {
    let mut ok = true;
    for f in files {
        match crate::config::rules_file::check(f) {
            Ok(rules::Checked { rules: r, warnings }) => {
                for w in &warnings {
                    eprintln!("{w}");
                }
                // --strict: a warning fails the check like an error.
                ok &= !strict || warnings.is_empty();
                // A reader that left (`rules check | head`) changes nothing: the status says
                // whether the files were good (`println!` panicked on the closed pipe). Any
                // other failure to write is an error.
                let written = writeln!(
                    io::stdout(),
                    "{}: ok{}: score {:?}, {} entry matcher(s), {} group(s), {} audience predicate(s), inactivity {}",
                    f.display(),
                    match warnings.len() {
                        0 => String::new(),
                        n => format!(" with {n} warning(s)"),
                    },
                    r.score.name,
                    r.entry.on.len(),
                    r.groups.len(),
                    r.audience.include.len() + r.audience.exclude.len(),
                    match r.inactivity {
                        Some(i) => format!("every {}", crate::duration::format(i.window)),
                        None => "off".to_string(),
                    }
                );
                if let Err(e) = written {
                    if e.kind() != io::ErrorKind::BrokenPipe {
                        eprintln!("error: writing to standard output: {e}");
                        return ExitCode::from(1);
                    }
                }
            }
            Err(errors) => {
                ok = false;
                eprintln!("{errors}");
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
