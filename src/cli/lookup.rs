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
    check_user_id(&args.user_id)?;
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
        let body = read_bounded(response, BODY_DEADLINE)?;
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
        check_view(&view, &args.user_id)
            .with_context(|| format!("{} answered {status}", args.url))?;
        if args.json {
            println!("{view}");
        } else {
            print!("{}", crate::explain::render_text(&view));
        }
        return Ok(ExitCode::SUCCESS);
    }
    let message = view["error"].as_str().unwrap_or("no message");
    eprintln!("{}", error_line(&args.user_id, status, message));
    Ok(ExitCode::from(1))
}

/// A refused lookup's line: the id and the server's message quoted and escaped when they hold
/// a control character (an id with a line break or an escape sequence, which the server's
/// message repeats), as the lead's text view prints them (an outside check saw the raw id).
fn error_line(user_id: &str, status: reqwest::StatusCode, message: &str) -> String {
    use crate::explain::printable;
    format!("{}: {status}: {}", printable(user_id), printable(message))
}

/// How long an answer's body may take to arrive, all of it. The client's timeout bounds each
/// read, so a body sent a byte at a time would otherwise never end (an outside check).
const BODY_DEADLINE: Duration = Duration::from_secs(30);

/// The answer's body: at most [`MAX_ANSWER_BYTES`], all of it within `within`.
fn read_bounded(mut response: reqwest::blocking::Response, within: Duration) -> Result<Vec<u8>> {
    use std::io::Read;
    let deadline = Instant::now() + within;
    let mut body = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if Instant::now() > deadline {
            bail!("the answer did not arrive within {within:?}: is --url a leadscore scorer?");
        }
        let n = response.read(&mut chunk).context("reading the answer")?;
        if n == 0 {
            return Ok(body);
        }
        body.extend_from_slice(&chunk[..n]);
        if body.len() > MAX_ANSWER_BYTES {
            bail!(
                "the answer is larger than {MAX_ANSWER_BYTES} bytes: is --url a leadscore scorer?"
            );
        }
    }
}

/// A successful answer must be a lookup of `user_id`: its `user_id` and an integer `score`.
/// Any other JSON (`{}`, another service's) was printed as a lead with no score (an outside
/// check).
fn check_view(view: &serde_json::Value, user_id: &str) -> Result<()> {
    let same_user = view.get("user_id").and_then(serde_json::Value::as_str) == Some(user_id);
    let scored = view.get("score").is_some_and(serde_json::Value::is_i64);
    if !(same_user && scored) {
        bail!(
            "the answer is not a lookup of {user_id:?} (its user_id and an integer score): is \
             --url a leadscore scorer?"
        );
    }
    Ok(())
}

/// The id's bounds, checked before any request: an empty id asked for `/v1/leads/`, which
/// the scorer answers 404 "no such path" (an outside check) instead of naming the bound.
fn check_user_id(user_id: &str) -> Result<()> {
    if let Some(bound) = crate::scorer::lookup::user_id_out_of_bounds(user_id) {
        bail!("{bound} (this one is {})", user_id.len());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Found by an outside check: any JSON answer was printed as a lead.
    #[test]
    fn a_refusal_line_escapes_control_characters() {
        let line = error_line(
            "inj\nfake  score 999",
            reqwest::StatusCode::NOT_FOUND,
            "no lead \"inj\nfake\u{1b}[2J\"",
        );
        assert_eq!(line.lines().count(), 1, "{line}");
        assert!(!line.contains('\u{1b}'), "{line:?}");
        assert!(
            line.starts_with(r#""inj\nfake  score 999": 404 Not Found: "#),
            "{line}"
        );
        assert_eq!(
            error_line("u1", reqwest::StatusCode::NOT_FOUND, "no lead"),
            "u1: 404 Not Found: no lead"
        );
    }

    #[test]
    fn an_empty_or_overlong_user_id_is_refused_before_any_request() {
        assert!(check_user_id("")
            .unwrap_err()
            .to_string()
            .contains("1 to 1024 bytes"));
        assert!(check_user_id(&"u".repeat(1025)).is_err());
        assert!(check_user_id(&"u".repeat(1024)).is_ok());
        assert!(check_user_id("dup\tid").is_ok());
    }

    #[test]
    fn only_a_lookup_of_the_user_asked_for_is_a_lead() {
        let good = serde_json::json!({"user_id": "u1", "score": 5, "enrolled": true});
        assert!(check_view(&good, "u1").is_ok());
        for other in [
            serde_json::json!({}),
            serde_json::json!([]),
            serde_json::json!(5),
            serde_json::json!({"user_id": 5, "score": "high"}),
            serde_json::json!({"user_id": "u2", "score": 5}),
            serde_json::json!({"user_id": "u1", "score": 1.5}),
        ] {
            let e = check_view(&other, "u1").expect_err(&other.to_string());
            assert!(e.to_string().contains("is not a lookup of \"u1\""), "{e}");
        }
    }

    /// Found by an outside check: a body sent a byte a second kept `lookup` waiting for ever,
    /// each read within the client's timeout.
    #[test]
    fn a_body_that_trickles_in_is_given_up_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
        let addr = listener.local_addr().expect("bound");
        std::thread::spawn(move || {
            let (mut s, _) = listener.accept().expect("a connection");
            // The request first: an answer written before it was sent is refused by the
            // client as unexpected (seen once in CI).
            let mut head = Vec::new();
            let mut byte = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
                match std::io::Read::read(&mut s, &mut byte) {
                    Ok(1) => head.push(byte[0]),
                    _ => return,
                }
            }
            let _ = s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n{");
            for _ in 0..100 {
                std::thread::sleep(Duration::from_millis(100));
                if s.write_all(b" ").is_err() {
                    return;
                }
            }
        });
        let client = reqwest::blocking::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client");
        let response = client
            .get(format!("http://{addr}/v1/leads/u1"))
            .send()
            .expect("headers");
        let started = Instant::now();
        let e = read_bounded(response, Duration::from_millis(500)).expect_err("given up");
        assert!(e.to_string().contains("did not arrive within"), "{e}");
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }
}
