//! Figures, their baselines and targets, printed as one Markdown table.

use std::fmt::Write as _;

/// What a figure must reach.
#[derive(Debug, Clone, Copy)]
pub enum Target {
    /// No target: context for the other figures.
    None,
    /// The value must be at least this.
    AtLeast(f64),
    /// The value must be at most this.
    AtMost(f64),
    /// value / baseline must be at least this.
    RatioAtLeast(f64),
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub scenario: &'static str,
    pub what: String,
    pub value: f64,
    pub unit: &'static str,
    /// What the value is compared with, measured in the same run.
    pub baseline: Option<(String, f64)>,
    pub target: Target,
    /// A second target on the value itself (say, a ratio and an absolute floor).
    pub also: Target,
}

impl Figure {
    pub fn new(
        scenario: &'static str,
        what: impl Into<String>,
        value: f64,
        unit: &'static str,
    ) -> Self {
        Self {
            scenario,
            what: what.into(),
            value,
            unit,
            baseline: None,
            target: Target::None,
            also: Target::None,
        }
    }

    pub fn baseline(mut self, what: impl Into<String>, value: f64) -> Self {
        self.baseline = Some((what.into(), value));
        self
    }

    pub fn target(mut self, target: Target) -> Self {
        self.target = target;
        self
    }

    pub fn also(mut self, target: Target) -> Self {
        self.also = target;
        self
    }

    pub fn ratio(&self) -> Option<f64> {
        self.baseline
            .as_ref()
            .filter(|(_, b)| *b != 0.0)
            .map(|(_, b)| self.value / b)
    }

    fn check(&self, target: Target) -> Option<bool> {
        match target {
            Target::None => None,
            Target::AtLeast(t) => Some(self.value >= t),
            Target::AtMost(t) => Some(self.value <= t),
            Target::RatioAtLeast(t) => Some(self.ratio()? >= t),
        }
    }

    /// Whether every target is met (`None`: the figure has none).
    pub fn met(&self) -> Option<bool> {
        match (self.check(self.target), self.check(self.also)) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(true) && b.unwrap_or(true)),
        }
    }
}

fn number(value: f64) -> String {
    let abs = value.abs();
    if abs >= 100_000.0 {
        let whole = value.round() as i64;
        let digits = whole.abs().to_string();
        let mut out = String::new();
        for (i, c) in digits.chars().enumerate() {
            if i > 0 && (digits.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        if whole < 0 {
            out.insert(0, '-');
        }
        out
    } else if abs >= 100.0 {
        format!("{value:.0}")
    } else if abs >= 10.0 {
        format!("{value:.1}")
    } else {
        format!("{value:.2}")
    }
}

fn describe(target: Target, unit: &str) -> Option<String> {
    Some(match target {
        Target::None => return None,
        Target::AtLeast(t) => format!("≥ {} {unit}", number(t)),
        Target::AtMost(t) => format!("≤ {} {unit}", number(t)),
        Target::RatioAtLeast(t) => format!("≥ {}× baseline", number(t)),
    })
}

/// The figures as a Markdown table.
pub fn table(figures: &[Figure]) -> String {
    let mut out = String::from(
        "| scenario | figure | value | baseline (same run) | ratio | target | met |\n|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        let baseline = f
            .baseline
            .as_ref()
            .map(|(what, b)| format!("{} {} ({what})", number(*b), f.unit))
            .unwrap_or_else(|| "—".into());
        let ratio = f
            .ratio()
            .map(|r| format!("{}×", number(r)))
            .unwrap_or_else(|| "—".into());
        let target = [describe(f.target, f.unit), describe(f.also, f.unit)]
            .into_iter()
            .flatten()
            .collect::<Vec<_>>()
            .join(", ");
        let met = match f.met() {
            None => "",
            Some(true) => "yes",
            Some(false) => "**no**",
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} | {} | {} |",
            f.scenario,
            f.what,
            number(f.value),
            f.unit,
            baseline,
            ratio,
            if target.is_empty() {
                "—".into()
            } else {
                target
            },
            met
        );
    }
    out
}
