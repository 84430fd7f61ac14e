//! Writing the report folder: merged CSVs, one SVG per chart, and report.md that puts each
//! question's table next to its charts. The report is built in a temporary folder beside the
//! target and moved into place only when complete; the outputs it owns (report.md, charts/,
//! merged-*.csv) replace those of a previous report rather than mixing with them, and any
//! other file in the folder is left alone.

use std::path::{Path, PathBuf};

use super::load::{load, Inputs};
use super::run_charts::{self, NamedChart};
use super::runs::{self, Section};
use super::table::CsvTable;
use super::view::machine;
use super::{plans, ReportError};

/// What a report run wrote.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportSummary {
    /// report.md.
    pub report: PathBuf,
    /// Every chart written.
    pub charts: Vec<PathBuf>,
    /// Run rows merged.
    pub run_rows: usize,
    /// Plan rows merged.
    pub plan_rows: usize,
    /// Distinct machines among the runs.
    pub machines: Vec<String>,
}

/// Rows one table of report.md shows; the merged CSV beside it keeps them all. Past a few
/// hundred rows a page stops answering its question, and 200,000 would make it ~90 MB.
pub const MAX_TABLE_ROWS: usize = 1_000;
/// Lines one chart draws; past this a legend cannot name them.
pub const MAX_CHART_SERIES: usize = 48;

/// A section and the charts shown under it.
struct Part {
    section: Section,
    charts: Vec<NamedChart>,
}

fn write_file(path: &Path, text: &str) -> Result<(), ReportError> {
    std::fs::write(path, text).map_err(|e| ReportError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// The parts of a run report, in reading order.
fn run_parts(t: &CsvTable) -> Vec<Part> {
    let mut charts = run_charts::tokens_per_s(t);
    charts.extend(run_charts::itl(t));
    let mut parts = vec![
        Part {
            section: runs::throughput(t),
            charts,
        },
        Part {
            section: runs::memory(t),
            charts: run_charts::kv_memory(t),
        },
        Part {
            section: runs::quantization(t),
            charts: run_charts::error_vs_bits(t),
        },
        Part {
            section: runs::limits(t),
            charts: Vec::new(),
        },
        Part {
            section: runs::predicted(t),
            charts: Vec::new(),
        },
    ];
    if let Some(s) = runs::not_timed(t) {
        parts.push(Part {
            section: s,
            charts: Vec::new(),
        });
    }
    parts
}

/// What a report owns in its folder: replaced whole by the next report. report.md goes last,
/// so a reader never finds a page whose charts are missing.
const OWNED: [&str; 4] = ["charts", "merged-runs.csv", "merged-plans.csv", "report.md"];

/// Refuses a folder whose report outputs are not what a report writes there, before
/// anything is built: replacing them would delete the user's files (a folder named
/// report.md, a CSV kept in charts/).
fn check_owned(out: &Path) -> Result<(), ReportError> {
    let refuse = |path: PathBuf, why: String| ReportError::Write {
        path,
        message: format!("{why}; a report replaces it: move it or give another folder"),
    };
    for name in OWNED {
        let path = out.join(name);
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if name != "charts" {
            if !meta.is_file() {
                return Err(refuse(path, "it is not a file".into()));
            }
            continue;
        }
        if !meta.is_dir() {
            return Err(refuse(path, "it is not the charts folder".into()));
        }
        let entries = std::fs::read_dir(&path).map_err(write_error(&path))?;
        for entry in entries {
            let entry = entry.map_err(write_error(&path))?;
            let chart = entry.file_type().is_ok_and(|t| t.is_file())
                && entry.path().extension().is_some_and(|e| e == "svg");
            if !chart {
                return Err(refuse(
                    entry.path(),
                    "the charts folder holds a file a report did not write".into(),
                ));
            }
        }
    }
    Ok(())
}

fn write_error(path: &Path) -> impl Fn(std::io::Error) -> ReportError + '_ {
    move |e| ReportError::Write {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

/// A spinner on stderr naming the section being written (a report of 100,000s of rows takes
/// a while); drawn only when stderr is a terminal.
fn progress() -> indicatif::ProgressBar {
    let bar =
        indicatif::ProgressBar::with_draw_target(None, indicatif::ProgressDrawTarget::stderr());
    if let Ok(style) =
        indicatif::ProgressStyle::with_template("{spinner} [{elapsed}] report: {wide_msg}")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(std::time::Duration::from_millis(200));
    bar
}

/// Reads `inputs` (run and/or plan CSVs), merges them and writes the report into `out`.
pub fn write_report(inputs: &[PathBuf], out: &Path) -> Result<ReportSummary, ReportError> {
    // Every input is read and checked before anything is written.
    let progress = progress();
    progress.set_message(format!("reading {} CSV(s)", inputs.len()));
    let loaded = load(inputs)?;
    if out.exists() && !out.is_dir() {
        return Err(ReportError::Write {
            path: out.to_path_buf(),
            message: "it is a file; give a folder for the report".into(),
        });
    }
    // The nearest existing part of the path must be a folder: under a file, creating the
    // folder would only say "File exists".
    if let Some(file) = crate::export::atomic::file_above(out) {
        return Err(ReportError::Write {
            path: out.to_path_buf(),
            message: format!(
                "{} is not a folder; give a report folder that is not inside a file",
                file.display()
            ),
        });
    }
    check_owned(out)?;
    let parent = match out.parent().filter(|p| !p.as_os_str().is_empty()) {
        Some(p) => p,
        None => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(write_error(parent))?;
    // Beside the target: on its filesystem, so moving the outputs in is a rename.
    let stage = tempfile::Builder::new()
        .prefix(".kvbench-report-")
        .tempdir_in(parent)
        .map_err(write_error(parent))?;
    let built = build(inputs, loaded, stage.path(), &progress)?;
    progress.finish_and_clear();
    std::fs::create_dir_all(out).map_err(write_error(out))?;
    for name in OWNED {
        let (old, new) = (out.join(name), stage.path().join(name));
        if old.is_dir() {
            std::fs::remove_dir_all(&old).map_err(write_error(&old))?;
        } else if old.exists() {
            std::fs::remove_file(&old).map_err(write_error(&old))?;
        }
        if new.exists() {
            std::fs::rename(&new, &old).map_err(write_error(&old))?;
        }
    }
    let moved = |p: &Path| out.join(p.strip_prefix(stage.path()).unwrap_or(p));
    Ok(ReportSummary {
        report: moved(&built.report),
        charts: built.charts.iter().map(|c| moved(c)).collect(),
        ..built
    })
}

/// Writes the whole report into the empty folder `out`.
fn build(
    inputs: &[PathBuf],
    loaded: Inputs,
    out: &Path,
    progress: &indicatif::ProgressBar,
) -> Result<ReportSummary, ReportError> {
    let Inputs { runs, plans } = loaded;
    let charts_dir = out.join("charts");
    std::fs::create_dir_all(&charts_dir).map_err(|e| ReportError::Write {
        path: charts_dir.clone(),
        message: e.to_string(),
    })?;
    let mut summary = ReportSummary {
        report: out.join("report.md"),
        run_rows: runs.len(),
        plan_rows: plans.len(),
        machines: runs.distinct_by(|r| machine(&runs, r)),
        ..ReportSummary::default()
    };
    let mut parts = Vec::new();
    if !runs.is_empty() {
        runs.write(&out.join("merged-runs.csv"))?;
        parts.extend(run_parts(&runs));
    }
    if !plans.is_empty() {
        plans.write(&out.join("merged-plans.csv"))?;
        parts.push(Part {
            section: plans::capacity(&plans),
            charts: plans::charts(&plans),
        });
    }

    let mut md = String::from("# kvbench report\n\n");
    md.push_str(&format!(
        "{} run rows from {} machine(s), {} plan rows, merged from:\n\n",
        summary.run_rows,
        summary.machines.len(),
        summary.plan_rows
    ));
    for p in inputs {
        md.push_str(&format!("- `{}`\n", p.display()));
    }
    if !summary.machines.is_empty() {
        md.push_str("\nMachines:\n\n");
        for m in &summary.machines {
            md.push_str(&format!("- {m}\n"));
        }
    }
    for part in parts {
        progress.set_message(format!(
            "{} ({} rows)",
            part.section.title,
            part.section.table.rows.len()
        ));
        let mut table = part.section.table;
        let hidden = table.rows.len().saturating_sub(MAX_TABLE_ROWS);
        table.rows.truncate(MAX_TABLE_ROWS);
        md.push_str(&format!(
            "\n## {}\n\n{}\n\n{}",
            part.section.title,
            part.section.intro,
            table.render()
        ));
        if hidden > 0 {
            md.push_str(&format!(
                "\n*{hidden} more rows are in the merged CSV beside this page; report fewer \
                 workloads at a time to see them here.*\n"
            ));
        }
        for c in part.charts {
            if c.chart.drawable_points() == 0 {
                continue;
            }
            if c.chart.series.len() > MAX_CHART_SERIES {
                md.push_str(&format!(
                    "\n*Chart \"{}\" left out: {} lines (at most {MAX_CHART_SERIES} can be told \
                     apart); report fewer workloads at a time to draw it.*\n",
                    c.chart.title,
                    c.chart.series.len()
                ));
                continue;
            }
            let path = charts_dir.join(&c.file);
            write_file(&path, &c.chart.to_svg()?)?;
            md.push_str(&format!("\n![{}](charts/{})\n", c.chart.title, c.file));
            summary.charts.push(path);
        }
    }
    write_file(&summary.report, &md)?;
    Ok(summary)
}
