//! `leadscore lookup USER_ID`: asks any scorer instance for a lead (`GET /v1/leads/{user_id}`;
//! the instance forwards to the partition's owner) and prints it in a short human form, or the
//! JSON answer with `--json`.

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The largest answer read: the largest lead view (see its constant).
const MAX_ANSWER_BYTES: usize = crate::scorer::lookup::MAX_VIEW_BYTES;

#[derive(clap::Args, Debug)]
pub(super) struct LookupArgs {
    /// The lead's user id.
    user_id: String,
    /// Any scorer instance's admin URL.
    #[arg(long, default_value = "http://127.0.0.1:9464")]
    url: String,
    /// Print the JSON answer instead of text.
    #[arg(long)]
    json: bool,
    /// A file holding the bearer token (admin.token_file's first line will do). The token can
    /// also come from LEADSCORE_LOOKUP_TOKEN; never from the command line, where `ps` shows it.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// While the answer is 503 (a rebalance or restore), ask again for up to this long
    /// ("0s": once).
    #[arg(long, default_value = "10s")]
    retry_for: String,
}

pub(super) fn run_lookup(args: LookupArgs) -> Result<ExitCode> {
    let retry_for = crate::duration::parse(&args.retry_for)
        .with_context(|| format!("--retry-for {:?}", args.retry_for))?;
    let token = match &args.token_file {
        Some(path) => Some(
            crate::scorer::lookup::read_tokens(path)?
                .into_iter()
                .next()
                .unwrap_or_default(),
        ),
        None => std::env::var("LEADSCORE_LOOKUP_TOKEN")
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let url = reqwest::Url::parse(&args.url)
        .with_context(|| format!("--url {:?} is not a URL", args.url))?;
    if !matches!(url.scheme(), "http" | "https") {
        bail!(
            "--url {:?}: only http:// and https:// are supported",
            args.url
        );
    }
    let url = crate::scorer::lookup::lead_url(url, &args.user_id)
        .ok_or_else(|| anyhow::anyhow!("--url {:?} cannot take a path", args.url))?;
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot set up the HTTP client")?;
    let deadline = Instant::now() + Duration::from_millis(retry_for.max(0) as u64);
    let (status, body) = loop {
        let mut request = client.get(url.clone());
        if let Some(t) = &token {
            request = request.bearer_auth(t);
        }
        let response = request
            .send()
            .with_context(|| format!("cannot reach {}", args.url))?;
        let status = response.status();
        let wait = response
            .headers()
            .get(reqwest::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(1)
            .clamp(1, 10);
        let body = read_bounded(response)?;
        if status == reqwest::StatusCode::SERVICE_UNAVAILABLE
            && Instant::now() + Duration::from_secs(wait) <= deadline
        {
            std::thread::sleep(Duration::from_secs(wait));
            continue;
        }
        break (status, body);
    };
    let view: serde_json::Value = serde_json::from_slice(&body).with_context(|| {
        format!(
            "{} answered {status} with a body that is not JSON",
            args.url
        )
    })?;
    if status.is_success() {
        if args.json {
            println!("{view}");
        } else {
            print!("{}", crate::explain::render_text(&view));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = view["error"].as_str().unwrap_or("no message");
    eprintln!("{}: {status}: {message}", args.user_id);
    Ok(ExitCode::from(1))
}

fn read_bounded(response: reqwest::blocking::Response) -> Result<Vec<u8>> {
    use std::io::Read;
    let mut body = Vec::new();
    response
        .take(MAX_ANSWER_BYTES as u64 + 1)
        .read_to_end(&mut body)
        .context("reading the answer")?;
    if body.len() > MAX_ANSWER_BYTES {
        bail!("the answer is larger than {MAX_ANSWER_BYTES} bytes: is --url a leadscore scorer?");
    }
    Ok(body)
}
