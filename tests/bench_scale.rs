//! `leadscore bench --scale` as a user runs it (the binary: its resident-memory figure comes
//! from re-running itself), and the script that charts its CSV. Behaviour only: the figures
//! are checked for shape and sign, never for speed.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_leadscore");

/// The metric columns of the CSV that the chart draws, one series each.
const CHARTED: [&str; 3] = [
    "engine_events_per_s",
    "resident_bytes_per_user",
    "restore_s",
];

/// A directory of this test's own, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("leadscore-test-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn leadscore(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .output()
        .expect("run leadscore")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The body rows of the first Markdown table in `report`, as cells.
fn table_rows(report: &str) -> (Vec<String>, Vec<Vec<String>>) {
    let cells = |l: &str| -> Vec<String> {
        l.trim()
            .trim_matches('|')
            .split('|')
            .map(|c| c.trim().to_string())
            .collect()
    };
    let mut lines = report.lines().filter(|l| l.starts_with('|'));
    let header = cells(lines.next().expect("a table header"));
    let rows = lines
        .filter(|l| !l.starts_with("|---"))
        .map(cells)
        .collect();
    (header, rows)
}

fn number(s: &str, what: &str) -> f64 {
    s.parse()
        .unwrap_or_else(|e| panic!("{what}: {s:?} is not a number: {e}"))
}

#[test]
fn scale_bench_reports_a_row_per_size_in_the_table_and_the_csv() {
    let dir = Scratch::new("scale-bench");
    let csv = dir.0.join("scale.csv");
    let out = leadscore(&[
        "bench",
        "--scale",
        "--scale-users",
        "2000,5000",
        "--events",
        "20000",
        "--csv",
        csv.to_str().expect("utf-8 path"),
    ]);
    let report = text(&out.stdout);
    assert!(out.status.success(), "{report}\n{}", text(&out.stderr));

    let (header, rows) = table_rows(&report);
    assert_eq!(
        header,
        [
            "users",
            "events",
            "engine events/s",
            "resident B/user",
            "encoded B/user",
            "changelog partitions",
            "restore s",
            "restore records/s",
            "bare consumer records/s",
            "ratio",
            "low watermarks",
            "engine events/s one at a time"
        ],
        "{report}"
    );
    assert_eq!(rows.len(), 2, "{report}");
    for (row, users) in rows.iter().zip(["2000", "5000"]) {
        assert_eq!(row.len(), header.len(), "{report}");
        assert_eq!(row[0], users, "{report}");
        for (cell, name) in row
            .iter()
            .zip(&header)
            .filter(|(_, n)| **n != "low watermarks")
        {
            let v = number(cell, name);
            assert!(v > 0.0 && v.is_finite(), "{name} = {v}\n{report}");
        }
        assert_eq!(row[10], "0", "the mock dropped changelog records\n{report}");
    }
    assert!(
        report.contains("timed over every other batch of 20000 further events"),
        "{report}"
    );

    let text = std::fs::read_to_string(&csv).expect("the CSV");
    let mut lines = text.lines();
    let columns: Vec<&str> = lines.next().expect("a CSV header").split(',').collect();
    for c in CHARTED.iter().chain(&[
        "users",
        "low_watermark_max",
        "engine_events_per_s_one_at_a_time",
    ]) {
        assert!(columns.contains(c), "{c} missing from {columns:?}");
    }
    let records: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    assert_eq!(records.len(), 2, "{text}");
    for (record, users) in records.iter().zip(["2000", "5000"]) {
        assert_eq!(record.len(), columns.len(), "{text}");
        for (value, column) in record.iter().zip(&columns) {
            let v = number(value, column);
            if *column == "low_watermark_max" {
                assert_eq!(v, 0.0, "{text}");
            } else {
                assert!(v > 0.0 && v.is_finite(), "{column} = {v}\n{text}");
            }
        }
        assert_eq!(record[0], users);
    }
}

#[test]
fn the_chart_script_draws_a_series_per_metric_as_valid_svg() {
    let dir = Scratch::new("scale-chart");
    let csv = dir.0.join("scale.csv");
    let svg = dir.0.join("scale.svg");
    std::fs::write(
        &csv,
        "users,events,engine_events_per_s,resident_bytes_per_user,encoded_bytes_per_user,\
         changelog_partitions,restore_s,restore_records_per_s,bare_consumer_records_per_s,ratio,\
         low_watermark_max\n\
         10000,100000,1200000,420.5,250.1,1,0.3,150000,120000,1.25,0\n\
         100000,1000000,950000,410.0,251.0,7,2.1,160000,125000,1.28,0\n\
         1000000,10000000,700000,405.0,250.0,66,20.5,170000,130000,1.31,0\n",
    )
    .expect("write the CSV");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/scale/chart.py");
    let out = Command::new("python3")
        .arg(&script)
        .arg(&csv)
        .arg(&svg)
        .output()
        .expect("run python3");
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Parsed by a real XML parser: each charted metric must be a series with a point per row.
    let check = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.etree.ElementTree as ET\n\
             ns = '{http://www.w3.org/2000/svg}'\n\
             root = ET.parse(sys.argv[1]).getroot()\n\
             for g in root.iter(ns + 'g'):\n\
             \x20   if g.get('class') == 'series':\n\
             \x20       print(g.get('data-metric'), len(g.findall(ns + 'circle')), len(g.findall(ns + 'polyline')))\n",
        )
        .arg(&svg)
        .output()
        .expect("run python3");
    let listed = text(&check.stdout);
    assert!(check.status.success(), "not XML: {}", text(&check.stderr));
    let series: Vec<&str> = listed.lines().collect();
    assert_eq!(
        series,
        CHARTED
            .map(|m| format!("{m} 3 1"))
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        "{listed}"
    );
}

#[test]
fn bad_scale_user_counts_are_refused_naming_the_flag() {
    for bad in [
        "abc",
        "0",
        "99999999999999999999999",
        "50000000",
        "2000,,5000",
    ] {
        let out = leadscore(&["bench", "--scale", "--scale-users", bad]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{bad}: {err}");
        assert!(err.contains("--scale-users"), "{bad}: {err}");
    }
    let out = leadscore(&["bench", "--scale", "--events", "0", "--scale-users", "2000"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("--events"), "{err}");
}
