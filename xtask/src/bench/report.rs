//! The bench's table on stdout and its JSON in `target/bench/`.

use std::{fs, path::Path};

use anyhow::Result;
use serde::Serialize;

use super::stats::Stat;

/// One figure of the table.
#[derive(Serialize)]
pub struct Row {
    pub figure: String,
    pub unit: String,
    pub ours: Stat,
    pub peer: Option<Peer>,
    pub target: String,
    pub result: Verdict,
    pub workload: String,
}

/// The same figure measured with a peer tool.
#[derive(Serialize)]
pub struct Peer {
    pub name: String,
    #[serde(flatten)]
    pub stat: Stat,
}

impl Peer {
    pub fn new(name: &str, stat: Stat) -> Option<Self> {
        Some(Peer {
            name: name.into(),
            stat,
        })
    }
}

/// How a figure compares with its target.
#[derive(Clone, Copy, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    Pass,
    Miss,
    /// No target: reported only.
    Report,
}

impl From<bool> for Verdict {
    fn from(pass: bool) -> Self {
        if pass {
            Verdict::Pass
        } else {
            Verdict::Miss
        }
    }
}

impl Verdict {
    fn word(self) -> &'static str {
        match self {
            Verdict::Pass => "pass",
            Verdict::Miss => "miss",
            Verdict::Report => "report",
        }
    }
}

impl Row {
    fn ratio(&self) -> Option<f64> {
        self.peer.as_ref().map(|p| self.ours.median / p.stat.median)
    }
}

fn fmt(stat: &Stat) -> String {
    // Ratios (below 10) need more digits than nanoseconds to be read against a 0.97 target.
    let digits = if stat.max.abs() < 10.0 { 3 } else { 1 };
    if stat.n > 1 {
        format!(
            "{:.digits$} ({:.digits$}-{:.digits$})",
            stat.median, stat.min, stat.max
        )
    } else {
        format!("{:.digits$}", stat.median)
    }
}

/// The Markdown table and the workload of each figure.
pub fn print(rows: &[Row], quick: bool, machine: &str) {
    println!(
        "\nprofilerd bench{} on {machine}",
        if quick { " --quick" } else { "" }
    );
    println!("| figure | unit | profilerd | peer | ratio | target | result |");
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for row in rows {
        let peer = row
            .peer
            .as_ref()
            .map_or("-".to_string(), |p| format!("{}: {}", p.name, fmt(&p.stat)));
        let ratio = row.ratio().map_or("-".to_string(), |r| format!("{r:.2}"));
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            row.figure,
            row.unit,
            fmt(&row.ours),
            peer,
            ratio,
            row.target,
            row.result.word()
        );
    }
    println!("\nWorkloads:");
    for row in rows {
        println!("- {}: {}", row.figure, row.workload);
    }
}

#[derive(Serialize)]
struct Results<'a> {
    machine: &'a str,
    quick: bool,
    pairs: usize,
    rows: Vec<RowJson<'a>>,
}

#[derive(Serialize)]
struct RowJson<'a> {
    #[serde(flatten)]
    row: &'a Row,
    /// NaN (and so null) when a median is missing.
    ratio: Option<f64>,
}

/// Writes the results as JSON to `path` (a missing figure, NaN, is written as null).
pub fn write_json(
    path: &Path,
    rows: &[Row],
    quick: bool,
    pairs: usize,
    machine: &str,
) -> Result<()> {
    let results = Results {
        machine,
        quick,
        pairs,
        rows: rows
            .iter()
            .map(|row| RowJson {
                row,
                ratio: row.ratio(),
            })
            .collect(),
    };
    let mut json = serde_json::to_string_pretty(&results)?;
    json.push('\n');
    fs::write(path, json)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::stat;

    #[test]
    fn json_has_every_field_and_null_for_nan() {
        let row = Row {
            figure: "5. start-up \"quoted\"".into(),
            unit: "ms".into(),
            ours: stat(&[1.0, 3.0]),
            peer: Peer::new("bpftrace", stat(&[])),
            target: "report".into(),
            result: Verdict::Report,
            workload: "w".into(),
        };
        let path = std::env::temp_dir().join(format!("bench-json-{}", std::process::id()));
        write_json(&path, &[row], true, 2, "2 CPUs").unwrap();
        let value: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(&path).unwrap()).unwrap();
        let _ = fs::remove_file(&path);
        assert_eq!(value["machine"], "2 CPUs");
        assert_eq!(value["quick"], true);
        assert_eq!(value["pairs"], 2);
        let row = &value["rows"][0];
        assert_eq!(row["figure"], "5. start-up \"quoted\"");
        assert_eq!(row["ours"]["median"], 2.0);
        assert_eq!(row["ours"]["n"], 2);
        assert_eq!(row["peer"]["name"], "bpftrace");
        assert!(row["peer"]["median"].is_null());
        assert!(row["ratio"].is_null());
        assert_eq!(row["result"], "report");
    }
}
