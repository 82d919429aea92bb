//! One row per figure, rendered as a Markdown table.

/// Whether a figure met its goal.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Met {
    Yes,
    No,
    /// Informational figure without a goal.
    Info,
}

impl Met {
    /// `Yes` when `ok`, else `No`.
    pub fn from(ok: bool) -> Met {
        if ok {
            Met::Yes
        } else {
            Met::No
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Met::Yes => "yes",
            Met::No => "no",
            Met::Info => "n/a",
        }
    }
}

/// One line of the results table.
#[derive(Clone, Debug)]
pub struct Row {
    pub figure: String,
    pub measured: String,
    pub peer: String,
    pub ratio: String,
    pub goal: String,
    pub met: Met,
}

impl Row {
    /// An informational row (no peer, no goal).
    pub fn info(figure: impl Into<String>, measured: impl Into<String>) -> Row {
        Row {
            figure: figure.into(),
            measured: measured.into(),
            peer: "–".into(),
            ratio: "–".into(),
            goal: "–".into(),
            met: Met::Info,
        }
    }

    /// A benchmark that could not run: always a missed goal.
    pub fn failed(figure: &str, err: &anyhow::Error) -> Row {
        Row {
            figure: figure.into(),
            measured: format!(
                "error: {}",
                format!("{err:#}").replace('|', "/").replace('\n', " ")
            ),
            peer: "–".into(),
            ratio: "–".into(),
            goal: "runs".into(),
            met: Met::No,
        }
    }
}

/// The Markdown table.
pub fn render(rows: &[Row]) -> String {
    let mut out = String::from(
        "| figure | measured | peer/limit measured in the same run | ratio | goal | met? |\n\
         |---|---|---|---|---|---|\n",
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} | {} |\n",
            r.figure,
            r.measured,
            r.peer,
            r.ratio,
            r.goal,
            r.met.as_str()
        ));
    }
    out
}

/// `a ÷ b` as a percentage.
pub fn pct(a: f64, b: f64) -> String {
    let p = 100.0 * a / b;
    if b > 0.0 && p < 10.0 {
        format!("{p:.1}%")
    } else if b > 0.0 {
        format!("{p:.0}%")
    } else {
        "–".into()
    }
}
